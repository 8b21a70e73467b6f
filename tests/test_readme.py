"""Every shell block of the README, run as written, so the README cannot drift from the code.

Each ```sh block runs with bash (``-euo pipefail``) in a copy of the checkout, inside a
network namespace of its own: port 9170 is free there whatever listens on this machine,
and nothing reaches other hosts (pip installs from the wheel cache of ``tests/wheels.py``).
The test environment's ``bin`` comes first on PATH, as after the README's
``. .venv/bin/activate``. An HTML comment right above the fence says how a block runs:

    (no mark)                                 must exit 0
    <!-- readme-test: serve -->               runs until http://127.0.0.1:9170/-/ready
                                              answers 200, then gets SIGTERM
    <!-- readme-test: serve path=/-/healthy match='REGEX' -->
                                              ... until that path answers 200 (and its body
                                              matches REGEX)
    <!-- readme-test: serve demo ... -->      ... while `msgsms-exporter --demo` serves
    <!-- readme-test: skip REASON -->         cannot run here (docker, kubectl) or runs in
                                              another test: only its syntax is checked here;
                                              REASON names the tests/test_*.py that checks it

A new block that cannot run here fails this test until it is marked ``skip``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from netns import fetch, network_namespace
from wheels import build_wheels, wheel_cache

from exporter.cli import DEFAULT_LISTEN

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MARK = re.compile(r"<!--\s*readme-test:\s*(?P<words>.*?)\s*-->")
PORT = int(DEFAULT_LISTEN.rpartition(":")[2])
"""The exporter's default port, which the README and the image use: inside the test's own
network namespace, never the host's."""
RUN_TIMEOUT = 900.0
SERVE_TIMEOUT = 240.0


@dataclass(frozen=True)
class Block:
    """One ```sh block: where it is, its text and how its mark says to run it."""

    line: int
    script: str
    mode: str = "run"
    reason: str = ""
    demo: bool = False
    path: str = "/-/ready"
    match: str = ""

    @property
    def id(self) -> str:
        first = self.script.strip().splitlines()[0]
        return f"L{self.line}-{first[:40]}"


def parse_mark(words: str, line: int) -> dict[str, object]:
    """The mark's mode and options; an unknown one is an error that names the line."""
    mode, _, rest = words.partition(" ")
    if mode == "skip":
        assert rest, f"README.md:{line}: say why the block is skipped and what checks it"
        return {"mode": "skip", "reason": rest}
    assert mode in ("run", "serve"), f"README.md:{line}: unknown readme-test mode {mode!r}"
    options: dict[str, object] = {"mode": mode}
    for word in shlex.split(rest):
        key, sep, value = word.partition("=")
        if (key, sep) == ("demo", ""):
            options["demo"] = True
        elif key in ("path", "match") and sep:
            options[key] = value
        else:
            raise AssertionError(f"README.md:{line}: unknown readme-test option {word!r}")
    return options


def readme_blocks(text: str) -> list[Block]:
    """The README's ```sh blocks with their marks (the comment on the closest line above)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        if lines[index].strip() not in ("```sh", "```bash", "```shell"):
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
        above = index - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        mark = MARK.fullmatch(lines[above].strip()) if above >= 0 else None
        options = parse_mark(mark["words"], above + 1) if mark else {}
        script = "\n".join(lines[index + 1 : end]) + "\n"
        blocks.append(Block(line=index + 1, script=script, **options))  # type: ignore[arg-type]
        index = end + 1
    return blocks


BLOCKS = readme_blocks(README.read_text())


def test_the_readme_parser_reads_marks_options_and_unmarked_blocks() -> None:
    text = (
        "intro\n\n```sh\necho one\n```\n\n<!-- readme-test: skip docker: tests/test_x.py -->\n"
        "```sh\ndocker build .\n```\n<!-- readme-test: serve demo path=/metrics match='a b' -->\n"
        "\n```sh\nmsgsms-simulator\n```\n```yaml\nnot: shell\n```\n"
    )
    assert readme_blocks(text) == [
        Block(line=3, script="echo one\n"),
        Block(line=8, script="docker build .\n", mode="skip", reason="docker: tests/test_x.py"),
        Block(
            line=13,
            script="msgsms-simulator\n",
            mode="serve",
            demo=True,
            path="/metrics",
            match="a b",
        ),
    ]
    with pytest.raises(AssertionError, match=r"README\.md:1: unknown readme-test mode 'later'"):
        readme_blocks("<!-- readme-test: later -->\n```sh\nls\n```\n")


def test_the_readme_runs_its_quick_start_and_skips_only_what_cannot_run_here() -> None:
    quick_start = BLOCKS[0]
    assert quick_start.mode == "serve"
    assert "python3 -m venv .venv" in quick_start.script
    for block in BLOCKS:
        if block.mode == "skip" and "the suite itself" not in block.reason:
            checked_by = re.findall(r"tests/test_\w+\.py", block.reason)
            assert checked_by, f"README.md:{block.line}: name the test that checks this block"
            assert all((REPO / name).is_file() for name in checked_by), block.reason


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout as a fresh clone has it (tracked and new files, no ignored ones)."""
    copy = tmp_path_factory.mktemp("readme") / "msgsms-exporter"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source = REPO / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    # `pip install .` in the namespace has no index: fill the wheel cache it installs from.
    build_wheels(copy, tmp_path_factory.mktemp("wheels"))
    return copy


