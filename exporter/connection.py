"""One HTTP/1.1 connection on the server's event loop: strict framing, bounded, answered.

Requests are parsed by llhttp, Node.js's parser (through ``httptools``), which rejects
what request smuggling relies on: ``Content-Length`` with ``Transfer-Encoding``, a
malformed or repeated ``Content-Length``, ``chunked`` that is not the last coding, bare
LF line ends, folded headers. Chunked bodies are decoded. Every refusal has a status
and a bounded reason (:data:`REFUSALS`) that the server counts.

A connection answers one request at a time, in order (pipelined requests wait, and
reading pauses meanwhile). Its owner (the server) runs the routes and enforces the
deadlines and the connection cap, told of each phase change.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from enum import Enum
from http import HTTPStatus
from typing import Protocol, cast
from urllib.parse import parse_qs, urlsplit

import httptools

from exporter.errors import RequestRefused
from exporter.routing import Request, Response

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
MAX_BODY_BYTES = 1024 * 1024
LINGER_SECONDS = 1.0
LINGER_BYTES = 8 * MAX_BODY_BYTES

REFUSALS: dict[str, int] = {
    "bad_request": 400,  # not HTTP/1.x: a bad request line, header name or value, chunk
    "bad_content_length": 400,  # not digits only (``1_0``, ``-1``, ``+1``), or repeated
    "length_and_chunked": 400,  # both Content-Length and Transfer-Encoding
    "bad_transfer_encoding": 400,  # chunked is not the last coding, or repeated
    "unsupported_transfer_coding": 501,  # a coding other than chunked (gzip, chunked)
    "unsupported_version": 505,  # HTTP/2.0 and others on this HTTP/1.1 port
    "head_too_large": 431,  # more than 64 KiB or 100 header lines
    "body_too_large": 413,  # more than 1 MiB, announced or received (chunked)
    "timeout": 408,  # the request head or body missed its deadline
    "plain_http": 400,  # plain HTTP sent to the port while it speaks TLS
    "incomplete": 400,  # the client ended its side before the head or body was whole
    "conflicting_header": 400,  # Host, Content-Type or a signing header twice, two values
}
"""Refusals of the HTTP layer itself, by reason, with their status."""


_SINGLE_VALUED = frozenset(
    {
        b"host",
        b"content-type",
        b"content-encoding",
        b"authorization",
        b"x-sdk-date",
        b"x-sdk-content-sha256",
    }
)
"""Headers read as one value: given twice with different values, which one the client
meant (or a proxy in front of the server acted on) cannot be known."""


def _conflicting(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The name of a single-valued header given twice with different values."""
    seen: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in _SINGLE_VALUED and seen.setdefault(name, value.strip()) != value.strip():
            return name.decode("latin-1")
    return None


_SPENT_PARSER = httptools.HttpRequestParser(object())
"""Stands in for a closed connection's parser, which it never feeds."""


class Phase(Enum):
    """Where a connection is: the server's deadlines and eviction depend on it."""

    HEAD = "head"  # waiting for a request head (from accept, or after a first byte)
    BODY = "body"  # head received, body arriving
    BUSY = "busy"  # a route is answering
    IDLE = "idle"  # kept alive between requests
    CLOSED = "closed"


