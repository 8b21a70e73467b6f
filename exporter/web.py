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
not seen before runs on the password verifier (:mod:`exporter.verifier`): one at a time,
never on the loop or in a worker thread, at most 16 waiting (503 beyond them).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
import threading
from collections.abc import Collection

from exporter.connection import MAX_BODY_BYTES
from exporter.exposition import ExpositionCache, accepts_gzip
from exporter.listener import REALM, Access, Listener, ServerLimits
from exporter.routing import (
    Authenticator,
    DeferredRoute,
    Reply,
    Request,
    Response,
    Route,
    Router,
    blocking,
    known_to_be_authorized,
    text,
)
from exporter.webstats import HttpStats

__all__ = [
    "HEALTH_PATHS",
    "MAX_BODY_BYTES",
    "REALM",
    "Authenticator",
    "DeferredRoute",
    "ExpositionCache",
    "Reply",
    "Request",
    "Response",
    "Route",
    "Router",
    "ServerLimits",
    "WebServer",
    "accepts_gzip",
    "blocking",
    "known_to_be_authorized",
    "parse_listen_address",
    "text",
]

HEALTH_PATHS = frozenset({"/-/healthy", "/-/ready"})
# A thread waiting for the GIL asks the running one to let go after this long (the
# default is 5 ms): the loop and the worker threads each wait at most about this long.
SWITCH_INTERVAL_SECONDS = 0.001
BACKLOG = 1024  # a burst of connects (scrapers, pushes) waits here instead of in SYN retries


class WebServer:
    """An HTTP server for a router, serving from a background thread.

    ``tls`` wraps every connection; ``auth`` guards every path but ``open_paths``;
    ``withheld`` paths are answered 403 with ``withheld_message``, whoever asks.
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
        limits: ServerLimits = ServerLimits(),  # noqa: B008 - frozen, never mutated
        stats: HttpStats | None = None,
        withheld: Collection[str] = (),
        withheld_message: str = "",
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # Not socket.create_server: its OSError rewrites strerror, which the CLI shows.
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(BACKLOG)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self.stats = stats or HttpStats()
        self._access = Access(auth, tls, frozenset(withheld), withheld_message)
        self._core = Listener(
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

    def update(
        self,
        *,
        tls: ssl.SSLContext | None,
        auth: Authenticator | None,
        withheld: Collection[str] = (),
    ) -> None:
        """Apply a reloaded web config to the connections accepted from now on (and, for
        auth and the withheld paths, to the requests that arrive from now on).

        ValueError when TLS would be turned on or off: that needs a restart.
        """
        if (tls is not None) != self.tls_on:
            raise ValueError("turning TLS on or off needs a restart")
        self._access.tls = tls
        self._access.auth = auth
        self._access.withheld = frozenset(withheld)

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
    if "/" in host:  # http://127.0.0.1:9170, copied from a browser
        raise ValueError(f"invalid listen address {value!r}: use host:port or :port, not a URL")
    if not sep or not port.isdigit() or int(port) > 65535 or any(c.isspace() for c in host):
        raise ValueError(f"invalid listen address {value!r}: use host:port or :port")
    return host.strip("[]") or "0.0.0.0", int(port)
