"""Translate the latest snapshots into Prometheus metric families; no I/O here."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.errors import UPSTREAM_REASONS
from exporter.records import REJECT_REASONS, SendResult
from exporter.snapshot import AccountSnapshot
from exporter.stats import le_label
from exporter.status_codes import StatusCategory

REFRESHED = "Refreshed every poll, not on scrape."
_FINAL_OUTCOMES: tuple[tuple[SendResult, StatusCategory], ...] = (
    (SendResult.SUCCESS, StatusCategory.DELIVERED),
    *((SendResult.FAILED, c) for c in StatusCategory if c is not StatusCategory.DELIVERED),
)


class _Families:
    """The exporter's metric families, created fresh for each collection."""

    def __init__(self) -> None:
        g, c = GaugeMetricFamily, CounterMetricFamily
        self.window_messages = g(
            "msgsms_window_messages",
            f"Messages sent in the window, by current send result. {REFRESHED}",
            labels=["account", "template", "window", "result"],
        )
        self.window_codes = g(
            "msgsms_window_status_code_messages",
            f"Final messages sent in the window by status code (top N, rest as 'other'). "
            f"{REFRESHED}",
            labels=["account", "template", "window", "status_code", "category"],
        )
        self.window_delay = GaugeHistogramMetricFamily(
            "msgsms_window_delivery_delay_seconds",
            f"Receive time minus send time of the window's delivered messages. {REFRESHED}",
            labels=["account", "template", "window"],
        )
        self.window_start = g(
            "msgsms_window_start_timestamp_seconds",
            "Start (inclusive) of the sending-time window the window metrics cover.",
            labels=["account", "window"],
        )
        self.window_end = g(
            "msgsms_window_end_timestamp_seconds",
            "End (exclusive) of the sending-time window the window metrics cover.",
            labels=["account", "window"],
        )
        self.window_complete = g(
            "msgsms_window_complete",
            "1 when every range of the window has been read, 0 while backfilling or partial.",
            labels=["account", "window"],
        )
        self.data_lag = g(
            "msgsms_data_lag_seconds",
            "How far the newest data counted lags behind the poll time.",
            labels=["account"],
        )
        self.clock_skew = g(
            "msgsms_upstream_clock_skew_seconds",
            "How far the exporter's clock is ahead of the upstream's (negative: behind), "
            "from the newest answer's Date header; windows end that much earlier when ahead.",
            labels=["account"],
        )
        self.template_info = g(
            "msgsms_template_info",
            "Template metadata from the template list; always 1.",
            labels=["account", "template", "template_name", "template_type"],
        )
        self.sent = c(
            "msgsms_messages_sent",
            "Messages counted once, when first seen by the exporter.",
            labels=["account", "template"],
        )
        self.finalized = c(
            "msgsms_messages_finalized",
            "Messages counted once, when first seen with a final status.",
            labels=["account", "template", "result", "category"],
        )
        self.up = g(
            "msgsms_up", "1 when the last poll of the account succeeded.", labels=["account"]
        )
        self.last_success = g(
            "msgsms_last_poll_success_timestamp_seconds",
            "When the last successful poll started (0: never).",
            labels=["account"],
        )
        self.poll_duration = g(
            "msgsms_poll_duration_seconds", "Duration of the last poll.", labels=["account"]
        )
        self.poll_interval = g(
            "msgsms_poll_interval_seconds", "Configured poll interval.", labels=["account"]
        )
        self.requests = c(
            "msgsms_upstream_requests",
            "Upstream requests by endpoint and HTTP code ('error' for transport failures).",
            labels=["account", "endpoint", "code"],
        )
        self.request_duration = HistogramMetricFamily(
            "msgsms_upstream_request_duration_seconds",
            "Upstream request duration.",
            labels=["account", "endpoint"],
        )
        self.throttled = c(
            "msgsms_upstream_throttled", "Upstream answers of HTTP 429.", labels=["account"]
        )
        self.retries = c(
            "msgsms_upstream_retries", "Upstream requests retried.", labels=["account"]
        )
        self.fetched = c(
            "msgsms_records_fetched", "Sending-detail records read.", labels=["account"]
        )
        self.rejected = c(
            "msgsms_records_rejected",
            "Sending-detail records skipped as malformed, by reason.",
            labels=["account", "reason"],
        )
        self.poll_failures = c(
            "msgsms_poll_failures",
            "Polls that failed, by reason (the upstream was unavailable, rejected or malformed).",
            labels=["account", "reason"],
        )
        self.build_info = g("msgsms_build_info", "Build information; always 1.", labels=["version"])

    def all(self) -> list[Metric]:
        return list(vars(self).values())