class Refusal(RequestRefused):
    """A refusal of this layer, its status looked up by reason in ``REFUSALS``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message, REFUSALS[reason])


class Owner(Protocol):
    """What a connection needs of its server."""

    draining: bool
    date: str

    def moved(self, connection: Connection) -> None:
        """The connection changed phase (or started a new request)."""

    def handle(self, connection: Connection, request: Request) -> None:
        """Answer ``request`` later with ``connection.respond``."""

    def refused(self, reason: str) -> None:
        """Count a refusal."""

    def lost(self, connection: Connection) -> None:
        """The connection is closed."""


def _classify(error: Exception) -> Refusal:
    """The refusal for an llhttp error (its messages are stable, and tested)."""
    message = str(error)
    if "PRI" in message:  # HTTP/2's connection preface (prior knowledge, no upgrade)
        return Refusal("unsupported_version", "HTTP/2 is not served: use HTTP/1.1")
    if "Invalid HTTP version" in message:  # HTTP/1.2, HTTP/3.0: well formed, not served
        return Refusal("unsupported_version", "only HTTP/1.0 and HTTP/1.1 are served")
    if "Content-Length" in message and "Transfer-Encoding" in message:
        return Refusal("length_and_chunked", "Content-Length with Transfer-Encoding")
    if "Content-Length" in message:
        return Refusal("bad_content_length", "bad Content-Length")
    if "Transfer-Encoding" in message:
        return Refusal("bad_transfer_encoding", "chunked must be the last transfer coding")
    if "whitespace after header value" in message:  # RFC 9112 5.2: refuse and say why
        return Refusal(
            "bad_request",
            "malformed HTTP/1.1 request: a header folded onto an indented next line"
            " (obsolete line folding) is not accepted; send each header on one line",
        )
    if "expected CR" in message or "expected LF" in message or "Expected CRLF" in message:
        return Refusal(
            "bad_request", "malformed HTTP/1.1 request: lines must end with CRLF, not a bare LF"
        )
    return Refusal("bad_request", "malformed HTTP/1.1 request")


def _split_target(target: str) -> tuple[str, str]:
    """A request target's path and query. The usual origin form (``/a?b``) is split as is:
    ``urlsplit`` would read ``//push/status-report`` as host ``push``, path ``/status-report``.
    The absolute form (``http://host/a?b``, as sent to a proxy) is a URL."""
    if target.startswith("/"):
        path, _, query = target.partition("#")[0].partition("?")
        return path, query
    parts = urlsplit(target)
    return parts.path or "/", parts.query


class Connection(asyncio.Protocol):
    """One client connection: parse, queue, answer in order."""

    def __init__(self, owner: Owner, now: float) -> None:
        self.owner = owner
        self.phase = Phase.HEAD
        self.since = now
        """When the current phase's wait began: accept, a request's first byte, idle."""
        self.started = False
        """True once a byte of the current request has arrived (it is in flight)."""
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        # A request with whether to keep the connection after it, and whether it is
        # HTTP/1.0 (whose client keeps it only when the answer says keep-alive).
        self._queue: deque[tuple[Request, bool, bool] | Refusal] = deque()
        self._head_bytes = 0  # bytes received while the head is incomplete
        self._head_size = 0  # bytes of the head parsed so far
        self._head_done = False
        self._method = ""
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._broken = False  # refused: whatever comes next is discarded
        self._discarded = 0
        self._write_paused = False
        self._paused = False  # reading, while pipelined requests wait
        self._keep_alive = True
        self._http_1_0 = False
        self._eof = False  # the client half-closed: answer what it sent, then close
        self._request_method = ""
        self.socket: socket.socket | None = None
        """The accepted socket, until the transport takes it over."""

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Reading starts."""
        self.transport = cast(asyncio.Transport, transport)
        self.socket = None

    def connection_lost(self, exc: Exception | None) -> None:
        """Gone: the owner forgets it."""
        self.phase = Phase.CLOSED
        # The parser calls back into this object: without this reference cycle the
        # connection is freed now, not by a garbage-collector pass (which under a flood
        # of connections grew to seconds, stopping the loop).
        self._parser = _SPENT_PARSER
        self._queue.clear()
        self.owner.lost(self)

    def eof_received(self) -> bool:
        """The client sends no more (a half-close, as ``nc -N`` or a proxy does): keep
        the socket open for the answers to what it sent, then close; else close now."""
        self._eof = True
        if self.transport is not None and self.transport.get_extra_info("ssl_object"):
            return False  # TLS: a close_notify ends the connection whatever one answers
        if self.phase is Phase.BUSY or self._queue:
            return True
        if self.started and not self._broken and self.phase in (Phase.HEAD, Phase.BODY):
            # Cut short (a Content-Length larger than the body): say so, counted.
            self.refuse(
                Refusal("incomplete", "the request ended before it was complete"), linger=False
            )
        return False

    def pause_writing(self) -> None:
        """The client reads slowly: answer nothing more until it catches up."""
        self._write_paused = True

    def resume_writing(self) -> None:
        """Caught up: answer the next queued request, if any."""
        self._write_paused = False
        self._next()

    def data_received(self, data: bytes) -> None:
        """Feed the parser; queue what completes; answer in order."""
        if self._broken or self.phase is Phase.CLOSED:
            self._discarded += len(data)
            if self._discarded > LINGER_BYTES:
                self.abort()
            return
        if self.phase is Phase.IDLE:
            self.phase, self.since = Phase.HEAD, self.owner_clock()
            self.owner.moved(self)
        self.started = True
        if not self._head_done:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
            if not self._head_done and self._head_bytes > MAX_HEAD_BYTES:
                raise Refusal("head_too_large", f"request head over {MAX_HEAD_BYTES} bytes")
        except Refusal as refusal:
            self._stop_reading(refusal)
        except httptools.HttpParserCallbackError as error:
            context = error.__context__
            self._stop_reading(context if isinstance(context, Refusal) else _classify(error))
        except httptools.HttpParserUpgrade:
            self._stop_reading(None)  # answered normally, then closed: no protocol switch
        except httptools.HttpParserError as error:
            self._stop_reading(_classify(error))
        self._next()
        if self._queue and self.transport is not None:
            # Pipelined requests wait their turn: read no more until they are answered.
            self.transport.pause_reading()
            self._paused = True

    def owner_clock(self) -> float:
        """The loop's clock (monotonic)."""
        return asyncio.get_running_loop().time()

    def _stop_reading(self, refusal: Refusal | None) -> None:
        self._broken = True
        if refusal is not None:
            self._queue.append(refusal)
        elif self._queue:  # an upgrade: answer what came, then close
            last = self._queue.pop()
            assert not isinstance(last, Refusal)
            self._queue.append((last[0], False, last[2]))

    # -- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        """A new request in this connection."""
        self._head_done = False
        self._url, self._headers, self._body, self._body_size = b"", [], [], 0
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        """The request target (may come in pieces)."""
        self._url += url
        self._parsed_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header line."""
        if len(self._headers) >= MAX_HEADERS:
            raise Refusal("head_too_large", f"more than {MAX_HEADERS} header lines")
        self._headers.append((name.lower(), value))
        self._parsed_head(len(name) + len(value) + 4)

    def _parsed_head(self, size: int) -> None:
        """Count the head as parsed: a head that arrives in one read is bounded too."""
        self._head_size += size
        if self._head_size > MAX_HEAD_BYTES:
            raise Refusal("head_too_large", f"request head over {MAX_HEAD_BYTES} bytes")

    def on_headers_complete(self) -> None:
        """The head is whole: check what can be refused before the body."""
        self._head_done, self._head_bytes = True, 0
        version = self._parser.get_http_version()
        if version not in ("1.0", "1.1"):
            raise Refusal("unsupported_version", "only HTTP/1.0 and HTTP/1.1 are served")
        self._method = self._parser.get_method().decode("ascii")
        headers = dict(self._headers)
        conflicting = _conflicting(self._headers)
        if conflicting is not None:
            # RFC 9112 refuses any second Host; the same value twice (a client library's
            # Host beside its caller's) is not ambiguous, so only different values are.
            raise Refusal("conflicting_header", f"{conflicting} given twice, with different values")
        coding = headers.get(b"transfer-encoding")
        if coding is not None:
            codings = [c.strip().lower() for c in coding.split(b",")]
            if codings[-1] != b"chunked":
                raise Refusal("bad_transfer_encoding", "chunked must be the last transfer coding")
            if len(codings) > 1:
                raise Refusal("unsupported_transfer_coding", "only chunked is supported")
        length = headers.get(b"content-length")
        if length is not None and int(length) > MAX_BODY_BYTES:
            raise Refusal("body_too_large", f"body larger than {MAX_BODY_BYTES} bytes")
        if self.phase is Phase.HEAD:
            self.phase = Phase.BODY
            self.owner.moved(self)
        expects_body = coding is not None or (length is not None and int(length) > 0)
        # An HTTP/1.0 client's expectation is ignored (RFC 9110 10.1.1): it knows no 100.
        continuing = headers.get(b"expect", b"").lower() == b"100-continue" and version == "1.1"
        if continuing and expects_body and not self._queue and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        """A piece of the body (decoded when chunked)."""
        self._body_size += len(body)
        if self._body_size > MAX_BODY_BYTES:
            raise Refusal("body_too_large", f"body larger than {MAX_BODY_BYTES} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        """The request is whole: queue it."""
        path, query = _split_target(self._url.decode("latin-1"))
        request = Request(
            method=self._method,
            path=path,
            query=parse_qs(query, keep_blank_values=True),
            headers={n.decode("latin-1"): v.decode("latin-1") for n, v in self._headers},
            body=b"".join(self._body),
        )
        version = self._parser.get_http_version()
        self._queue.append((request, self._parser.should_keep_alive(), version == "1.0"))

    # -- answering -----------------------------------------------------------------

    def _next(self) -> None:
        """Start on the next queued request, unless one is being answered."""
        if self.phase in (Phase.BUSY, Phase.CLOSED) or self._write_paused or not self._queue:
            return
        item = self._queue.popleft()
        if isinstance(item, Refusal):
            self.refuse(item)
            return
        request, keep_alive, self._http_1_0 = item
        self.phase = Phase.BUSY
        self.owner.moved(self)
        self._keep_alive = keep_alive
        self._request_method = request.method
        self.owner.handle(self, request)

    def respond(self, response: Response) -> None:
        """Send the answer to the request being handled; go on with the next one."""
        if self.phase is not Phase.BUSY or self.transport is None:
            return  # closed meanwhile
        keep = self._keep_alive and not self.owner.draining and not (self._eof and not self._queue)
        self._write(response, close=not keep, head_only=self._request_method == "HEAD")
        if not keep:
            self.phase = Phase.CLOSED
            self.owner.moved(self)
            self.transport.close()  # after the answer is flushed
            return
        self.started = False
        if self._queue:
            self.phase = Phase.HEAD  # the next request is already here
            self._next()
            return
        self.phase, self.since = Phase.IDLE, self.owner_clock()
        self.owner.moved(self)
        if self._paused and not self._broken:
            self._paused = False
            self.transport.resume_reading()

    def refuse(self, refusal: Refusal, *, linger: bool = True) -> None:
        """Answer a refusal, then close without resetting the answer.

        Closing with unread data makes the kernel send a reset, which can destroy the
        answer before the client reads it: so half-close, and read and discard what
        the client still sends, for a moment, before closing (unless ``linger`` is
        off: a client too slow to finish its request gets no such courtesy).
        """
        self.owner.refused(refusal.reason)
        self._broken = True
        self._queue.clear()
        transport = self.transport
        if transport is None or self.phase is Phase.CLOSED:
            return
        self.phase = Phase.CLOSED
        self.owner.moved(self)
        body = (str(refusal) + "\n").encode()
        self._write(Response(refusal.status, body), close=True, head_only=False)
        if linger and transport.can_write_eof():
            transport.write_eof()
            transport.resume_reading()
            asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def _write(self, response: Response, *, close: bool, head_only: bool) -> None:
        assert self.transport is not None
        status = response.status
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            f"Date: {self.owner.date}",
            "Server: msgsms-exporter",
            *(f"{name}: {value}" for name, value in response.headers.items()),
        ]
        if close:
            lines.append("Connection: close")
        elif self._http_1_0:
            lines.append("Connection: keep-alive")  # else its client would close
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.transport.write(head if head_only else head + response.body)

    def abort(self) -> None:
        """Close at once, discarding anything unsent (eviction, a hopeless client)."""
        if self.transport is not None:
            self.transport.abort()
        elif self.socket is not None:
            # Still in its TLS handshake: the handshake fails on the shut socket and the
            # loop closes it (closing the descriptor here would race with the loop).
            with contextlib.suppress(OSError):
                self.socket.shutdown(socket.SHUT_RDWR)
