"""The exporter's HTTP server: a small router in front of cached pages and the exposition.

Stdlib ``ThreadingHTTPServer``: one thread per connection, so a slow or hung client
never holds up ``/metrics``; sockets time out (the TLS handshake too, in the connection's
thread, not the accept loop), headers (64 KiB a line, 100 lines: the stdlib's limits)
and bodies (1 MiB) are bounded. With a :class:`~exporter.webconfig.BasicAuth` every path
except ``open_paths`` needs credentials; a failure is a 401 with ``WWW-Authenticate``.
"""

from __future__ import annotations

import base64
import binascii
import socket
import ssl
import sys
import threading
import time
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

MAX_BODY_BYTES = 1024 * 1024
LINGER_SECONDS = 1.0
LINGER_BYTES = 8 * MAX_BODY_BYTES
CLIENT_TIMEOUT_SECONDS = 10.0
HEALTH_PATHS = frozenset({"/-/healthy", "/-/ready"})
# A thread waiting for the GIL asks the running one to let go after this long (the
# default is 5 ms): a scrape arriving while the poller folds records waits at most
# about this long for each of its turns, and the poller gives up nothing when alone.
SWITCH_INTERVAL_SECONDS = 0.001
# The exposition is compressed once per rendering, not per scrape, so the level that
# makes it smallest for a fair price (400 KB to 20 KB in 3 ms) costs scrapes nothing.
GZIP_LEVEL = 6
# Live counters (the receiver's) in the exposition are at most this old.
LIVE_MAX_AGE_SECONDS = 0.1
GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer around the deflate stream
REALM = 'Basic realm="msgsms-exporter", charset="UTF-8"'

log = structlog.get_logger("msgsms_exporter.web")


@dataclass(frozen=True, slots=True)
class Request:
    """What a route sees of an HTTP request."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""

    def param(self, name: str, default: str = "") -> str:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else default


@dataclass(frozen=True, slots=True)
class Response:
    """What a route answers."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def text(status: int, message: str) -> Response:
    """A plain-text response."""
    return Response(status, (message + "\n").encode())


Route = Callable[[Request], Response]


class Authenticator(Protocol):
    """Checks a user name and password (``webconfig.BasicAuth``)."""

    def check(self, user: str, password: str) -> bool:
        """True when the credentials are valid."""
        ...


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if header is None:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def authorized(auth: Authenticator | None, header: str | None) -> bool:
    """True when no auth is configured or ``header`` carries valid basic credentials."""
    if auth is None:
        return True
    credentials = _basic_credentials(header)
    return credentials is not None and auth.check(*credentials)


def accepts_gzip(header: str | None) -> bool:
    """True when an ``Accept-Encoding`` value allows gzip (``gzip;q=0`` refuses it)."""
    weights: dict[str, float] = {}
    for item in (header or "").split(","):
        coding, *params = item.split(";")
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[coding.strip().lower()] = weight
    return weights.get("gzip", weights.get("*", 0.0)) > 0


@dataclass(frozen=True, slots=True)
class _Rendering:
    """One rendering of the polled part, as text and as the start of a gzip stream."""

    version: object
    text: bytes
    gzip_head: bytes  # ends with a sync flush: a live part can follow in the same stream
    compressor: zlib._Compress  # after ``text``; only its copies are used, it stays as is
    gzip: bytes  # the whole stream when nothing follows


@dataclass(frozen=True, slots=True)
class _Exposition:
    """Both parts together, in both forms, as rendered at ``at``."""

    polled: _Rendering
    at: float
    text: bytes
    gzip: bytes


