"""Wait for a server a test started to answer its health check.

wait_healthy(url, alive=lambda: proc.poll() is None, what="exporter")
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx


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
