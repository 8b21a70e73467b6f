"""The server's event-loop side: accepting under a cap, deadlines, routes in threads.

:class:`Listener` owns the connections of one :class:`~exporter.web.WebServer`: it
accepts (evicting at the cap, never spinning when out of descriptors), keeps the
connections that wait for a request in the order they began to wait, enforces the
deadlines every half second, answers fast routes on the loop and runs the others in
worker threads, and stops gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import socket
import ssl
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate
from functools import partial

import structlog

from exporter.connection import Connection, Phase, Refusal
from exporter.routing import (
    Authenticator,
    DeferredRoute,
    Request,
    Response,
    Router,
    basic_credentials,
    route_path,
    text,
)
from exporter.verifier import PasswordVerifier
from exporter.webstats import HttpStats

REALM = 'Basic realm="msgsms-exporter", charset="UTF-8"'
AUTH_RETRY_AFTER = "1"  # seconds: the verifier's queue drains a check every ~0.1-0.3 s

WORKER_THREADS = 32  # routes that block: pushes waiting for their group commit
DEFAULT_MAX_CONNECTIONS = 8192
ACCEPTS_PER_TURN = 64  # then the loop serves the connections it has before accepting more
ACCEPTS_AT_CAP_PER_TURN = 8
ACCEPT_PAUSE_SECONDS = 0.1
SWEEP_SECONDS = 0.5
_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_TLS_HANDSHAKE = b"\x16"  # the content type of a TLS record that opens a handshake

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
class Access:
    """Who may ask and how: read by the loop, replaced on a web-config reload."""

    auth: Authenticator | None
    tls: ssl.SSLContext | None
    withheld: frozenset[str] = frozenset()
    """Paths answered 403 with ``withheld_message`` whoever asks (``details_withheld``)."""
    withheld_message: str = ""


class Listener:
    """The connections of one server, on its event loop (the :class:`Connection` owner)."""

    def __init__(
        self,
        router: Router,
        listener: socket.socket,
        access: Access,
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
        self._verifier = PasswordVerifier()
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
            self.stats.drop("over_capacity")  # counted before the client can see it
            sock.close()
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
            if tls is not None and not await self._speaks_tls(connection, sock):
                return
            await self.loop.connect_accepted_socket(
                lambda: connection,
                sock,
                ssl=tls,
                ssl_handshake_timeout=self.limits.head_timeout if tls is not None else None,
            )
        except (OSError, TimeoutError):  # ssl.SSLError is an OSError
            if connection in self.connections:
                if connection in self._reading:  # else evicted or timed out: counted then
                    self.stats.drop("tls_handshake")
                self.lost(connection)

    async def _speaks_tls(self, connection: Connection, sock: socket.socket) -> bool:
        """False when the client's first byte starts plain HTTP, not a TLS handshake
        (``http://`` to an ``https`` port): it is answered 400 in plain text, counted and
        closed, so the mistake is visible to the client and in the metrics."""
        readable: asyncio.Future[None] = self.loop.create_future()

        def ready() -> None:
            if not readable.done():
                readable.set_result(None)

        self.loop.add_reader(sock, ready)
        try:
            await readable
        finally:
            self.loop.remove_reader(sock)
        if connection not in self._reading:  # evicted or timed out meanwhile: counted
            sock.close()
            self.lost(connection)
            return False
        try:
            first = sock.recv(1, socket.MSG_PEEK)
        except OSError:
            return True  # let the handshake fail and be counted as it always is
        if not first or first == _TLS_HANDSHAKE or not first.isalpha():
            return True
        refusal = Refusal("plain_http", "this port speaks HTTPS: send the request over TLS")
        self.stats.reject(refusal.reason)
        body = f"{refusal}\n".encode()
        head = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
        head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        with contextlib.suppress(OSError):
            sock.send(head.encode() + body)  # small: fits the empty send buffer
            sock.shutdown(socket.SHUT_WR)
        sock.close()
        self.lost(connection)
        return False

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
        """Check the credentials, then answer now when that cannot block, else in a worker.

        Credentials seen before are decided on the loop; others wait for the password
        verifier (bcrypt), never in a worker thread: a flood of wrong passwords holds
        none of the threads that requests with verified credentials need.
        """
        access = self.access
        path = route_path(request.path)
        if path in access.withheld:
            refusal = self.router.refusal(request.path, 403, access.withheld_message)
            self._answer(connection, refusal, "details_withheld")
            return
        auth = access.auth
        open_path = path in self.open_paths
        if auth is None:
            self._serve(connection, request)
            return
        credentials = basic_credentials(request.headers.get("authorization"))
        verdict = auth.cached(*credentials) if credentials is not None else False
        if verdict is None:
            assert credentials is not None
            checked = partial(self._checked, connection, request, open_path)
            if not self._verifier.submit(auth, *credentials, checked):
                refusal = self.router.refusal(
                    request.path,
                    503,
                    "too many passwords waiting to be checked; try again",
                    {"Retry-After": AUTH_RETRY_AFTER},
                )
                self._answer(connection, refusal, "auth_overloaded")
            return
        self._admit(connection, request, verdict or open_path)

    def _checked(self, connection: Connection, request: Request, open_path: bool, ok: bool) -> None:
        """On the verifier's thread: back to the loop with the verdict."""
        # The loop is closed when the server stopped during the check: its client is gone.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._admit, connection, request, ok or open_path)

    def _admit(self, connection: Connection, request: Request, allowed: bool) -> None:
        """Serve the request, or answer 401 (on the loop)."""
        if allowed:
            self._serve(connection, request)
            return
        challenge = {"WWW-Authenticate": REALM}
        refusal = self.router.refusal(request.path, 401, "unauthorized", challenge)
        self._answer(connection, refusal, "unauthorized")

    def _serve(self, connection: Connection, request: Request) -> None:
        """Route an admitted request: on the loop when it cannot block, else in a worker."""
        resolved = self.router.resolve(request)
        if resolved.deferred is not None:
            self._start_deferred(connection, resolved.deferred, request)
            return
        if resolved.answer is not None:
            self._answer(connection, resolved.answer, resolved.reason)
            return
        assert resolved.route is not None
        future = self._workers.submit(self.router.call, resolved.route, request)
        future.add_done_callback(partial(self._answered_in_thread, connection))

    def _start_deferred(
        self, connection: Connection, start: DeferredRoute, request: Request
    ) -> None:
        """Start a deferred route on the loop; its reply comes back like a worker's."""
        try:
            start(request, partial(self._finish, connection, reason=""))
        except Exception:  # the route's bug: a 500, never a crash of the loop
            log.exception("request handler failed", path=request.path)
            failed = self.router.refusal(request.path, 500, "internal error")
            self._finish(connection, failed, reason="internal_error")

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
        self._finish(connection, response, reason=reason)

    def _finish(self, connection: Connection, response: Response, *, reason: str) -> None:
        """From any thread: queue the answer for the loop, waking it once per batch."""
        self._finished.append((connection, response, reason))
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self.loop.call_soon_threadsafe(self._answer_finished)
            except RuntimeError:  # the loop is closed: the server stopped, its clients gone
                self._finished.clear()
                log.warning(
                    "answer ready after the server stopped: its client got none",
                    status=response.status,
                )

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
        self._verifier.stop()
