"""The exporter's HTTP server: one asyncio event loop for every connection, routes in threads.

An idle or slow connection costs a few kilobytes and no thread. The loop parses requests
(:mod:`exporter.connection`), answers fast routes itself (the cached ``/metrics``, the
health checks) and runs the others, which may block (a push waits for its commit), in a
bounded pool of worker threads. Hostile clients are bounded:

- a request head must arrive whole within ``head_timeout`` (10 s) of its first byte (or
  of the accept), head and body within ``request_timeout`` (30 s): not per read;
- at most ``max_connections`` (below the file-descriptor limit): at the cap, a new
  connection evicts the oldest one still waiting for or receiving its request, else
  the oldest idle one; when every connection is busy the new one is closed;
- out of descriptors (EMFILE), accept evicts the same way, or pauses 100 ms: it never
  spins;
- with TLS, the handshake runs on the loop under the head deadline; a reloaded
  certificate applies to the connections accepted from then on.

With a :class:`~exporter.webconfig.BasicAuth` every path except ``open_paths`` needs
credentials (401 with ``WWW-Authenticate`` otherwise); the bcrypt check of credentials
not seen before runs in a worker thread, never on the loop.
"""

from __future__ import annotations

import asyncio
import errno
import resource
import socket
import ssl
import sys
import threading
from collections import deque
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate
from functools import partial

import structlog

from exporter.connection import MAX_BODY_BYTES, Connection, Phase, Refusal
from exporter.exposition import ExpositionCache, accepts_gzip
from exporter.routing import (
    Authenticator,
    Request,
    Response,
    Route,
    Router,
    authorized,
    call_route,
    known_to_be_authorized,
    text,
)
from exporter.webstats import HttpStats

__all__ = [
    "HEALTH_PATHS",
    "MAX_BODY_BYTES",
    "Authenticator",
    "ExpositionCache",
    "Request",
    "Response",
    "Route",
    "Router",
    "ServerLimits",
    "WebServer",
    "accepts_gzip",
    "authorized",
    "parse_listen_address",
    "text",
]

HEALTH_PATHS = frozenset({"/-/healthy", "/-/ready"})
REALM = 'Basic realm="msgsms-exporter", charset="UTF-8"'
# A thread waiting for the GIL asks the running one to let go after this long (the
# default is 5 ms): the loop and the worker threads each wait at most about this long.
SWITCH_INTERVAL_SECONDS = 0.001
BACKLOG = 1024  # a burst of connects (scrapers, pushes) waits here instead of in SYN retries
WORKER_THREADS = 32  # routes that block: pushes waiting for their group commit
DEFAULT_MAX_CONNECTIONS = 8192
ACCEPTS_PER_TURN = 64  # then the loop serves the connections it has before accepting more
ACCEPTS_AT_CAP_PER_TURN = 8
ACCEPT_PAUSE_SECONDS = 0.1
SWEEP_SECONDS = 0.5
_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

log = structlog.get_logger("msgsms_exporter.web")


def default_max_connections() -> int:
    """Connections to hold at most: below the descriptor limit, leaving room for the
    store, the upstream clients and the logs (64 plus an eighth of the limit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    return max(16, min(DEFAULT_MAX_CONNECTIONS, soft - 64 - soft // 8))


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Deadlines (seconds) and the connection cap (0: from the descriptor limit)."""

    head_timeout: float = 10.0
    request_timeout: float = 30.0
    idle_timeout: float = 75.0  # above a 60 s scrape interval, as nginx's keepalive_timeout
    max_connections: int = 0


@dataclass(slots=True)
class _Access:
    """Who may ask and how: read by the loop, replaced on a web-config reload."""

    auth: Authenticator | None
    tls: ssl.SSLContext | None


