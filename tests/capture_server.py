"""A tiny loopback HTTP server that records every POST and answers 200 with an empty
body, as Huawei expects of a status-report receiver.

    with capturing_server() as (url, captured):
        ...  # something POSTs to url
        with captured.arrived:
            captured.arrived.wait_for(lambda: len(captured.posts) == 2, timeout=60)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Captured:
    """The POSTs received, as (path, headers, body), in arrival order."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        self.arrived = threading.Condition()
        """Notified at each POST; hold it to read ``posts`` while they arrive."""


@contextmanager
def capturing_server() -> Iterator[tuple[str, Captured]]:
    """The server's base URL and what it captures, while the block runs."""
    captured = Captured()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with captured.arrived:
                captured.posts.append((self.path, dict(self.headers.items()), body))
                captured.arrived.notify_all()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", captured
    finally:
        server.shutdown()
        server.server_close()
