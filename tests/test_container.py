"""The container image, checked without a Docker engine.

hadolint lints the Dockerfile; the image's install steps (wheels, then an install from them
with no index) run into a fresh virtual environment that sees none of this interpreter's
packages; the ENTRYPOINT runs with the image's CMD (config "mounted" from a temp dir) as an
unprivileged user against the simulator, in a network namespace of its own (so port 9170 is
the container's, whatever listens on the machine); the HEALTHCHECK command runs as Docker's.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import write_exporter_config
from netns import fetch, network_namespace
from promtool import require_tool
from simulator_process import READY_PREFIX
from wheels import build_wheels

from exporter.cli import DEFAULT_LISTEN

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
CONFIG_DIR = "/etc/msgsms-exporter"
PORT = int(DEFAULT_LISTEN.rpartition(":")[2])
"""The exporter's default port, which the README and the image use: inside the test's own
network namespace, never the host's."""


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
    assert 'pip wheel --no-cache-dir --wheel-dir /wheels ".[postgres]"' in runs
    assert "python -m venv /opt/msgsms-exporter" in runs
    assert (
        "/opt/msgsms-exporter/bin/pip install --no-cache-dir --no-index --find-links=/wheels "
        '"msgsms-exporter[postgres]"'
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
    """Dockerfile's steps: build the wheels, then install them into a fresh venv from no index."""
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
        build_wheels(context, wheels)
        # The runtime stage: a venv that sees nothing of this interpreter's packages, and
        # pip's exact command from the Dockerfile (no index, those wheels only).
        venv = root / "opt" / "msgsms-exporter"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run(
            [
                *(str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"),
                *("--no-cache-dir", "--no-index", f"--find-links={wheels}", "msgsms-exporter"),
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


@pytest.fixture(scope="module")
def network() -> Iterator[tuple[str, ...]]:
    """The container's own network namespace: the probes, the simulator and the entrypoint
    all run in it, so 9170 is the container's whatever listens on this machine."""
    with network_namespace() as inside:
        yield inside


@functools.cache
def container_sandbox(writable_tmp: str) -> tuple[str, ...]:
    """A command prefix that runs like the locked-down container, when the test runs as root.

    A private mount namespace in which the whole root filesystem is read-only except a
    fresh tmpfs at ``writable_tmp`` (the image's /tmp emptyDir), and no capabilities at all
    (Kubernetes' `capabilities: drop: [ALL]`, `allowPrivilegeEscalation: false`). Run it
    inside `network` so the probes reach the process on 127.0.0.1 as Docker's would.
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


@dataclass(frozen=True)
class Container:
    """The installed image running in its own network namespace."""

    install: Install
    network: tuple[str, ...]

    def healthcheck(self) -> int:
        """Run the HEALTHCHECK command as Docker does inside the container; its exit code."""
        return subprocess.run(
            [*self.network, *container_sandbox(str(self.install.tmp)), *exec_form("HEALTHCHECK")],
            env=image_env(self.install),
            capture_output=True,
            timeout=10,
            check=False,
            cwd=self.install.tmp,
        ).returncode

    def wait_healthy(self, process: subprocess.Popen[str], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert process.poll() is None, f"the entrypoint exited:\n{process.communicate()[1]}"
            if self.healthcheck() == 0:
                return
            time.sleep(0.5)
        pytest.fail(f"HEALTHCHECK did not pass within {seconds} s")

    def fetch(self, path: str) -> tuple[int, str]:
        """GET `path` from the container's port, from inside its network namespace."""
        return fetch(self.network, f"http://127.0.0.1:{PORT}{path}")

    def wait_for(self, path: str, status: int, seconds: float) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            code, body = self.fetch(path)
            if code == status:
                return body
            time.sleep(0.5)
        pytest.fail(f"{path} did not answer {status} within {seconds} s")

    @contextlib.contextmanager
    def entrypoint(self, args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
        sandbox = container_sandbox(str(self.install.tmp))
        command = [*self.network, *sandbox, *exec_form("ENTRYPOINT"), *args]
        with stopping(
            subprocess.Popen(
                command,
                env=env,
                cwd=self.install.tmp,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        ) as process:
            yield process


@contextlib.contextmanager
def stopping(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """Yield `process`; SIGTERM it afterwards, SIGKILL if it lingers."""
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
def container(image_install: Install, network: tuple[str, ...]) -> Container:
    return Container(install=image_install, network=network)


@pytest.fixture(scope="module")
def simulator(network: tuple[str, ...]) -> Iterator[str]:
    """The simulator on a free port inside the container's network namespace; its URL."""
    command = [
        *network,
        *(sys.executable, "-m", "exporter.simulator.cli", "--web.listen-address", "127.0.0.1:0"),
        *("--log.level", "warning", "--history", "1h", "--scale", "0.1"),
    ]
    with stopping(
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO
        )
    ) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(READY_PREFIX), f"the simulator did not start: {line!r}"
        yield line[len(READY_PREFIX) :].strip()


def write_mounted_config(install: Install, simulator_url: str) -> Path:
    """The config file where a volume mount would put it, under the install's root."""
    directory = install.root / CONFIG_DIR.lstrip("/")
    directory.mkdir(parents=True, exist_ok=True)
    write_exporter_config(directory / "config.yaml", simulator_url)
    return directory


def test_entrypoint_with_default_args_serves_the_simulator(
    container: Container, simulator: str
) -> None:
    mounted = write_mounted_config(container.install, simulator)
    args = [arg.replace(CONFIG_DIR, str(mounted)) for arg in exec_form("CMD")]
    env = image_env(
        container.install,
        MSGSMS_ACCESS_KEY=os.environ.get("MSGSMS_SIMULATOR_AK", "demo-access-key"),
        MSGSMS_SECRET_KEY=os.environ.get("MSGSMS_SIMULATOR_SK", "demo-secret-key"),
    )
    assert container.healthcheck() != 0, "the probe passes with nothing listening"
    with container.entrypoint(args, env) as process:
        container.wait_healthy(process, seconds=30)
        container.wait_for("/-/ready", 200, seconds=60)
        status, metrics = container.fetch("/metrics")
        assert status == 200
        assert 'msgsms_up{account="default"} 1.0' in metrics
        assert "msgsms_window_messages{" in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, "SIGTERM must shut the exporter down cleanly"


def test_demo_runs_in_the_image(container: Container) -> None:
    with container.entrypoint(["--demo"], image_env(container.install)) as process:
        container.wait_healthy(process, seconds=60)
        container.wait_for("/-/ready", 200, seconds=90)
        assert "msgsms_window_messages{" in container.fetch("/metrics")[1]
