"""The container image, checked without a Docker engine.

hadolint lints the Dockerfile; the image's install steps run in a fresh virtual environment;
the ENTRYPOINT runs with the image's CMD (config "mounted" from a temp dir) as an
unprivileged user against the simulator; the HEALTHCHECK command is run as Docker would.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import write_exporter_config
from promtool import require_tool

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
CONFIG_DIR = "/etc/msgsms-exporter"
PORT = 9170


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        result.append((keyword.upper(), arguments.strip()))
        pending = ""
    return result


def exec_form(keyword: str) -> list[str]:
    """The JSON argv of the last ENTRYPOINT / CMD / HEALTHCHECK CMD."""
    found = [arguments for key, arguments in instructions() if key == keyword]
    assert found, f"Dockerfile has no {keyword}"
    arguments = found[-1]
    if keyword == "HEALTHCHECK":
        arguments = arguments[arguments.index("CMD ") + 4 :]
    argv = json.loads(arguments)
    assert isinstance(argv, list)
    return [str(a) for a in argv]


def test_hadolint_reports_nothing() -> None:
    hadolint = require_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_image_is_multi_stage_on_a_pinned_slim_python() -> None:
    bases = [arguments.split()[0] for key, arguments in instructions() if key == "FROM"]
    assert len(bases) >= 2
    assert set(bases) == {"python:3.11.13-slim-bookworm"}


def test_image_runs_as_a_numeric_non_root_user() -> None:
    users = [arguments for key, arguments in instructions() if key == "USER"]
    uid = users[-1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0


def test_entrypoint_cmd_port_and_healthcheck() -> None:
    assert exec_form("ENTRYPOINT") == ["msgsms-exporter"]
    assert exec_form("CMD") == [f"--config.file={CONFIG_DIR}/config.yaml"]
    assert [a for k, a in instructions() if k == "EXPOSE"] == [str(PORT)]
    probe = exec_form("HEALTHCHECK")
    assert probe[0] == "python"
    assert f"http://127.0.0.1:{PORT}/-/healthy" in probe[-1]


def test_oci_labels_carry_the_package_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    text = " ".join(a for k, a in instructions() if k in {"LABEL", "ARG"})
    assert f"VERSION={version}" in text
    for label in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text


def build_context_sources() -> list[str]:
    """What the build stage's COPY lines take from the context."""
    copied: list[str] = []
    for key, arguments in instructions():
        if key == "COPY" and "--from" not in arguments:
            copied.extend(arguments.split()[:-1])
    return copied


def test_dockerignore_admits_exactly_what_the_build_copies() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", "the context starts empty and names what it lets in"
    admitted = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert set(build_context_sources()) == admitted


def test_install_steps_are_the_ones_this_file_performs() -> None:
    # image_install below repeats these steps; if the Dockerfile changes them, change both.
    runs = " ".join(a for k, a in instructions() if k == "RUN")
    assert "pip wheel --no-cache-dir --wheel-dir /wheels ." in runs
    assert "python -m venv /opt/msgsms-exporter" in runs
    assert (
        "/opt/msgsms-exporter/bin/pip install --no-cache-dir --no-index --find-links=/wheels "
        "msgsms-exporter"
    ) in " ".join(runs.split())
    env = " ".join(a for k, a in instructions() if k == "ENV")
    for setting in ("PYTHONDONTWRITEBYTECODE=1", 'PATH="/opt/msgsms-exporter/bin:${PATH}"'):
        assert setting in env


# --- the image's install steps, entrypoint and health check --------------------------------


@dataclass(frozen=True)
class Install:
    """A virtual environment laid out like the image's /opt/msgsms-exporter."""

    root: Path
    venv: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def tmp(self) -> Path:
        """Where the sandbox mounts the only writable filesystem (the image's /tmp)."""
        return self.root / "tmp"


