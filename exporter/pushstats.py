"""What the status-report receiver did: counts by endpoint and reason, and their collector."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from exporter.pushstore import ReportStore
from exporter.stats import Histogram, le_label

ACK_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def _observe(histograms: dict[str, Histogram], key: str, seconds: float) -> None:
    histogram = histograms.get(key)
    if histogram is None:
        histogram = histograms[key] = Histogram(ACK_BUCKETS)
    histogram.observe(seconds)


def _histogram(family: HistogramMetricFamily, histograms: dict[str, Histogram]) -> None:
    for key, histogram in sorted(histograms.items()):
        value = histogram.value()
        family.add_metric([key], [(le_label(b), n) for b, n in value.buckets], value.total)


@dataclass(slots=True)
class ReceiverStats:
    """What the receiver did, by endpoint and reason; read by :class:`PushCollector`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    reports: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(account, ``single`` | ``batch``) → reports stored."""
    duplicates: Counter[str] = field(default_factory=Counter)
    folded: Counter[str] = field(default_factory=Counter)
    unattributed: int = 0
    registrations: Counter[str] = field(default_factory=Counter)
    """account → send registrations stored."""
    ack: dict[str, Histogram] = field(default_factory=dict)
    writes: dict[str, Histogram] = field(default_factory=dict)
    store_errors: Counter[str] = field(default_factory=Counter)
    last_push: dict[tuple[str, str], float] = field(default_factory=dict)
    """(account, ``report`` | ``registration``) → when one was last accepted."""

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        with self.lock:
            self.requests[(endpoint, str(status))] += 1
            _observe(self.ack, endpoint, seconds)

    def write(self, operation: str, seconds: float, *, failed: bool) -> None:
        """Count one store write (``reports`` or ``registrations``) and how long it took."""
        with self.lock:
            _observe(self.writes, operation, seconds)
            if failed:
                self.store_errors[operation] += 1

    def reject(self, reasons: Iterable[str]) -> None:
        """Count rejected requests or items by reason."""
        with self.lock:
            self.rejected.update(reasons)


class PushCollector:
    """The receiver's counters.

    msgsms_push_requests_total{endpoint="batch",code="200"} 12
    msgsms_push_rejected_total{reason="missing_field"} 1
    msgsms_push_reports_total{kind="batch"} 598
    """

    def __init__(self, stats: ReceiverStats, store: ReportStore) -> None:
        self._stats = stats
        self._store = store

    def describe(self) -> list[Metric]:
        """The families, without reading anything."""
        return self._families()

    def collect(self) -> list[Metric]:
        """Fresh families from the counts."""
        return self._families()

    def _families(self) -> list[Metric]:
        s = self._stats
        requests = CounterMetricFamily(
            "msgsms_push_requests",
            "Push and registration requests answered, by endpoint and HTTP code.",
            labels=["endpoint", "code"],
        )
        rejected = CounterMetricFamily(
            "msgsms_push_rejected",
            "Rejected push requests, and rejected items of batches, by reason.",
            labels=["reason"],
        )
        reports = CounterMetricFamily(
            "msgsms_push_reports",
            "Status reports stored, by the account pushed for and push kind (a copy of a"
            " stored report is a duplicate; a final report replacing a non-final one counts).",
            labels=["account", "kind"],
        )
        duplicates = CounterMetricFamily(
            "msgsms_push_duplicates",
            "Reports or registrations received again and ignored.",
            labels=["kind"],
        )
        unattributed = CounterMetricFamily(
            "msgsms_push_unattributed_reports",
            'Reports stored under template="unknown": not registered, no template in extend.',
        )
        registrations = CounterMetricFamily(
            "msgsms_push_registrations",
            "Send registrations stored, by account.",
            labels=["account"],
        )
        folded = CounterMetricFamily(
            "msgsms_push_templates_folded",
            'Reports and registrations counted under template="other": more templates than'
            " receiver.max_templates.",
            labels=["kind"],
        )
        commits = CounterMetricFamily(
            "msgsms_push_store_commits", "Store transactions committed (group commit)."
        )
        pruned = CounterMetricFamily(
            "msgsms_push_store_pruned_messages", "Messages deleted after the retention."
        )
        ack = HistogramMetricFamily(
            "msgsms_push_ack_duration_seconds",
            "Time from a push request's routing to its answer (includes the commit).",
            labels=["endpoint"],
        )
        writes = HistogramMetricFamily(
            "msgsms_push_store_write_duration_seconds",
            "Time a request waited for its write to be committed (group commit included).",
            labels=["operation"],
        )
        errors = CounterMetricFamily(
            "msgsms_push_store_errors",
            "Store writes that failed (the request was answered 503, nothing stored).",
            labels=["operation"],
        )
        size = GaugeMetricFamily(
            "msgsms_push_store_size_bytes",
            "Size of the push store (the database), measured about once a minute.",
        )
        up = GaugeMetricFamily(
            "msgsms_push_store_up",
            "1 while the push store takes writes; 0 from a failed use (a write, a read, a"
            " readiness check) until a write (or write test) succeeds again.",
        )
        last_report = GaugeMetricFamily(
            "msgsms_push_last_report_timestamp_seconds",
            "When this process last accepted a status report for the account (start if none).",
            labels=["account"],
        )
        last_registration = GaugeMetricFamily(
            "msgsms_push_last_registration_timestamp_seconds",
            "When this process last accepted a send registration for the account (start if none).",
            labels=["account"],
        )
        with s.lock:
            for (endpoint, code), n in sorted(s.requests.items()):
                requests.add_metric([endpoint, code], n)
            for reason, n in sorted(s.rejected.items()):
                rejected.add_metric([reason], n)
            accounts = sorted({a for a, _ in s.last_push} | {a for a, _ in s.reports})
            for account in accounts:
                for kind in ("single", "batch"):
                    reports.add_metric([account, kind], s.reports[(account, kind)])
                registrations.add_metric([account], s.registrations[account])
            for kind in ("report", "registration"):
                duplicates.add_metric([kind], s.duplicates[kind])
                folded.add_metric([kind], s.folded[kind])
            unattributed.add_metric([], s.unattributed)
            _histogram(ack, s.ack)
            _histogram(writes, s.writes)
            for operation in ("reports", "registrations"):
                errors.add_metric([operation], s.store_errors[operation])
            for (account, kind), at in sorted(s.last_push.items()):
                (last_report if kind == "report" else last_registration).add_metric([account], at)
        commits.add_metric([], self._store.commits)
        pruned.add_metric([], self._store.pruned)
        size.add_metric([], self._store.size_bytes)
        up.add_metric([], 1 if self._store.up else 0)
        return [
            requests,
            rejected,
            reports,
            duplicates,
            unattributed,
            registrations,
            folded,
            commits,
            pruned,
            ack,
            writes,
            errors,
            size,
            up,
            last_report,
            last_registration,
        ]