def _add_account(f: _Families, snap: AccountSnapshot) -> None:
    account = snap.account
    for window in snap.windows:
        f.window_start.add_metric([account, window.name], window.start)
        f.window_end.add_metric([account, window.name], window.end)
        f.window_complete.add_metric([account, window.name], 1.0 if window.complete else 0.0)
        for tw in window.templates:
            labels = [account, tw.template_id, window.name]
            for result, value in (
                (SendResult.SUCCESS, tw.success),
                (SendResult.FAILED, tw.failed),
                (SendResult.SENDING, tw.sending),
            ):
                f.window_messages.add_metric([*labels, result.value], value)
            for code in tw.codes:
                f.window_codes.add_metric(
                    [*labels, code.status_code, code.category.value], code.count
                )
            f.window_delay.add_metric(
                labels,
                [(le_label(bound), count) for bound, count in tw.delay_buckets],
                tw.delay_sum,
            )
    f.data_lag.add_metric([account], snap.data_lag)
    if snap.clock_skew is not None:
        f.clock_skew.add_metric([account], snap.clock_skew)
    for template in snap.templates:
        f.template_info.add_metric(
            [account, template.template_id, template.template_name, template.template_type], 1
        )
        tid = template.template_id
        f.sent.add_metric([account, tid], snap.sent_total.get(tid, 0))
        for result, category in _FINAL_OUTCOMES:
            f.finalized.add_metric(
                [account, tid, result.value, category.value],
                snap.finalized_total.get((tid, result, category), 0),
            )
    f.up.add_metric([account], 1.0 if snap.up else 0.0)
    # 0 until the first success, so staleness alerts fire for an exporter that never succeeds.
    f.last_success.add_metric([account], snap.last_success or 0.0)
    if snap.poll_duration is not None:
        f.poll_duration.add_metric([account], snap.poll_duration)
    f.poll_interval.add_metric([account], snap.poll_interval)
    for (endpoint, status), count in sorted(snap.requests.by_code.items()):
        f.requests.add_metric([account, endpoint, status], count)
    for endpoint, hist in sorted(snap.requests.durations.items()):
        f.request_duration.add_metric(
            [account, endpoint],
            [(le_label(bound), count) for bound, count in hist.buckets],
            hist.total,
        )
    f.throttled.add_metric([account], snap.requests.throttled)
    f.retries.add_metric([account], snap.requests.retries)
    f.fetched.add_metric([account], snap.records_fetched)
    for reason in sorted({*REJECT_REASONS, *snap.records_rejected}):
        f.rejected.add_metric([account, reason], snap.records_rejected.get(reason, 0))
    for reason in sorted({*UPSTREAM_REASONS, *snap.poll_failures}):
        f.poll_failures.add_metric([account, reason], snap.poll_failures.get(reason, 0))


class DeliveryCollector(Collector):
    """Exports the latest snapshot of every account.

    msgsms_window_messages{account="default",template="SMS_001",window="1h",result="failed"} 12
    msgsms_window_status_code_messages{...,status_code="E200018",category="platform_config"} 3
    msgsms_up{account="default"} 1
    """

    def __init__(self, snapshots: Callable[[], Sequence[AccountSnapshot]]) -> None:
        self._snapshots = snapshots

    def describe(self) -> Iterable[Metric]:
        """The families, without samples (keeps registration free of work)."""
        return _Families().all()

    def collect(self) -> Iterator[Metric]:
        """Fresh families from the latest snapshots."""
        families = _Families()
        families.build_info.add_metric([__version__], 1)
        for snap in self._snapshots():
            _add_account(families, snap)
        yield from families.all()
