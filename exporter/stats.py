"""Counts kept while the exporter works: histogram buckets, and upstream request accounting.

Shared by the upstream client, the push store and the ledger, so none of them imports
another to count: a bucket is found, and cumulative counts are built, in one place.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate

REQUEST_DURATION_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
INF = float("inf")


@dataclass(frozen=True, slots=True)
class HistogramValue:
    """A finished histogram: cumulative bucket counts, sum and count."""

    buckets: tuple[tuple[float, int], ...]
    total: float
    count: int


@dataclass(frozen=True, slots=True)
class RequestTotals:
    """Upstream request accounting at the end of a poll."""

    by_code: dict[tuple[str, str], int] = field(default_factory=dict)
    durations: dict[str, HistogramValue] = field(default_factory=dict)
    throttled: int = 0
    retries: int = 0


def le_label(bound: float) -> str:
    """A bucket bound as the ``le`` label: ``0.005``, ``1.0``, ``+Inf``."""
    return "+Inf" if bound == INF else str(float(bound))


def bucket_index(bounds: Sequence[float], value: float) -> int:
    """The bucket ``value`` falls in: the first bound it does not exceed (``len`` for +Inf)."""
    return bisect_left(bounds, value)


def cumulative(bounds: Sequence[float], counts: Sequence[int]) -> tuple[tuple[float, int], ...]:
    """Per-bucket counts as Prometheus wants them: (upper bound, count at or below), +Inf last."""
    return tuple(zip([*bounds, INF], accumulate(counts), strict=True))


@dataclass(slots=True)
class Histogram:
    """Observations counted into fixed buckets, with their sum."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bucket_index(self.bounds, value)] += 1
        self.total += value

    def value(self) -> HistogramValue:
        """A frozen copy: cumulative buckets, sum and count."""
        return HistogramValue(cumulative(self.bounds, self.counts), self.total, sum(self.counts))


@dataclass(frozen=True, slots=True)
class DatedAnswer:
    """The newest upstream answer that had a ``Date``: after how many such answers, its
    ``Date`` and the exporter's clock when it arrived (epoch seconds both)."""

    count: int
    date: float
    received: float


class RequestStats:
    """Counts of upstream requests by endpoint and code, and their durations; the
    ``Date`` of the newest answer (the upstream's clock, see :mod:`exporter.clockskew`)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock  # the exporter's: when a dated answer arrived
        self._by_code: Counter[tuple[str, str]] = Counter()
        self._durations: dict[str, Histogram] = {}
        self.throttled = 0
        self.retries = 0
        self._answers_dated = 0
        self._newest_date: DatedAnswer | None = None

    def observe(self, endpoint: str, code: str, seconds: float) -> None:
        """Record one finished request."""
        with self._lock:
            self._by_code[(endpoint, code)] += 1
            histogram = self._durations.get(endpoint)
            if histogram is None:
                histogram = self._durations[endpoint] = Histogram(REQUEST_DURATION_BUCKETS)
            histogram.observe(seconds)
            if code == "429":
                self.throttled += 1

    def observe_date(self, date: float | None) -> None:
        """Note the ``Date`` of an answer just received (None: it had none that parsed),
        with the exporter's clock as it arrived."""
        if date is None:
            return
        received = self._clock()
        with self._lock:
            self._answers_dated += 1
            self._newest_date = DatedAnswer(self._answers_dated, date, received)

    def newest_date(self) -> DatedAnswer | None:
        """The newest answer that had a ``Date``."""
        with self._lock:
            return self._newest_date

    def count_retry(self) -> None:
        """Record that a failed request is being tried again."""
        with self._lock:
            self.retries += 1

    def totals(self) -> RequestTotals:
        """A frozen copy for the snapshot."""
        with self._lock:
            return RequestTotals(
                by_code=dict(self._by_code),
                durations={e: h.value() for e, h in self._durations.items()},
                throttled=self.throttled,
                retries=self.retries,
            )

    @property
    def request_count(self) -> int:
        """Requests made so far, whatever their outcome."""
        with self._lock:
            return sum(self._by_code.values())