def block_env() -> dict[str, str]:
    """A shell with this test environment activated, pip offline on the wheel cache."""
    venv = Path(sys.executable).parent
    keep = {k: os.environ[k] for k in ("HOME", "LANG", "TERM", "CI") if k in os.environ}
    return {
        **keep,
        "PATH": f"{venv}:/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
        "VIRTUAL_ENV": str(venv.parent),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheel_cache()),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PYTHONUNBUFFERED": "1",
    }


@contextmanager
def background(
    inside: tuple[str, ...], script: str, cwd: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `script` in its own process group; SIGTERM the group afterwards."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*inside, "bash", "-euo", "pipefail", "-c", script],
            cwd=cwd,
            env=block_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def wait_until_served(
    inside: tuple[str, ...],
    process: subprocess.Popen[bytes],
    log: Path,
    path: str,
    match: str = "",
) -> None:
    """Until :9170`path` answers 200 (with a body matching `match`); fails if `process` ends."""
    deadline = time.monotonic() + SERVE_TIMEOUT
    while True:
        if process.poll() is not None:
            pytest.fail(f"exited {process.returncode} before serving:\n{log.read_text()[-3000:]}")
        status, body = fetch(inside, f"http://127.0.0.1:{PORT}{path}")
        if status == 200 and (not match or re.search(match, body)):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{path} never answered 200{' matching ' + match if match else ''}")
        time.sleep(1)


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_readme_block_runs_as_written(block: Block, checkout: Path, tmp_path: Path) -> None:
    if block.mode == "skip":
        # What can be checked here: the block parses. Its reason names the test that
        # checks what it does (the Dockerfile, the compose file, the manifests).
        syntax = subprocess.run(
            ["bash", "-n", "-c", block.script], capture_output=True, text=True, check=False
        )
        assert syntax.returncode == 0, f"README.md:{block.line}: {syntax.stderr}"
        return
    with network_namespace() as inside:
        if block.mode == "run":
            result = subprocess.run(
                [*inside, "bash", "-euo", "pipefail", "-c", block.script],
                cwd=checkout,
                env=block_env(),
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
                check=False,
            )
            assert result.returncode == 0, (
                f"README.md:{block.line} failed ({result.returncode}); if it cannot run here, "
                f"mark it <!-- readme-test: skip REASON -->\n{result.stdout}{result.stderr}"
            )
            return
        demo_log, block_log = tmp_path / "demo.log", tmp_path / "block.log"
        with (
            demo_serving(block.demo, inside, checkout, demo_log),
            background(inside, block.script, checkout, block_log) as process,
        ):
            wait_until_served(inside, process, block_log, block.path, block.match)


@contextmanager
def demo_serving(demo: bool, inside: tuple[str, ...], checkout: Path, log: Path) -> Iterator[None]:
    """`msgsms-exporter --demo` serving on :9170 in the namespace, when the mark asks for it."""
    if not demo:
        yield
        return
    with background(inside, "exec msgsms-exporter --demo", checkout, log) as process:
        wait_until_served(inside, process, log, "/-/ready")
        yield


def test_the_image_the_readme_builds_is_the_one_kubernetes_deploys() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    docker = "\n".join(block.script for block in BLOCKS if "docker build" in block.script)
    docker = docker.replace("\\\n", " ")  # continuation lines joined
    built = re.findall(r"docker build -t (\S+) \.", docker)
    assert built == [f"msgsms-exporter:{version}"]
    runs = re.findall(r"^docker run .*?\s(msgsms-exporter(?::\S+)?)(?:\s|$)", docker, re.M)
    assert runs and set(runs) == set(built)
    for variant in ("", "sharded/", "push/", "push-sqlite/"):
        kustomization = yaml.safe_load(
            (REPO / f"deploy/kubernetes/{variant}kustomization.yaml").read_text()
        )
        (image,) = kustomization["images"]
        assert f"{image['newName']}:{image['newTag']}" == built[0], variant
