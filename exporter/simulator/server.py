"""HTTP on a socket: a request read off the wire, the app's ``Response`` written back.

Bodies are framed by ``Content-Length`` only, at most ``MAX_BODY_BYTES``. A framing error
(a bad ``Content-Length``, a request line over 64 KiB) is answered here with a gateway
error body (``APIG.0201``) and never reaches the app. A response marked ``reset`` (the
connection-reset fault) closes the socket with a TCP RST instead of an answer.
"""

from __future__ import annotations

import email.utils
import json
import socket
import struct
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import structlog

from exporter.simulator.clock import Clock

MAX_BODY_BYTES = 1 << 20
"""Bodies are small control documents (and signed requests): a larger one is 413."""
log = structlog.get_logger("msgsms-simulator")


@dataclass(slots=True)
class Response:
    """An HTTP answer."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False
    """Close the connection without answering (the connection-reset fault)."""
    gateway: bool = False
    """An ``APIG.*`` refusal: its body also names the request, as Huawei's gateway does."""
    clock_offset: float = 0.0
    """How far the answering gateway's clock is off the simulated one (the clock-skew
    fault): its ``Date`` shows it."""


def json_response(status: int, obj: Any, **headers: str) -> Response:
    """``obj`` as a JSON answer."""
    return Response(status, json.dumps(obj).encode(), headers=dict(headers))


def error_response(status: int, code: str, message: str, **headers: str) -> Response:
    """Huawei's error body: ``{"error_code": ..., "error_msg": ...}``."""
    response = json_response(status, {"error_code": code, "error_msg": message}, **headers)
    response.gateway = code.startswith("APIG.")
    return response


@dataclass(slots=True)
class Request:
    """What the handler read off the wire."""

    method: str
    raw_path: str
    headers: Mapping[str, str]
    body: bytes


class App(Protocol):
    """What the server serves: one answer per request, dated by its clock."""

    clock: Clock

    def handle(self, request: Request) -> Response:
        """Route one request and count it."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without TCP_NODELAY, Nagle and the client's delayed ACK hold each response ~40 ms.
    disable_nagle_algorithm = True
    server: SimulatorServer
    _clock_offset = 0.0  # this request's gateway clock, off the simulated one

    def _read_body(self) -> bytes | None:
        """The request's body, or None once a framing error has been answered."""
        if "Transfer-Encoding" in self.headers:
            self.send_error(411, "Transfer-Encoding: not supported; send Content-Length")
            return None
        lengths = self.headers.get_all("Content-Length") or []
        if len(set(lengths)) > 1:
            self.send_error(400, "Content-Length: give it once")
            return None
        if not lengths:
            return b""
        # ASCII digits only: int() would take "1_0", "-1" (read to EOF) and "٣".
        text = lengths[0].strip()
        if not (text.isascii() and text.isdigit()):
            self.send_error(400, "Content-Length: expected a number of bytes")
            return None
        if len(text) > 9 or int(text) > MAX_BODY_BYTES:
            self.send_error(413, f"Content-Length: at most {MAX_BODY_BYTES} bytes")
            return None
        return self.rfile.read(int(text))

    def _serve(self) -> None:
        body = self._read_body()
        if body is None:
            return
        request = Request(self.command, self.path, dict(self.headers.items()), body)
        response = self.server.app.handle(request)
        if response.reset:
            # SO_LINGER 0: closing sends a TCP RST instead of a FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        self._clock_offset = response.clock_offset
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Framing errors (a request line over 64 KiB, a bad header) as a gateway error body."""
        request_id = uuid.uuid4().hex
        body = json.dumps(
            {
                "error_code": "APIG.0201",
                "error_msg": message or self.responses[code][0],
                "request_id": request_id,
            }
        ).encode()
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Request-Id", request_id)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are logged by the app through structlog."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        """Every answer's ``Date``, as Huawei's gateway sends it: from the simulated clock
        (a manual one in tests), which also stamps the send times."""
        if timestamp is None:
            timestamp = self.server.app.clock.now() + self._clock_offset
        return email.utils.formatdate(timestamp, usegmt=True)


class SimulatorServer(ThreadingHTTPServer):
    """A threading HTTP server bound to one app (a :class:`SimulatorApp`)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client gone mid-answer is a log line, not a traceback on stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.info("connection lost", error=type(error).__name__)
        else:
            log.exception("connection failed")
