"""What the HTTP layer refused and dropped, counted, and the collector that exports it.

    msgsms_http_requests_rejected_total{reason="body_too_large"} 2
    msgsms_http_connections_dropped_total{reason="evicted"} 310
    msgsms_http_connections 12
    msgsms_http_connections_limit 8192

Route-level refusals (a push's bad field, a bad signature) are the receiver's
``msgsms_push_rejected_total``; these are the refusals before or around the routes.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.connection import REFUSALS

REQUEST_REASONS: dict[str, int] = {
    **REFUSALS,
    "unauthorized": 401,  # basic auth missing or wrong
    "auth_overloaded": 503,  # too many passwords not seen before waiting for bcrypt
    "details_withheld": 403,  # a record-level page off loopback without basic auth
    "not_found": 404,  # no route at this path (a wrong callback URL shows here)
    "method_not_allowed": 405,
    "internal_error": 500,  # a route failed (a bug; logged with its traceback)
}
"""Every reason a request is refused by the HTTP layer, with its status."""

DROP_REASONS = (
    "evicted",  # at the connection cap: the oldest connection still in its request
    "over_capacity",  # at the cap with every connection busy: a new one is closed
    "out_of_descriptors",  # accept failed (EMFILE): the oldest waiting one is evicted
    "no_request",  # nothing received before the head deadline (or TLS never finished)
    "idle_timeout",  # a kept-alive connection unused for the idle timeout
    "tls_handshake",  # the TLS handshake failed
)
"""Why the server closed a connection without answering a request on it."""


class HttpStats:
    """Counts kept by the server's event loop, read by :class:`HttpCollector`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rejected: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.connections = 0
        self.limit = 0

    def reject(self, reason: str) -> None:
        """Count a request refused by the HTTP layer."""
        with self._lock:
            self.rejected[reason] += 1

    def drop(self, reason: str, count: int = 1) -> None:
        """Count connections closed without an answer."""
        with self._lock:
            self.dropped[reason] += count

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        """Both counters, copied."""
        with self._lock:
            return dict(self.rejected), dict(self.dropped)


class HttpCollector:
    """The HTTP layer's families; every known reason is exported, at 0 until it happens."""

    def __init__(self, stats: HttpStats) -> None:
        self._stats = stats

    def describe(self) -> Iterable[Metric]:
        """Same families as collect()."""
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        """Fresh families from the counts."""
        rejected, dropped = self._stats.snapshot()
        yield _by_reason(
            "msgsms_http_requests_rejected",
            "Requests refused by the HTTP layer before or around the routes, by reason.",
            REQUEST_REASONS,
            rejected,
        )
        yield _by_reason(
            "msgsms_http_connections_dropped",
            "Connections closed by the server without an answer, by reason.",
            DROP_REASONS,
            dropped,
        )
        yield GaugeMetricFamily(
            "msgsms_http_connections", "Client connections open now.", self._stats.connections
        )
        yield GaugeMetricFamily(
            "msgsms_http_connections_limit",
            "Connections held at most; at the limit the oldest still in its request goes.",
            self._stats.limit,
        )


def _by_reason(
    name: str, documentation: str, reasons: Iterable[str], counts: dict[str, int]
) -> CounterMetricFamily:
    """A counter family with a series for every known reason, 0 until it happens."""
    family = CounterMetricFamily(name, documentation, labels=["reason"])
    for reason in reasons:
        family.add_metric([reason], counts.get(reason, 0))
    return family
