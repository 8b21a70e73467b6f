"""The ``/metrics`` body: rendered once per change, compressed once, served from memory."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from exporter.routing import Request, Response

# The exposition is compressed once per rendering, not per scrape, so the level that
# makes it smallest for a fair price (400 KB to 20 KB in 3 ms) costs scrapes nothing.
GZIP_LEVEL = 6
# Live counters (the receiver's, the server's) in the exposition are at most this old.
LIVE_MAX_AGE_SECONDS = 0.1
GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer around the deflate stream


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

    def _at_hand(self) -> _Exposition | None:
        """The current exposition if it can be had without waiting, else None.

        When only the live part is old, one caller renders it (small: a millisecond)
        while the others send the last one, instead of queueing on the lock.
        """
        cached = self._exposition  # read without the lock: it is replaced whole
        if cached is None or cached.polled.version != self._version():
            return None
        if self._live is None or self._clock() - cached.at < self._live_max_age:
            return cached
        if not self._lock.acquire(blocking=False):
            return cached
        try:
            return self._render()
        finally:
            self._lock.release()

    def _current(self) -> _Exposition:
        exposition = self._at_hand()
        if exposition is not None:
            return exposition
        with self._lock:  # the polled part changed: render it, or wait for who does
            return self._render()

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
        return self._response(request, self._current())

    def fast_route(self, request: Request) -> Response | None:
        """``GET /metrics`` on the event loop: the exposition at hand, or None when the
        polled part must be rendered first (then :meth:`route` does it in a thread)."""
        exposition = self._at_hand()
        return None if exposition is None else self._response(request, exposition)

    @staticmethod
    def _response(request: Request, exposition: _Exposition) -> Response:
        vary = {"Vary": "Accept-Encoding"}
        if accepts_gzip(request.headers.get("accept-encoding")):
            headers = {**vary, "Content-Encoding": "gzip"}
            return Response(200, exposition.gzip, CONTENT_TYPE_LATEST, headers)
        return Response(200, exposition.text, CONTENT_TYPE_LATEST, vary)
