"""The poll loop of one account: read the window, fold it into tallies, publish a snapshot."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from exporter.config import RESOLUTION_SECONDS, AccountConfig, Config
from exporter.errors import UpstreamError
from exporter.fetch import DetailsSource, read_range
from exporter.ledger import Growth, TemplateLedger, tally_by_bucket
from exporter.records import DetailsQuery, SendResult
from exporter.sharding import UNSHARDED, Shard, owns
from exporter.snapshot import AccountSnapshot, WindowSnapshot, summarize
from exporter.status_codes import StatusCategory
from exporter.templates import SmsTemplate
from exporter.timestamps import format_rfc3339

TEMPLATE_REFRESH_SECONDS = 600.0

log = structlog.get_logger("msgsms_exporter.poller")


def window_name(seconds: float) -> str:
    """A window length as a Prometheus duration label: ``1h``, ``90m``, ``24h``."""
    whole = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole % size == 0 and whole >= size and not (unit == "d" and whole < 86400 * 2):
            return f"{whole // size}{unit}"
    return f"{whole}s"


@dataclass(slots=True)
class _Counters:
    sent: Counter[str] = field(default_factory=Counter)
    finalized: Counter[tuple[str, SendResult, StatusCategory]] = field(default_factory=Counter)
    fetched: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def add(self, template_id: str, growth: Growth) -> None:
        self.sent[template_id] += growth.sent
        for (result, category), count in growth.finalized.items():
            self.finalized[(template_id, result, category)] += count


class Poller:
    """Polls one account; ``poll()`` returns the snapshot to publish."""

    def __init__(
        self,
        account: AccountConfig,
        config: Config,
        source: DetailsSource,
        *,
        clock: Callable[[], float] = time.time,
        shard: Shard = UNSHARDED,
    ) -> None:
        self.account = account
        self.shard = shard
        self.config = config
        self.source = source
        self._clock = clock
        self._ledgers: dict[str, TemplateLedger] = {}
        self._counters = _Counters()
        self._templates: tuple[SmsTemplate, ...] = ()
        self._templates_at = float("-inf")
        self._last: AccountSnapshot = AccountSnapshot(
            account=account.name, up=False, poll_interval=config.poll_interval
        )
        self._failures = 0

    @property
    def last(self) -> AccountSnapshot:
        """The latest snapshot (initially empty and down)."""
        return self._last

    def _refresh_templates(self, now: float) -> tuple[SmsTemplate, ...]:
        if now - self._templates_at < TEMPLATE_REFRESH_SECONDS and self._templates:
            return self._templates
        selection = self.account.templates
        listed = self.source.list_templates()
        if selection.discover:
            chosen = [t for t in listed if selection.selects(t.template_id, t.template_name)]
        else:
            known = {t.template_id: t for t in listed}
            chosen = [known.get(i, SmsTemplate(i, i, "")) for i in selection.ids]
        chosen = [t for t in chosen if owns(self.shard, self.account.name, t.template_id)]
        self._templates = tuple(sorted(chosen, key=lambda t: t.template_id))
        self._templates_at = now
        return self._templates

    def _read_template(self, template_id: str, start: int, end: int) -> Growth:
        growth = Growth()
        ledger = self._ledgers.setdefault(template_id, TemplateLedger())
        span = int(self.config.max_query_span)
        for chunk_start in range(start, end, span):
            chunk_end = min(end, chunk_start + span)
            read = read_range(
                self.source,
                DetailsQuery(
                    start_time=chunk_start,
                    end_time=chunk_end,
                    template_id=template_id,
                    limit=self.config.page_size,
                ),
            )
            self._counters.fetched += len(read.records)
            self._counters.rejected.update(read.rejected)
            tallies = tally_by_bucket(read.records, RESOLUTION_SECONDS)
            growth.merge(ledger.replace(chunk_start, chunk_end, RESOLUTION_SECONDS, tallies))
        return growth

    def poll(self) -> AccountSnapshot:
        """Read the whole window of every template and return the new snapshot."""
        started = time.perf_counter()
        now = self._clock()
        end = int(now // RESOLUTION_SECONDS) * RESOLUTION_SECONDS
        start = end - int(self.config.window)
        requests_before = self.source.stats.request_count
        try:
            templates = self._refresh_templates(now)
            for template in templates:
                self._counters.add(
                    template.template_id, self._read_template(template.template_id, start, end)
                )
        except UpstreamError as exc:
            self._failures += 1
            self._last = self._failed(exc, time.perf_counter() - started)
            log.warning(
                "poll failed",
                account=self.account.name,
                reason=exc.reason,
                error=str(exc),
                consecutive_failures=self._failures,
            )
            return self._last
        for template_id, ledger in self._ledgers.items():
            ledger.forget_before(start)
            if template_id not in {t.template_id for t in templates}:
                ledger.buckets.clear()
        self._failures = 0
        duration = time.perf_counter() - started
        window = WindowSnapshot(
            name=window_name(self.config.window),
            start=float(start),
            end=float(end),
            complete=True,
            templates=tuple(
                summarize(
                    t.template_id,
                    self._ledgers[t.template_id].window(start, end),
                    self.config.top_status_codes,
                )
                for t in templates
            ),
        )
        self._last = self._snapshot(
            up=True,
            templates=templates,
            windows=(window,),
            last_success=now,
            duration=duration,
            lag=max(0.0, now - end),
        )
        log.info(
            "poll finished",
            account=self.account.name,
            window_start=format_rfc3339(start),
            window_end=format_rfc3339(end),
            templates=len(templates),
            requests=self.source.stats.request_count - requests_before,
            messages=sum(t.total for t in window.templates),
            duration_seconds=round(duration, 3),
        )
        return self._last

    def _failed(self, exc: UpstreamError, duration: float) -> AccountSnapshot:
        previous = self._last
        # The last good window stays for max_staleness polls, then is withdrawn: a number
        # the exporter is no longer sure of is not shown as if it were right.
        stale = self._failures > self.config.max_staleness
        return self._snapshot(
            up=False,
            templates=previous.templates,
            windows=() if stale else previous.windows,
            last_success=previous.last_success,
            duration=duration,
            lag=previous.data_lag,
            error=f"{exc.reason}: {exc}",
        )

    def _snapshot(
        self,
        *,
        up: bool,
        templates: tuple[SmsTemplate, ...],
        windows: tuple[WindowSnapshot, ...],
        last_success: float | None,
        duration: float,
        lag: float,
        error: str = "",
    ) -> AccountSnapshot:
        return AccountSnapshot(
            account=self.account.name,
            up=up,
            poll_interval=self.config.poll_interval,
            templates=templates,
            windows=windows,
            last_success=last_success,
            poll_duration=duration,
            data_lag=lag,
            sent_total=dict(self._counters.sent),
            finalized_total=dict(self._counters.finalized),
            requests=self.source.stats.totals(),
            records_fetched=self._counters.fetched,
            records_rejected=dict(self._counters.rejected),
            last_error=error,
        )

    def run(self, stop: threading.Event, publish: Callable[[AccountSnapshot], None]) -> None:
        """Poll every interval until ``stop`` is set, publishing each snapshot."""
        while not stop.is_set():
            began = time.monotonic()
            publish(self.poll())
            stop.wait(max(0.0, self.config.poll_interval - (time.monotonic() - began)))
