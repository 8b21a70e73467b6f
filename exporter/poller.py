"""The poll loop of one account: refresh templates, advance the engine, publish a snapshot."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from exporter.config import AccountConfig, Config
from exporter.engine import BudgetExhausted, Engine, PollOutcome
from exporter.errors import UpstreamError
from exporter.fetch import DetailsSource
from exporter.sharding import UNSHARDED, Shard, owns
from exporter.snapshot import AccountSnapshot, WindowSnapshot, summarize
from exporter.templates import SmsTemplate
from exporter.timestamps import format_rfc3339

TEMPLATE_REFRESH_SECONDS = 600.0

log = structlog.get_logger("msgsms_exporter.poller")


def window_name(seconds: float) -> str:
    """A window length as a Prometheus duration label: ``1h``, ``90m``, ``24h``."""
    whole = int(seconds)
    for unit, size in (("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


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
        self.config = config
        self.source = source
        self.shard = shard
        self._clock = clock
        self.engine = Engine(config, cross_template=False)
        self.reconfigure(account, config, source)
        self._templates: tuple[SmsTemplate, ...] = ()
        self._templates_at = float("-inf")
        self._last: AccountSnapshot = AccountSnapshot(
            account=account.name, up=False, poll_interval=config.poll_interval
        )
        self._failures = 0

    def reconfigure(self, account: AccountConfig, config: Config, source: DetailsSource) -> None:
        """Apply a reloaded config; tallies, pending messages and counters are kept."""
        self.account, self.config, self.source = account, config, source
        selection = account.templates
        # One query for all templates only when all are exported: a shard or a filtered
        # selection would otherwise pay for records it throws away.
        everything = selection.discover and not selection.include and not selection.exclude
        self.engine.config = config
        self.engine.full_scan = config.engine == "full_scan"
        self.engine.cross_template = everything and self.shard.count == 1
        self.engine.cross_template &= not self.engine.full_scan
        self._templates_at = float("-inf")  # read the template list again

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

    def poll(self) -> AccountSnapshot:
        """One poll: read what changed and return the new snapshot."""
        started = time.perf_counter()
        now = self._clock()
        requests_before = self.source.stats.request_count
        partial = ""
        try:
            templates = self._refresh_templates(now)
            self.engine.poll(self.source, [t.template_id for t in templates], now)
        except BudgetExhausted as exc:
            partial = str(exc)
        except UpstreamError as exc:
            if exc.status == 404:
                self._templates_at = float("-inf")  # a template may be gone: list again
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
        self._failures = 0
        outcome = self.engine.last
        assert outcome is not None
        duration = time.perf_counter() - started
        windows = self._windows(templates, outcome)
        newest = self.engine.newest_read_end() or outcome.end
        self._last = self._snapshot(
            up=True,
            templates=templates,
            windows=windows,
            last_success=now,
            duration=duration,
            lag=max(0.0, now - min(newest, outcome.end)),
        )
        log.info(
            "poll finished",
            account=self.account.name,
            window_end=format_rfc3339(outcome.end),
            complete=all(w.complete for w in windows),
            templates=len(templates),
            requests=self.source.stats.request_count - requests_before,
            pending=self.engine.pending_count(),
            duration_seconds=round(duration, 3),
            **({"partial": partial} if partial else {}),
        )
        return self._last

    def _windows(
        self, templates: tuple[SmsTemplate, ...], outcome: PollOutcome
    ) -> tuple[WindowSnapshot, ...]:
        out = []
        end = outcome.end
        for length in self.config.windows:
            start = end - int(length)
            out.append(
                WindowSnapshot(
                    name=window_name(length),
                    start=float(start),
                    end=float(end),
                    complete=outcome.checks_done and self.engine.unread_minutes(start, end) == 0,
                    templates=tuple(
                        summarize(
                            t.template_id,
                            self.engine.window(t.template_id, start, end),
                            self.config.top_status_codes,
                        )
                        for t in templates
                    ),
                )
            )
        return tuple(out)

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
        counters = self.engine.counters
        return AccountSnapshot(
            account=self.account.name,
            up=up,
            poll_interval=self.config.poll_interval,
            templates=templates,
            windows=windows,
            last_success=last_success,
            poll_duration=duration,
            data_lag=lag,
            sent_total=dict(counters.sent),
            finalized_total=dict(counters.finalized),
            requests=self.source.stats.totals(),
            records_fetched=counters.fetched,
            records_rejected=dict(counters.rejected),
            last_error=error,
        )

    def run(self, stop: threading.Event, publish: Callable[[AccountSnapshot], None]) -> None:
        """Poll every interval until ``stop`` is set, publishing each snapshot."""
        while not stop.is_set():
            began = time.monotonic()
            publish(self.poll())
            stop.wait(max(0.0, self.config.poll_interval - (time.monotonic() - began)))