@pytest.fixture(scope="module")
def image_install() -> Iterator[Install]:
    """Dockerfile's steps: build the wheel, then install it into a fresh venv from no index."""
    root = Path(tempfile.mkdtemp(prefix="msgsms-image-"))
    try:
        # The build stage: only what its COPY lines bring in, then `pip wheel` on that.
        context = root / "src"
        for source in build_context_sources():
            if (REPO / source).is_dir():
                shutil.copytree(
                    REPO / source,
                    context / source,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                )
            else:
                context.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / source, context / source)
        wheels = root / "wheels"
        # --no-deps: the dependencies' wheels would be identical to what this interpreter
        # already has, so the venv below sees them through --system-site-packages instead.
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-cache-dir"),
                *("--no-deps", "--wheel-dir", str(wheels), str(context)),
            ],
            check=True,
            timeout=300,
        )
        venv = root / "opt" / "msgsms-exporter"
        subprocess.run(
            [sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
            check=True,
            timeout=120,
        )
        subprocess.run(
            [
                *(str(venv / "bin" / "pip"), "install", "--quiet", "--no-cache-dir"),
                *("--no-index", f"--find-links={wheels}", "msgsms-exporter"),
                # The checkout's own (editable) install is visible through the system
                # site-packages; without these pip would call it "already satisfied".
                *("--ignore-installed", "--no-deps"),
            ],
            check=True,
            timeout=300,
        )
        install = Install(root=root, venv=venv)
        install.tmp.mkdir()
        yield install
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_install_runs_the_wheel_not_the_checkout(image_install: Install) -> None:
    where = subprocess.run(
        [str(image_install.bin / "python"), "-c", "import exporter; print(exporter.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    ).stdout.strip()
    assert Path(where).is_relative_to(image_install.venv)


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As the exporter binds: connections it closed linger in TIME-WAIT, which is fine.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@functools.cache
def container_sandbox(writable_tmp: str) -> tuple[str, ...]:
    """A command prefix that runs like the locked-down container, when the test runs as root.

    A private mount namespace in which the whole root filesystem is read-only except a
    fresh tmpfs at ``writable_tmp`` (the image's /tmp emptyDir), and no capabilities at all
    (Kubernetes' `capabilities: drop: [ALL]`, `allowPrivilegeEscalation: false`). The network
    namespace is shared, so the probes reach the process on 127.0.0.1 as Docker's would.
    """
    script = (
        "mount --bind / / && mount -o remount,bind,ro / && "
        f"mount -t tmpfs -o size=16m tmpfs {writable_tmp} && "
        'exec setpriv --bounding-set=-all --inh-caps=-all --no-new-privs -- "$@"'
    )
    prefix = ("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh")
    problem = ""
    if os.geteuid() != 0:
        problem = "not root: cannot make a read-only root filesystem for the entrypoint"
    elif shutil.which("unshare") is None or shutil.which("setpriv") is None:
        problem = "unshare/setpriv (util-linux) are not installed"
    else:
        probe = subprocess.run(
            [*prefix, "sh", "-c", "! touch /.msgsms-ro-probe 2>/dev/null"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode != 0:
            problem = f"cannot sandbox the entrypoint: {probe.stderr.strip()}"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    return prefix


def image_env(install: Install, **extra: str) -> dict[str, str]:
    """The image's ENV (and nothing from the developer's shell but the credentials)."""
    return {
        "PATH": f"{install.bin}:/usr/local/bin:/usr/bin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HOME": "/nonexistent",
        "LANG": "C.UTF-8",
        "TMPDIR": str(install.tmp),
        **extra,
    }


def healthcheck(install: Install) -> int:
    """Run the HEALTHCHECK command as Docker does inside the container; its exit code."""
    probe = exec_form("HEALTHCHECK")
    return subprocess.run(
        [*container_sandbox(str(install.tmp)), *probe],
        env=image_env(install),
        capture_output=True,
        timeout=10,
        check=False,
        cwd=install.tmp,
    ).returncode


def wait_healthy(install: Install, process: subprocess.Popen[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the entrypoint exited:\n{process.communicate()[1]}"
        if healthcheck(install) == 0:
            return
        time.sleep(0.5)
    pytest.fail(f"HEALTHCHECK did not pass within {seconds} s")


def fetch(path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def wait_for(path: str, status: int, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        code, body = fetch(path)
        if code == status:
            return body
        time.sleep(0.5)
    pytest.fail(f"{path} did not answer {status} within {seconds} s")


@contextlib.contextmanager
def entrypoint(
    install: Install, args: list[str], env: dict[str, str]
) -> Iterator[subprocess.Popen[str]]:
    assert port_is_free(PORT), f"port {PORT} is busy: the image's HEALTHCHECK probes it"
    command = [*container_sandbox(str(install.tmp)), *exec_form("ENTRYPOINT"), *args]
    process = subprocess.Popen(
        command, env=env, cwd=install.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


@pytest.fixture(scope="module")
def simulator() -> Iterator[str]:
    from tests.simulator_process import simulator_process

    with simulator_process("--history", "1h", "--scale", "0.1") as url:
        yield url


def write_mounted_config(install: Install, simulator_url: str) -> Path:
    """The config file where a volume mount would put it, under the install's root."""
    directory = install.root / CONFIG_DIR.lstrip("/")
    directory.mkdir(parents=True, exist_ok=True)
    write_exporter_config(directory / "config.yaml", simulator_url)
    return directory


def test_entrypoint_with_default_args_serves_the_simulator(
    image_install: Install, simulator: str
) -> None:
    mounted = write_mounted_config(image_install, simulator)
    args = [arg.replace(CONFIG_DIR, str(mounted)) for arg in exec_form("CMD")]
    env = image_env(
        image_install,
        MSGSMS_ACCESS_KEY=os.environ.get("MSGSMS_SIMULATOR_AK", "demo-access-key"),
        MSGSMS_SECRET_KEY=os.environ.get("MSGSMS_SIMULATOR_SK", "demo-secret-key"),
    )
    assert healthcheck(image_install) != 0, "the probe passes with nothing listening"
    with entrypoint(image_install, args, env) as process:
        wait_healthy(image_install, process, seconds=30)
        wait_for("/-/ready", 200, seconds=60)
        status, metrics = fetch("/metrics")
        assert status == 200
        assert 'msgsms_up{account="default"} 1.0' in metrics
        assert "msgsms_window_messages{" in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, "SIGTERM must shut the exporter down cleanly"


def test_demo_runs_in_the_image(image_install: Install) -> None:
    with entrypoint(image_install, ["--demo"], image_env(image_install)) as process:
        wait_healthy(image_install, process, seconds=60)
        metrics = wait_for("/-/ready", 200, seconds=90) and fetch("/metrics")[1]
        assert "msgsms_window_messages{" in metrics
