"""The poll loop of one account: refresh templates, advance the engine, publish a snapshot."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import structlog

from exporter.budget import Budget
from exporter.clockskew import (
    NO_SKEW,
    SKEW_TOLERANCE_SECONDS,
    SKEW_WARNING_SECONDS,
    ClockSkew,
)
from exporter.config import AccountConfig, AccountSource, Config
from exporter.engine import Engine, EngineSettings, PollOutcome
from exporter.errors import UpstreamError
from exporter.fetch import DetailsSource
from exporter.ranges import minute_floor
from exporter.sharding import UNSHARDED, Shard, owns
from exporter.snapshot import AccountSnapshot, WindowSnapshot, summarize
from exporter.templates import SmsTemplate
from exporter.timestamps import format_rfc3339

TEMPLATE_REFRESH_SECONDS = 600.0
"""How long a template list read from Huawei is used. A push account's list is its own
store's table (a local query), read at every poll, so a template first pushed is
exported at the next poll rather than up to ten minutes later."""

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
        budget: Budget | None = None,
    ) -> None:
        self.account = account
        self.config = config
        self.source = source
        self.shard = shard
        self.budget = budget or Budget(config.request_budget)
        self._clock = clock
        self.engine = Engine(EngineSettings.of(config, account, shards=shard.count))
        self._last: AccountSnapshot = AccountSnapshot(
            account=account.name, up=False, poll_interval=config.poll_interval
        )
        self.reconfigure(account, config, source)
        self._templates: tuple[SmsTemplate, ...] = ()
        self._templates_at = float("-inf")
        self._relist_after_404 = False
        self._gone: set[str] = set()
        """Configured template ids missing from the list read after a 404 answer:
        deleted upstream, not exported (nor queried) until the list shows them again."""
        self._failures = 0
        self._failed_polls: Counter[str] = Counter()
        self._data_end: float | None = None
        """End of the newest data read (the lag is measured from it, failed polls included)."""
        self.last_outcome: PollOutcome | None = None
        """What the engine's last finished poll did (its requests by step, for benchmarks)."""
        self.skew: ClockSkew | None = None
        """The exporter's clock against the upstream's, from the newest answer's ``Date``
        (None until an answer had one; always None for a push account's own store)."""
        self._dates_measured = 0
        """How many dated answers the source had at the last measurement."""
        self._dates_before = 0
        """How many it had when the poll in progress began: only its own answers are
        measured (one given to ``/details`` between polls may be minutes old)."""
        self._skew_logged: float | None = None
        """The notable skew last logged (None: none, or it went away since)."""

    def reconfigure(self, account: AccountConfig, config: Config, source: DetailsSource) -> None:
        """Apply a reloaded config; tallies, pending messages and counters are kept."""
        before = (self.account, self.config.windows, self.config.top_status_codes)
        settings = self.engine.settings
        self.account, self.config, self.source = account, config, source
        self.engine.reconfigure(EngineSettings.of(config, account, shards=self.shard.count))
        self._templates_at = float("-inf")  # read the template list again
        after = (account, config.windows, config.top_status_codes)
        if before != after or settings != self.engine.settings:
            self._last = self._reframed(self._last)

    def _reframed(self, last: AccountSnapshot) -> AccountSnapshot:
        """The last snapshot under a reloaded config until its first poll: the windows and
        templates it no longer has left out, the others no longer shown as exact."""
        selection = self.account.templates
        names = {window_name(length) for length in self.config.windows}
        ids = {
            t.template_id
            for t in last.templates
            if selection.selects(t.template_id, t.template_name)
            and owns(self.shard, self.account.name, t.template_id)
        }
        windows = tuple(
            replace(
                w,
                complete=False,
                templates=tuple(t for t in w.templates if t.template_id in ids),
            )
            for w in last.windows
            if w.name in names
        )
        return replace(
            last,
            templates=tuple(t for t in last.templates if t.template_id in ids),
            windows=windows,
            poll_interval=self.config.poll_interval,
        )

    @property
    def last(self) -> AccountSnapshot:
        """The latest snapshot (initially empty and down)."""
        return self._last

    def _refresh_templates(self, now: float) -> tuple[SmsTemplate, ...]:
        listed_lately = now - self._templates_at < TEMPLATE_REFRESH_SECONDS and self._templates
        if listed_lately and self.account.source != AccountSource.PUSH:
            return self._templates
        selection = self.account.templates
        listed = self.source.list_templates()
        if selection.discover:
            chosen = [t for t in listed if selection.selects(t.template_id, t.template_name)]
        else:
            known = {t.template_id: t for t in listed}
            # A configured id the list lacks is still exported (as zeros until it sends),
            # unless a 404 showed it deleted: one such template would fail every poll.
            if self._relist_after_404:
                self._gone.update(i for i in selection.ids if i not in known)
            self._gone.intersection_update(i for i in selection.ids if i not in known)
            chosen = [
                known.get(i, SmsTemplate(i, i, "")) for i in selection.ids if i not in self._gone
            ]
        self._relist_after_404 = False
        chosen = [t for t in chosen if owns(self.shard, self.account.name, t.template_id)]
        self._templates = tuple(sorted(chosen, key=lambda t: t.template_id))
        self._templates_at = now
        return self._templates

    def poll(self) -> AccountSnapshot:
        """One poll: read what changed and return the new snapshot."""
        started = time.perf_counter()
        now = self._clock()
        requests_before = self.source.stats.request_count
        applied = self.skew or NO_SKEW
        dated = self.source.stats.newest_date()
        self._dates_before = 0 if dated is None else dated.count
        try:
            templates = self._refresh_templates(now)
            ids = [t.template_id for t in templates]
            applied = self._measure_skew()  # the first poll's template list tells it
            # Minutes are settled on the upstream's clock, which stamps the send times.
            outcome = self.engine.poll(self.source, ids, now - applied.correction, self.budget)
        except UpstreamError as exc:
            self._measure_skew()
            if exc.status == 404:
                self._templates_at = float("-inf")  # a template may be gone: list again
                self._relist_after_404 = True
            self._failures += 1
            self._failed_polls[exc.reason] += 1
            upstream_now = now - applied.correction
            self._last = self._failed(exc, upstream_now, time.perf_counter() - started)
            log.warning(
                "poll failed",
                account=self.account.name,
                reason=exc.reason,
                error=str(exc),
                consecutive_failures=self._failures,
            )
            return self._last
        self._failures = 0
        self.last_outcome = outcome
        duration = time.perf_counter() - started
        # Measured again after the poll's answers: had the exporter's clock jumped ahead
        # since the last measurement, the newest minutes may have been read unsettled.
        after = self._measure_skew()
        settled = after.correction - applied.correction < SKEW_TOLERANCE_SECONDS or (
            outcome.end <= minute_floor(now - after.correction - self.engine.settings.settle_delay)
        )
        windows = self._windows(templates, outcome, sure=settled and not applied.uncorrected)
        book = self.engine.book
        newest = book.newest_read_end() or outcome.end
        self._data_end = float(min(newest, outcome.end))
        self._last = self._snapshot(
            up=True,
            templates=templates,
            windows=windows,
            last_success=now,
            duration=duration,
            lag=max(0.0, now - applied.correction - self._data_end),
        )
        log.info(
            "poll finished",
            account=self.account.name,
            window_end=format_rfc3339(outcome.end),
            complete=all(w.complete for w in windows),
            templates=len(templates),
            requests=self.source.stats.request_count - requests_before,
            pending=book.pending_count(),
            duration_seconds=round(duration, 3),
            **({"partial": outcome.cut_short} if outcome.cut_short else {}),
        )
        return self._last

    def _measure_skew(self) -> ClockSkew:
        """The skew as of the newest dated answer: measured again when this poll had one
        since the last measurement. The exporter's clock is the one read as that answer
        arrived, after its ``Date`` was written, so the skew errs towards the exporter
        being ahead by the answer's flight and ``Date``'s lost fraction of a second; never
        by the work the poll did after it (a second or more for a busy minute)."""
        newest = self.source.stats.newest_date()
        if newest is None or newest.count <= max(self._dates_measured, self._dates_before):
            return self.skew or NO_SKEW
        self._dates_measured = newest.count
        self.skew = ClockSkew(newest.received - newest.date)
        logged = self._skew_logged
        if self.skew.notable and (
            logged is None or abs(self.skew.seconds - logged) >= SKEW_WARNING_SECONDS
        ):
            self._skew_logged = self.skew.seconds
            log.warning(
                "upstream clock differs",
                account=self.account.name,
                exporter_ahead_seconds=round(self.skew.seconds, 1),
                window_moved_back_seconds=round(self.skew.correction, 1),
                **({"windows": "incomplete"} if self.skew.uncorrected else {}),
            )
        elif logged is not None and not self.skew.notable:
            self._skew_logged = None
            log.info("upstream clock agrees again", account=self.account.name)
        return self.skew

    def _windows(
        self, templates: tuple[SmsTemplate, ...], outcome: PollOutcome, *, sure: bool = True
    ) -> tuple[WindowSnapshot, ...]:
        out = []
        book = self.engine.book
        end = outcome.end
        for length in self.config.windows:
            start = end - int(length)
            out.append(
                WindowSnapshot(
                    name=window_name(length),
                    start=float(start),
                    end=float(end),
                    complete=sure and outcome.checks_done and book.unread_minutes(start, end) == 0,
                    templates=tuple(
                        summarize(
                            t.template_id,
                            book.window(t.template_id, start, end),
                            self.config.top_status_codes,
                        )
                        for t in templates
                    ),
                )
            )
        return tuple(out)

    def _failed(self, exc: UpstreamError, now: float, duration: float) -> AccountSnapshot:
        previous = self._last
        # The last good window stays for max_staleness polls, then is withdrawn: a number
        # the exporter is no longer sure of is not shown as if it were right.
        # Kept, it is no longer the window up to now: marked incomplete, not shown as exact.
        stale = self._failures > self.config.max_staleness
        kept = tuple(replace(w, complete=False) for w in previous.windows)
        return self._snapshot(
            up=False,
            templates=previous.templates,
            windows=() if stale else kept,
            last_success=previous.last_success,
            duration=duration,
            # The data ages while polls fail: poll time - end of the newest data read.
            lag=previous.data_lag if self._data_end is None else max(0.0, now - self._data_end),
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
        counters = self.engine.book.counters
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
            poll_failures=dict(self._failed_polls),
            last_error=error,
            clock_skew=None if self.skew is None else self.skew.seconds,
        )
