"""Run ``msgsms-simulator`` as a real subprocess on loopback, for integration tests.

    with simulator_process("--clock", "manual", "--start-time", "2026-11-26T10:00:00Z") as url:
        httpx.get(f"{url}/-/healthy")

The child listens on ``127.0.0.1:0``; its port is read from the one line it prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from health import stop, wait_healthy

READY_PREFIX = "msgsms-simulator listening on "


@contextmanager
def simulator_process(
    *args: str,
    env: dict[str, str] | None = None,
    startup_timeout: float = 60.0,
) -> Iterator[str]:
    """Start the simulator with ``args``, wait until healthy, yield its base URL, stop it."""
    command = [
        sys.executable,
        "-m",
        "exporter.simulator.cli",
        "--web.listen-address",
        "127.0.0.1:0",
        "--log.level",
        "warning",
        *args,
    ]
    child_env = {**os.environ, **(env or {})}
    # stderr goes to a file: a pipe nobody reads would block a chatty child.
    errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=errors, text=True, env=child_env
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith(READY_PREFIX):
            proc.kill()
            proc.wait(timeout=10)
            errors.seek(0)
            raise RuntimeError(f"simulator did not start: {line!r} {errors.read()[-2000:]}")
        url = line[len(READY_PREFIX) :].strip()
        wait_healthy(url, what="simulator", timeout=startup_timeout)
        yield url
    finally:
        stop(proc, timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        errors.close()