class _Loop:
    """The connections of one server, on its event loop (the :class:`Connection` owner)."""

    def __init__(
        self,
        router: Router,
        listener: socket.socket,
        access: _Access,
        open_paths: frozenset[str],
        limits: ServerLimits,
        stats: HttpStats,
    ) -> None:
        self.router = router
        self.listener = listener
        self.access = access
        self.open_paths = open_paths
        self.limits = limits
        self.max_connections = limits.max_connections or default_max_connections()
        self.stats = stats
        stats.limit = self.max_connections
        self.draining = False
        self.date = formatdate(usegmt=True)
        self.connections: set[Connection] = set()
        # Insertion-ordered by when each began to wait: the oldest comes first.
        self._reading: dict[Connection, None] = {}
        self._idle: dict[Connection, None] = {}
        self._workers = ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="web-route")
        self._accepting = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # Answers from worker threads, waiting for the loop (deque: thread-safe ends).
        self._finished: deque[tuple[Connection, Response, str]] = deque()
        self._wake_pending = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    def begin(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start accepting and sweeping (on the loop)."""
        self._loop = loop
        self._resume_accepting()
        self._sweep()

    # -- accepting -----------------------------------------------------------------

    def _resume_accepting(self) -> None:
        if not self._accepting and self.listener.fileno() >= 0:
            self.loop.add_reader(self.listener, self._accept)
            self._accepting = True

    def _pause_accepting(self) -> None:
        if self._accepting:
            self.loop.remove_reader(self.listener)
            self._accepting = False

    def _accept(self) -> None:
        # At the cap each accept costs an eviction: take few per turn, so the connections
        # already held (a kept-alive scrape, a push) are served between them.
        at_cap = len(self.connections) >= self.max_connections
        for _ in range(ACCEPTS_AT_CAP_PER_TURN if at_cap else ACCEPTS_PER_TURN):
            try:
                sock, _address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    self.stats.drop("out_of_descriptors")
                    # Free one (its descriptor closes on the next turn), or wait a moment.
                    if not self._evict_one():
                        self._pause_accepting()
                        self.loop.call_later(ACCEPT_PAUSE_SECONDS, self._resume_accepting)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue  # the client gave up while waiting in the backlog
                log.warning("accept failed", error=str(exc))
                return
            self._open(sock)

    def _evict_one(self) -> bool:
        """Close the oldest connection still in its request, else the oldest idle one."""
        for waiting in (self._reading, self._idle):
            for victim in waiting:
                self._forget_waiting(victim)
                self.stats.drop("evicted")
                victim.abort()
                return True
        return False

    def _open(self, sock: socket.socket) -> None:
        if len(self.connections) >= self.max_connections and not self._evict_one():
            sock.close()
            self.stats.drop("over_capacity")
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = Connection(self, self.loop.time())
        connection.socket = sock
        self.connections.add(connection)
        self.stats.connections = len(self.connections)
        self._reading[connection] = None
        self.loop.create_task(self._connect(connection, sock, self.access.tls))

    async def _connect(
        self, connection: Connection, sock: socket.socket, tls: ssl.SSLContext | None
    ) -> None:
        try:
            await self.loop.connect_accepted_socket(
                lambda: connection,
                sock,
                ssl=tls,
                ssl_handshake_timeout=self.limits.head_timeout if tls is not None else None,
            )
        except (OSError, TimeoutError):  # ssl.SSLError is an OSError
            if connection in self.connections:
                self.stats.drop("tls_handshake")
                self.lost(connection)

    # -- the Connection owner --------------------------------------------------------

    def _forget_waiting(self, connection: Connection) -> None:
        self._reading.pop(connection, None)
        self._idle.pop(connection, None)

    def moved(self, connection: Connection) -> None:
        """Keep the waiting connections in order of when they began to wait."""
        phase = connection.phase
        if phase in (Phase.HEAD, Phase.BODY):
            self._idle.pop(connection, None)
            self._reading.setdefault(connection, None)  # a head → body move keeps its place
        elif phase is Phase.IDLE:
            self._reading.pop(connection, None)
            self._idle.pop(connection, None)
            self._idle[connection] = None
        else:
            self._forget_waiting(connection)

    def lost(self, connection: Connection) -> None:
        """A connection closed."""
        self._forget_waiting(connection)
        self.connections.discard(connection)
        self.stats.connections = len(self.connections)

    def refused(self, reason: str) -> None:
        """Count a refusal of the HTTP layer."""
        self.stats.reject(reason)

    def handle(self, connection: Connection, request: Request) -> None:
        """Answer now when that cannot block; else in a worker thread."""
        access = self.access
        if request.path in self.open_paths or known_to_be_authorized(
            access.auth, request.headers.get("authorization")
        ):
            resolved = self.router.resolve(request)
            if resolved.answer is not None:
                self._answer(connection, resolved.answer, resolved.reason)
                return
            assert resolved.route is not None
            job = partial(call_route, resolved.route, request)
        else:
            job = partial(self._authorize_and_answer, access.auth, request)
        future = self._workers.submit(job)
        future.add_done_callback(partial(self._answered_in_thread, connection))

    def _authorize_and_answer(
        self, auth: Authenticator | None, request: Request
    ) -> tuple[Response, str]:
        """In a worker thread: the password hash, then the route."""
        if not authorized(auth, request.headers.get("authorization")):
            unauthorized = Response(401, b"unauthorized\n", headers={"WWW-Authenticate": REALM})
            return unauthorized, "unauthorized"
        return self.router.answer(request)

    def _answered_in_thread(
        self, connection: Connection, future: Future[tuple[Response, str]]
    ) -> None:
        """In the worker thread: hand the answer to the loop.

        A group commit releases many requests at once: their answers share one wake-up
        of the loop (each wake-up is a write to its self-pipe, and a turn for the GIL).
        """
        try:
            response, reason = future.result()
        except Exception:  # call_route catches route errors; this is the server's bug
            log.exception("request failed")
            response, reason = text(500, "internal error"), "internal_error"
        self._finished.append((connection, response, reason))
        if not self._wake_pending:
            self._wake_pending = True
            self.loop.call_soon_threadsafe(self._answer_finished)

    def _answer_finished(self) -> None:
        self._wake_pending = False  # before taking: a later append wakes the loop again
        while self._finished:
            self._answer(*self._finished.popleft())

    def _answer(self, connection: Connection, response: Response, reason: str) -> None:
        if reason:
            self.stats.reject(reason)
        connection.respond(response)

    # -- deadlines -------------------------------------------------------------------

    def _sweep(self) -> None:
        """Every half second: enforce the deadlines, oldest waiting connection first."""
        now = self.loop.time()
        self.date = formatdate(usegmt=True)
        limits = self.limits
        late: list[Connection] = []
        for connection in self._reading:
            age = now - connection.since
            if age < limits.head_timeout:
                break
            if connection.phase is Phase.HEAD or age >= limits.request_timeout:
                late.append(connection)
        for connection in late:
            self._forget_waiting(connection)
            if connection.started:
                connection.refuse(Refusal("timeout", "request not received in time"), linger=False)
            else:
                self.stats.drop("no_request")
                connection.abort()
        idle: list[Connection] = []
        for connection in self._idle:
            if now - connection.since < limits.idle_timeout:
                break
            idle.append(connection)
        for connection in idle:
            self._forget_waiting(connection)
            self.stats.drop("idle_timeout")
            connection.abort()
        self.loop.call_later(SWEEP_SECONDS, self._sweep)

    # -- stopping --------------------------------------------------------------------

    async def shutdown(self, grace: float) -> None:
        """Stop accepting; close idle connections; let requests in flight finish."""
        self.draining = True
        self._pause_accepting()
        self.listener.close()
        deadline = self.loop.time() + grace
        while True:
            for connection in list(self.connections):
                if connection.phase is Phase.IDLE or not (
                    connection.started or connection.phase is Phase.BUSY
                ):
                    connection.abort()
            if not self.connections or self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            connection.abort()
        await asyncio.sleep(0)  # let the aborts close their sockets
        self._workers.shutdown(wait=False, cancel_futures=True)


class WebServer:
    """An HTTP server for a router, serving from a background thread.

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
        limits: ServerLimits = ServerLimits(),
        stats: HttpStats | None = None,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=BACKLOG)
        self._listener.setblocking(False)
        self.stats = stats or HttpStats()
        self._access = _Access(auth, tls)
        self._core = _Loop(
            router, self._listener, self._access, frozenset(open_paths), limits, self.stats
        )
        self._address = self._listener.getsockname()[:2]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="web", daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._core.begin(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port."""
        host, port = self._address
        return str(host), int(port)

    @property
    def max_connections(self) -> int:
        """Connections held at most."""
        return self._core.max_connections

    def start(self) -> None:
        """Serve in a background thread; from now on the GIL changes hands every 1 ms."""
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_SECONDS))
        self._thread.start()

    @property
    def tls_on(self) -> bool:
        """Whether the server speaks TLS."""
        return self._access.tls is not None

    def update(self, *, tls: ssl.SSLContext | None, auth: Authenticator | None) -> None:
        """Apply a reloaded web config to the connections accepted from now on.

        ValueError when TLS would be turned on or off: that needs a restart.
        """
        if (tls is not None) != self.tls_on:
            raise ValueError("turning TLS on or off needs a restart")
        self._access.tls = tls
        self._access.auth = auth

    def drain(self) -> None:
        """Keep serving, but close each connection after its answer."""
        self._core.draining = True

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, wait up to ``grace`` for requests in flight, then close all."""
        if not self._thread.is_alive():
            self._listener.close()
            return
        stopping = asyncio.run_coroutine_threadsafe(self._core.shutdown(grace), self._loop)
        try:
            stopping.result(timeout=grace + 5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)


def parse_listen_address(value: str) -> tuple[str, int]:
    """``host:port`` or ``:port`` (all interfaces) → (host, port); ValueError otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid listen address {value!r}: use host:port or :port")
    return host.strip("[]") or "0.0.0.0", int(port)
