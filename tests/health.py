"""The servers a test starts: a free port for them, their health check, stopping them.

port = free_port()
wait_healthy(url, alive=lambda: proc.poll() is None, what="exporter")
stop(proc, timeout=10)
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

import httpx


def free_port() -> int:
    """A port of 127.0.0.1 nothing listens on now (the kernel's choice, bound and released)."""
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop(process: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM ``process`` if it still runs, and SIGKILL it if it outlives ``timeout``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_healthy(
    url: str,
    *,
    path: str = "/-/healthy",
    alive: Callable[[], bool] = lambda: True,
    what: str = "server",
    timeout: float = 60.0,
) -> None:
    """Until ``url + path`` answers 200; RuntimeError when ``alive()`` turns false or
    ``timeout`` (a hang guard) passes. One client for every try: each ``httpx.get``
    would build an SSL context, 70 ms of CPU."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as http:
        while True:
            try:
                if http.get(f"{url}{path}").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if not alive():
                raise RuntimeError(f"{what} exited before it was healthy")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} never became healthy")
            time.sleep(0.05)


def metrics_showing(url: str, sample: str, timeout: float = 30.0) -> str:
    """``url``'s ``/metrics`` once it shows ``sample``: the receiver's live counters are
    rendered again when 100 ms old, so a push is not in the very next scrape."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as http:
        while sample not in (exposition := http.get(f"{url}/metrics").text):
            assert time.monotonic() < deadline, f"/metrics never showed {sample}"
            time.sleep(0.05)
    return exposition