class ExpositionCache:
    """The ``/metrics`` body, rendered once per change, never once per scrape.

    ``registry`` changes only when ``version()`` does (a poll, a reload): it is rendered
    then, as text and as gzip (what Prometheus asks for). ``live``, if any, is small
    and changes with every push (the receiver's counters): it is rendered again when
    ``live_max_age`` old, its gzip continuing the polled part's stream. Scrapes read the
    current rendering without a lock; while one renders the live part, the others send
    the last one rather than queue on the lock and then, one by one, for the GIL.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        version: Callable[[], object],
        live: CollectorRegistry | None = None,
        *,
        live_max_age: float = LIVE_MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._version = version
        self._live = live
        self._live_max_age = live_max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._rendering: _Rendering | None = None
        self._exposition: _Exposition | None = None

    def _current(self) -> _Exposition:
        version = self._version()
        cached = self._exposition  # read without the lock: it is replaced whole
        if cached is not None and cached.polled.version == version:
            if self._live is None or self._clock() - cached.at < self._live_max_age:
                return cached
            # Only the live part is old: one scrape renders it while the others send
            # the last one, instead of queueing on the lock (and then for the GIL).
            if not self._lock.acquire(blocking=False):
                return cached
        else:
            self._lock.acquire()
        try:
            return self._render()
        finally:
            self._lock.release()

    def _render(self) -> _Exposition:
        """Render what changed since the last rendering (under the lock)."""
        version = self._version()
        polled = self._rendering
        if polled is None or polled.version != version:
            text = generate_latest(self._registry)
            compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS)
            # The sync flush emits all of the text's deflate output now, so continuing
            # the stream for the live part compresses only the live part.
            head = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)
            whole = head + compressor.copy().flush()
            polled = self._rendering = _Rendering(version, text, head, compressor, whole)
        now = self._clock()
        cached = self._exposition
        if (
            cached is not None
            and cached.polled is polled
            and (self._live is None or now - cached.at < self._live_max_age)
        ):
            return cached
        if self._live is None:
            exposition = _Exposition(polled, now, polled.text, polled.gzip)
        else:
            live = generate_latest(self._live)
            compressor = polled.compressor.copy()
            tail = compressor.compress(live) + compressor.flush()
            exposition = _Exposition(polled, now, polled.text + live, polled.gzip_head + tail)
        self._exposition = exposition
        return exposition

    def refresh(self) -> None:
        """Render what changed now: the poller calls this, so no scrape waits for it."""
        self._current()

    def body(self, *, gzipped: bool = False) -> bytes:
        """The current exposition, as text or gzip-compressed."""
        exposition = self._current()
        return exposition.gzip if gzipped else exposition.text

    def route(self, request: Request) -> Response:
        """``GET /metrics``, gzip-compressed when the client accepts it."""
        vary = {"Vary": "Accept-Encoding"}
        if accepts_gzip(request.headers.get("accept-encoding")):
            body = self.body(gzipped=True)
            return Response(200, body, CONTENT_TYPE_LATEST, {**vary, "Content-Encoding": "gzip"})
        return Response(200, self.body(), CONTENT_TYPE_LATEST, vary)


class Router:
    """Maps (method, path) to routes."""

    def __init__(self) -> None:
        self._routes: dict[str, dict[str, Route]] = {}

    def add(self, path: str, route: Route, methods: tuple[str, ...] = ("GET",)) -> None:
        """Serve ``route`` at ``path`` for ``methods``."""
        for method in methods:
            self._routes.setdefault(path, {})[method] = route
            if method == "GET":
                self._routes[path]["HEAD"] = route

    def dispatch(self, request: Request) -> Response:
        """The route's response, 404 or 405; a route's bug becomes a 500, never a crash."""
        routes = self._routes.get(request.path)
        if routes is None:
            return text(404, "not found")
        route = routes.get(request.method)
        if route is None:
            allow = ", ".join(sorted(routes))
            return Response(405, b"method not allowed\n", headers={"Allow": allow})
        try:
            return route(request)
        except Exception:
            log.exception("request handler failed", path=request.path)
            return text(500, "internal error")


@dataclass(slots=True)
class _Access:
    """Who may ask: read by every request, replaced whole on a web-config reload."""

    auth: Authenticator | None
    draining: bool = False
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(
    router: Router,
    access: _Access,
    open_paths: Collection[str],
    client_timeout: float,
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "msgsms-exporter"
        sys_version = ""
        timeout = client_timeout
        protocol_version = "HTTP/1.1"
        # Buffered, so headers and a body of up to 64 KiB (a gzip exposition) leave in
        # one write when the request ends; a larger body is a second write, and without
        # TCP_NODELAY Nagle's algorithm and the client's delayed ACK would add ~40 ms.
        wbufsize = 64 * 1024
        disable_nagle_algorithm = True

        def setup(self) -> None:
            super().setup()
            if isinstance(self.connection, ssl.SSLSocket):
                # Here, in the connection's thread and under its timeout, so a client
                # that never finishes the handshake blocks nobody else.
                self.connection.do_handshake()

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            if (parts.path or "/") not in open_paths and not authorized(
                access.auth, self.headers.get("Authorization")
            ):
                self._refuse(Response(401, b"unauthorized\n", headers={"WWW-Authenticate": REALM}))
                return
            length_text = self.headers.get("Content-Length", "0") or "0"
            try:
                length = int(length_text)
            except ValueError:
                self._refuse(text(400, "bad Content-Length"))
                return
            if length < 0 or length > MAX_BODY_BYTES:
                self._refuse(text(413, f"body larger than {MAX_BODY_BYTES} bytes"))
                return
            with access.lock:
                access.in_flight += 1
            try:
                body = self.rfile.read(length) if length else b""
                request = Request(
                    method=self.command,
                    path=parts.path or "/",
                    query=parse_qs(parts.query, keep_blank_values=True),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                response = router.dispatch(request)
                if access.draining:
                    self.close_connection = True
                    response = replace(
                        response, headers={**response.headers, "Connection": "close"}
                    )
                self._send(response)
                self.wfile.flush()
            finally:
                with access.lock:
                    access.in_flight -= 1

        def _refuse(self, response: Response) -> None:
            """Answer without reading the body, then close without resetting the answer.

            Closing a socket with unread data makes the kernel send a reset, which can
            destroy the answer before the client reads it: so stop writing, then read
            and discard what the client is still sending, for a moment, before closing.
            """
            self.close_connection = True
            self._send(replace(response, headers={**response.headers, "Connection": "close"}))
            try:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_WR)
                self.connection.settimeout(LINGER_SECONDS)
                drained = 0
                while drained < LINGER_BYTES:
                    chunk = self.connection.recv(65536)
                    if not chunk:
                        break
                    drained += len(chunk)
            except (OSError, ValueError):
                pass  # the client went away first: nothing left to protect

        def _send(self, response: Response) -> None:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)

        do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Access logs are off: they would be one line per scrape."""

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops the SYNs of a burst of new connections
    # (many scrapers at once, pushes): each dropped SYN costs the client a 1 s retry.
    request_queue_size = 128

    tls: ssl.SSLContext | None = None
    """Wraps each accepted connection (the handshake runs in its thread); replaceable."""

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = self.socket.accept()
        tls = self.tls
        if tls is not None:
            connection = tls.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False
            )
        return connection, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that times out, resets or fails the TLS handshake is not our error."""
        log.debug("client connection failed", exc_info=True)


class WebServer:
    """A threaded HTTP server for a router, started in the background.

    ``tls`` wraps every connection; ``auth`` guards every path but ``open_paths``.
    """

    def __init__(
        self,
        router: Router,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        auth: Authenticator | None = None,
        open_paths: Collection[str] = (),
        client_timeout: float = CLIENT_TIMEOUT_SECONDS,
    ) -> None:
        self._access = _Access(auth)
        handler = _handler(router, self._access, frozenset(open_paths), client_timeout)
        self._server = _Server((host, port), handler)
        self._server.tls = tls
        self._thread = threading.Thread(target=self._server.serve_forever, name="web", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Serve in a background thread; from now on the GIL changes hands every 1 ms."""
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_SECONDS))
        self._thread.start()

    @property
    def tls_on(self) -> bool:
        """Whether the server speaks TLS."""
        return self._server.tls is not None

    def update(self, *, tls: ssl.SSLContext | None, auth: Authenticator | None) -> None:
        """Apply a reloaded web config to the connections accepted from now on.

        ValueError when TLS would be turned on or off: that needs a restart.
        """
        if (tls is not None) != self.tls_on:
            raise ValueError("turning TLS on or off needs a restart")
        self._server.tls = tls
        self._access.auth = auth

    def drain(self) -> None:
        """Keep serving, but close each connection after its answer."""
        self._access.draining = True

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, wait up to ``grace`` for requests in flight, close the socket."""
        self._access.draining = True
        self._server.shutdown()
        self._server.server_close()
        deadline = time.monotonic() + grace
        while self._access.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)


def parse_listen_address(value: str) -> tuple[str, int]:
    """``host:port`` or ``:port`` (all interfaces) → (host, port); ValueError otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid listen address {value!r}: use host:port or :port")
    return host.strip("[]") or "0.0.0.0", int(port)
