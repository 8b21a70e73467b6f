"""The incremental engine: each poll pays for what changed in the window, not for the window.

Sending details change in three ways only: new messages arrive, pending ones resolve
(up to 72 h later) and messages held for review appear late with their original send
time. Per poll the engine therefore

1. reads the minutes it has never read, newest first (at start-up: the whole window).
   In steady state one query starting at the review-hold horizon, offset past the
   records already known there, reads the new minute and proves that no held message
   appeared (an older record in its answer would be one);
2. otherwise checks the horizon with ``total`` queries, bisecting to the minutes (and,
   across templates, to the template) that changed, and reads only those again;
3. scans the ``send_result=sending`` records of the minutes holding pending messages,
   and reads just the messages that resolved, in narrow coalesced ranges.

A minute is first read ``settle_delay`` after it ends, when most of its messages are
final, so step 3 stays small. State is per-minute tallies plus the ids of messages still
pending (bounded by the pending volume, not the message volume). A pending message is
followed until its status report can no longer come (72 h), even after its minute left
every window (then in a compact form, :class:`LateMinute`), so
``messages_finalized_total`` counts each message once it is final.
Every query goes through a :class:`Budget`; what the budget leaves undone is done next
poll and the window is marked incomplete.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from exporter.config import RESOLUTION_SECONDS, Config
from exporter.errors import ExporterError
from exporter.fetch import PageSource, RangeRead, read_range
from exporter.ledger import Growth, Tally, TemplateLedger, bucket_of
from exporter.records import DetailsPage, DetailsQuery, SendRecord, SendResult
from exporter.status_codes import StatusCategory, categorize

MINUTE = RESOLUTION_SECONDS
READ_CHUNK_MINUTES = 15
RECENT_PENDING_SECONDS = 15 * 60
LATE_RECHECK_SECONDS = 15 * 60
REPORT_DEADLINE_SECONDS = 72 * 3600
"""Status reports arrive up to 72 h after sending (then the platform reports EXPIRED)."""
REPORT_HORIZON_SECONDS = REPORT_DEADLINE_SECONDS + 15 * 60
"""A pending message is given up once past this age, after a scan past its deadline."""
ABANDON_SECONDS = REPORT_HORIZON_SECONDS + 24 * 3600
"""Given up regardless (polls that never reach the pending step must not grow state)."""
MILLI = 0.001


class BudgetExhausted(ExporterError):
    """The poll's request budget is spent; the rest waits for the next poll."""


class Budget:
    """Counts the requests of one poll against a limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.step = "read"
        self.by_step: Counter[str] = Counter()

    def take(self) -> None:
        """Spend one request, or raise BudgetExhausted."""
        if self.used >= self.limit:
            raise BudgetExhausted(f"request budget of {self.limit} spent")
        self.used += 1
        self.by_step[self.step] += 1


class _Budgeted:
    """A page source whose every query is paid from a budget."""

    def __init__(self, source: PageSource, budget: Budget) -> None:
        self._source = source
        self.budget = budget

    def query(self, query: DetailsQuery) -> DetailsPage:
        self.budget.take()
        return self._source.query(query)


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A message last seen without a final status (``records``: of its template in its
    minute, known for messages whose minute left the window)."""

    template_id: str
    minute: int
    send_time: float
    records: int = 0


def late_key(message_id: str) -> int:
    """The 64-bit key a late pending message is kept by (a collision among the pending
    messages of one minute is about as likely as 1 in 10^15)."""
    return hash(message_id)


@dataclass(slots=True)
class LateMinute:
    """Pending messages of one minute that left every window, kept compact for the
    counters: 30 bytes a message (template, id key, send time, records of its template
    in the minute) instead of an object, a string and a dict entry."""

    templates: array[int] = field(default_factory=lambda: array("I"))
    keys: array[int] = field(default_factory=lambda: array("q"))
    times: array[float] = field(default_factory=lambda: array("d"))
    records: array[int] = field(default_factory=lambda: array("I"))

    def add(self, template: int, key: int, send_time: float, records: int) -> None:
        self.templates.append(template)
        self.keys.append(key)
        self.times.append(send_time)
        self.records.append(records)

    def count(self, template: int | None) -> int:
        """Messages of one template (index), or of all."""
        return len(self.keys) if template is None else self.templates.count(template)

    def keep(self, wanted: Callable[[int, int], bool]) -> None:
        """Keep the messages for which ``wanted(template, key)`` is true."""
        kept = [
            i
            for i, (t, k) in enumerate(zip(self.templates, self.keys, strict=True))
            if wanted(t, k)
        ]
        if len(kept) == len(self.keys):
            return
        self.templates = array("I", (self.templates[i] for i in kept))
        self.keys = array("q", (self.keys[i] for i in kept))
        self.times = array("d", (self.times[i] for i in kept))
        self.records = array("I", (self.records[i] for i in kept))


@dataclass(slots=True)
class Counters:
    """Monotonic totals: messages first seen, first seen final, records read or rejected."""

    sent: Counter[str] = field(default_factory=Counter)
    finalized: Counter[tuple[str, SendResult, StatusCategory]] = field(default_factory=Counter)
    fetched: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def grow(self, template_id: str, growth: Growth) -> None:
        """Add what a read revealed about one template."""
        self.sent[template_id] += growth.sent
        for (result, category), count in growth.finalized.items():
            self.finalized[(template_id, result, category)] += count


@dataclass(slots=True)
class PollOutcome:
    """What one engine poll did."""

    end: int
    counters: Counters
    requests: Counter[str] = field(default_factory=Counter)
    checks_done: bool = False

    def grow(self, template_id: str, growth: Growth) -> None:
        self.counters.grow(template_id, growth)

    def count(self, read: RangeRead[Any]) -> None:
        self.counters.fetched += read.fetched
        self.counters.rejected.update(read.rejected)


@dataclass(slots=True)
class _MinuteFold:
    """Folds a range's records into per-template minute tallies as pages arrive."""

    tallies: dict[str, dict[int, Tally]] = field(default_factory=dict)
    pending: dict[str, PendingMessage] = field(default_factory=dict)

    def add(self, record: SendRecord) -> None:
        minute = minute_floor(record.send_time)
        by_minute = self.tallies.setdefault(record.template_id, {})
        tally = by_minute.get(minute)
        if tally is None:
            tally = by_minute[minute] = Tally()
        tally.add(record)
        if record.send_result is SendResult.SENDING:
            self.pending[record.message_id] = PendingMessage(
                record.template_id, minute, record.send_time
            )


class _OlderRecord(Exception):
    """A record older than the new minutes: something appeared in a minute already read."""


@dataclass(slots=True)
class _NewOnly:
    """Folds records of the new minutes; an older record means a hold was released."""

    since: int
    fold: _MinuteFold = field(default_factory=lambda: _MinuteFold())

    def add(self, record: SendRecord) -> None:
        if record.send_time < self.since:
            raise _OlderRecord
        self.fold.add(record)


@dataclass(slots=True)
class _Ids:
    """Collects the message ids of a range."""

    ids: set[str] = field(default_factory=set)

    def add(self, record: SendRecord) -> None:
        self.ids.add(record.message_id)


@dataclass(slots=True)
class _Wanted:
    """Keeps the final records of the wanted messages (by id, or by late key)."""

    wanted: Container[str | int]
    found: list[SendRecord] = field(default_factory=list)

    def add(self, record: SendRecord) -> None:
        if record.send_result is SendResult.SENDING:
            return
        if record.message_id in self.wanted or late_key(record.message_id) in self.wanted:
            self.found.append(record)


def minute_floor(seconds: float) -> int:
    """Start of the minute a timestamp falls in."""
    return bucket_of(seconds, MINUTE)


def runs(minutes: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted minutes as contiguous [start, end) runs."""
    out: list[tuple[int, int]] = []
    for minute in sorted(minutes):
        if out and out[-1][1] == minute:
            out[-1] = (out[-1][0], minute + MINUTE)
        else:
            out.append((minute, minute + MINUTE))
    return out


def chunks_newest_first(spans: list[tuple[int, int]], size: int) -> Iterator[tuple[int, int]]:
    """Split runs into chunks of at most ``size`` seconds, newest chunk first."""
    for start, end in sorted(spans, reverse=True):
        while end > start:
            yield max(start, end - size), end
            end = max(start, end - size)


def coalesce(
    times: list[float], density: float, page_size: int, max_span: float
) -> list[tuple[float, float]]:
    """Group sorted send times into [start, end) ranges expected to fit one page each.

    ``density`` is records per second around them; a gap costs the records inside it.
    No range spans ``max_span`` seconds or more.
    """
    groups: list[tuple[float, float]] = []
    for t in times:
        if groups:
            start, _ = groups[-1]
            if (t - start) * density < page_size * 0.8 and t + MILLI - start <= max_span:
                groups[-1] = (start, t + MILLI)
                continue
        groups.append((t, t + MILLI))
    return groups


def spans_within(minutes: list[int], max_span: float) -> list[list[int]]:
    """Split sorted minutes into groups whose [first, last + 1 min) spans ``max_span`` at most."""
    groups: list[list[int]] = []
    for minute in minutes:
        if groups and minute + MINUTE - groups[-1][0] <= max_span:
            groups[-1].append(minute)
        else:
            groups.append([minute])
    return groups


def _outcome(record: SendRecord) -> tuple[SendResult, StatusCategory]:
    return record.send_result, categorize(record.status_code)


class Engine:
    """Per-account incremental state and the poll that advances it.

    ``cross_template`` reads all templates with one query per range; it is used when
    every template is exported (otherwise each selected template is read on its own,
    so a shard does not pay for the others' records).
    """

    def __init__(self, config: Config, *, cross_template: bool, full_scan: bool = False) -> None:
        self.config = config
        self.cross_template = cross_template and not full_scan
        self.full_scan = full_scan
        self.ledgers: dict[str, TemplateLedger] = {}
        self.pending: dict[str, PendingMessage] = {}
        # Pending messages whose minute left the window, by minute; templates by index.
        self.late: dict[int, LateMinute] = {}
        self.template_names: list[str] = []
        self.template_index: dict[str, int] = {}
        self.late_checked: dict[int, int] = {}  # block of late minutes → when checked
        self.read: set[int] = set()
        self.end: int | None = None
        self.end_before: int | None = None
        self.counters = Counters()
        self.last: PollOutcome | None = None
        # Templates the minutes in ``read`` were read for (all of them, across templates),
        # and the minutes still to read for templates selected after those reads.
        self.active: set[str] = set()
        self.covers_all = True
        self.backfill: dict[str, set[int]] = {}
        # What the counters already hold, so a window that grows (on reload) reads minutes
        # it forgot without counting their messages again: each template's first minute
        # counted, the end of the minutes forgotten, and the minutes forgotten unread.
        self.first_counted: dict[str, int] = {}
        self.forgotten_until: int | None = None
        self.start: int | None = None  # the window's start at the last poll
        self.never_read: set[int] = set()
        # The window end at the last poll whose hold check finished: minutes that left
        # the horizon since then are still due for one (a poll cut by the budget skips it).
        self.holds_checked_end: int | None = None

    # -- the poll -------------------------------------------------------------------

    def poll(self, source: PageSource, templates: list[str], now: float) -> PollOutcome:
        """Advance to ``now``; BudgetExhausted and UpstreamError leave state consistent."""
        end = minute_floor(now - self.config.settle_delay)
        outcome = self.last = PollOutcome(end=end, counters=self.counters)
        budget = Budget(self.config.request_budget)
        paid = _Budgeted(source, budget)
        self._forget_before(end - int(self.config.window), end)
        if self.full_scan:
            self.read.clear()
        self._follow_selection(templates)
        for template_id in templates:
            self.ledgers.setdefault(template_id, TemplateLedger())
        self.end_before, self.end = self.end, end
        earlier = set(self.read)
        try:
            holds_checked = self._read_new_with_hold_check(paid, templates, end, outcome)
            self._read_unread(paid, templates, end, outcome)
            self._read_backfill(paid, templates, outcome)
            if not self.full_scan:
                if not holds_checked:
                    budget.step = "holds"
                    self._check_holds(paid, templates, end, earlier, outcome)
                self.holds_checked_end = end
                budget.step = "pending"
                self._resolve_pending(paid, outcome)
            outcome.checks_done = True
        finally:
            outcome.requests = budget.by_step
        return outcome

    def unread_minutes(self, start: int, end: int) -> int:
        """How many minutes of [start, end) have not been read yet (for every template)."""
        waiting: set[int] = set().union(*self.backfill.values())
        return sum(1 for m in range(start, end, MINUTE) if m not in self.read or m in waiting)

    def pending_count(self) -> int:
        """Messages followed until they are final, inside the window and past it."""
        return len(self.pending) + sum(len(m.keys) for m in self.late.values())

    def newest_read_end(self) -> int | None:
        """End of the newest minute read."""
        return max(self.read) + MINUTE if self.read else None

    def window(self, template_id: str, start: int, end: int) -> Tally:
        """One template's tally over [start, end)."""
        ledger = self.ledgers.get(template_id)
        return ledger.window(start, end, MINUTE) if ledger else Tally()

    # -- steps -----------------------------------------------------------------------

    def _forget_before(self, start: int, end: int) -> None:
        """Drop what precedes the window, but keep following its pending messages, in
        compact form, until their report can no longer come (see ``_resolve_pending``)."""
        leaving = {k: p for k, p in self.pending.items() if p.minute < start}
        if leaving:
            self.pending = {k: p for k, p in self.pending.items() if p.minute >= start}
        if not self.full_scan:
            for message_id, message in leaving.items():
                minute = self.late.get(message.minute)
                if minute is None:
                    minute = self.late[message.minute] = LateMinute()
                records = self._records_in(message.template_id, message.minute)
                index = self._index(message.template_id)
                minute.add(index, late_key(message_id), message.send_time, records)
        abandon = end - ABANDON_SECONDS
        self.late = {m: late for m, late in self.late.items() if m >= abandon}
        for ledger in self.ledgers.values():
            ledger.forget_before(start)
        if self.start is not None and not self.full_scan:
            gone = range(self.start, start, MINUTE)
            self.never_read.update(m for m in gone if m not in self.read)
            self.forgotten_until = max(self.forgotten_until or start, start)
            longest = int(self.config.max_query_span)  # no window is longer
            self.never_read = {m for m in self.never_read if m >= end - longest}
        self.start = start
        self.read = {m for m in self.read if m >= start}
        for minutes in self.backfill.values():
            minutes.intersection_update(self.read)

    def _follow_selection(self, templates: list[str]) -> None:
        """Keep the minutes read valid for the templates selected now.

        Across templates every read covers every template. One template at a time, a
        template selected later has not been read in the minutes already read: those are
        read for it alone (newest first, under the budget; the window is incomplete until
        then). A template no longer selected is no longer followed: querying it could
        fail (a deleted template answers 404).
        """
        chosen = set(templates)
        if self.cross_template:
            if not self.covers_all:
                self.read.clear()  # read for the templates selected then; read all again
                self.backfill.clear()
            self.covers_all = True
        else:
            for template_id in chosen - self.active:
                if self.read:
                    self.backfill[template_id] = set(self.read)
            dropped = self.active - chosen
            for template_id in dropped:
                self.backfill.pop(template_id, None)
            if dropped:
                self.pending = {
                    k: p for k, p in self.pending.items() if p.template_id not in dropped
                }
                gone = {self._index(t) for t in dropped}
                for late in self.late.values():
                    late.keep(lambda template, _: template not in gone)
            self.covers_all = False
        self.active = chosen

    def _index(self, template_id: str) -> int:
        index = self.template_index.get(template_id)
        if index is None:
            index = self.template_index[template_id] = len(self.template_names)
            self.template_names.append(template_id)
        return index

    def _read_unread(
        self, source: PageSource, templates: list[str], end: int, outcome: PollOutcome
    ) -> None:
        start = end - int(self.config.window)
        unread = [m for m in range(start, end, MINUTE) if m not in self.read]
        # Small chunks let a budget cut fall between minutes; a full scan reads it all.
        chunk = int(self.config.window) if self.full_scan else READ_CHUNK_MINUTES * MINUTE
        size = min(chunk, int(self.config.max_query_span))
        for chunk_start, chunk_end in chunks_newest_first(runs(unread), size):
            self._read_minutes(source, templates, chunk_start, chunk_end, outcome)

    def _read_backfill(
        self, source: PageSource, templates: list[str], outcome: PollOutcome
    ) -> None:
        size = min(READ_CHUNK_MINUTES * MINUTE, int(self.config.max_query_span))
        for template_id in sorted(self.backfill):
            minutes = self.backfill[template_id]
            for start, end in chunks_newest_first(runs(minutes), size):
                self._read_minutes(source, templates, start, end, outcome, only=template_id)
                minutes.difference_update(range(start, end, MINUTE))
            del self.backfill[template_id]

    def _read_new_with_hold_check(
        self, source: PageSource, templates: list[str], end: int, outcome: PollOutcome
    ) -> bool:
        """Read the new minutes and check the review-hold horizon with the same requests.

        Records come in send-time order, so a query from the horizon's start that skips
        the records already known returns the new minutes' records first, unless a held
        message appeared earlier: then its first record is older, and False sends the
        poll the long way. True means the new minutes are read and no hold appeared.
        """
        previous = self.end_before
        if not self.cross_template or self.full_scan or previous is None or previous >= end:
            return False
        horizon = self._hold_horizon(end)
        if horizon >= previous or any(m not in self.read for m in range(horizon, previous, MINUTE)):
            return False
        known = self._known_total(None, horizon, previous)
        query = DetailsQuery(horizon, end, limit=self.config.page_size)
        try:
            read = read_range(source, query, lambda: _NewOnly(previous), skip=known)
        except _OlderRecord:
            return False
        if read.total != known + read.fetched + sum(read.rejected.values()):
            return False  # fewer than known: something vanished; take the long way
        outcome.count(read)
        fold = read.sink.fold
        targets = set(templates) | set(fold.tallies) | set(self.ledgers)
        self._apply_fold(fold, targets, previous, end, outcome)
        return True

    def _read_minutes(
        self,
        source: PageSource,
        templates: list[str],
        start: int,
        end: int,
        outcome: PollOutcome,
        *,
        only: str | None = None,
    ) -> None:
        """Read [start, end) in full and make it the truth for those minutes."""
        fold = _MinuteFold()
        if self.cross_template and only is None:
            query = DetailsQuery(start, end, limit=self.config.page_size)
            read = read_range(source, query, _MinuteFold)
            outcome.count(read)
            fold = read.sink
            targets = set(templates) | set(fold.tallies) | set(self.ledgers)
        else:
            targets = {only} if only is not None else set(templates)
            for template_id in sorted(targets):
                query = DetailsQuery(start, end, template_id, limit=self.config.page_size)
                read = read_range(source, query, _MinuteFold)
                outcome.count(read)
                fold.tallies[template_id] = read.sink.tallies.get(template_id, {})
                fold.pending.update(read.sink.pending)
        self._apply_fold(fold, targets, start, end, outcome)

    def _apply_fold(
        self,
        fold: _MinuteFold,
        targets: set[str],
        start: int,
        end: int,
        outcome: PollOutcome,
    ) -> None:
        """Make a fresh read of [start, end) the truth for those minutes of ``targets``."""
        self.pending = {
            k: p
            for k, p in self.pending.items()
            if not (start <= p.minute < end and p.template_id in targets)
        }
        self.pending.update(fold.pending)
        if self.late:  # a window grown on reload reads minutes that hold late messages
            read_for = {self._index(t) for t in targets}
            for minute in range(start, end, MINUTE):
                late = self.late.get(minute)
                if late is not None:
                    late.keep(lambda template, _: template not in read_for)
        for template_id in targets:
            ledger = self.ledgers.setdefault(template_id, TemplateLedger())
            tallies = fold.tallies.get(template_id, {})
            self._mark_counted(ledger, template_id, start, end, tallies)
            outcome.grow(template_id, ledger.replace(start, end, MINUTE, tallies))
        self.read.update(range(start, end, MINUTE))

    def _mark_counted(
        self,
        ledger: TemplateLedger,
        template_id: str,
        start: int,
        end: int,
        tallies: dict[int, Tally],
    ) -> None:
        """Before a read of [start, end) replaces the ledger: minutes that were counted and
        then forgotten (their bucket dropped had no pending message left) take the fresh
        tally as their old one, so they add nothing to the counters."""
        first = self.first_counted.get(template_id)
        self.first_counted[template_id] = start if first is None else min(first, start)
        if first is None or self.forgotten_until is None:
            return
        for key in range(max(start, first), min(end, self.forgotten_until), MINUTE):
            if key in tallies and key not in ledger.buckets and key not in self.never_read:
                ledger.buckets[key] = tallies[key]

    def _check_holds(
        self,
        source: PageSource,
        templates: list[str],
        end: int,
        earlier: set[int],
        outcome: PollOutcome,
    ) -> None:
        """Find minutes where held messages appeared, by totals; read only those again."""
        horizon = self._hold_horizon(end)
        minutes = [m for m in earlier if horizon <= m < end]
        scopes: list[str | None] = [None] if self.cross_template else list(templates)
        for scope in scopes:
            changed: list[int] = []
            for start, stop in runs(minutes):
                self._find_changed(source, scope, start, stop, changed)
            for start, stop in runs(changed):
                if scope is None:
                    self._reread_across_templates(source, templates, start, stop, outcome)
                else:
                    self._read_minutes(source, templates, start, stop, outcome, only=scope)

    def _hold_horizon(self, end: int) -> int:
        """Start of the minutes where a held message may still appear unseen."""
        start = end - int(self.config.window)
        if self.holds_checked_end is None:  # never checked: all that was read
            return start
        checked = min(end, self.holds_checked_end)
        return max(checked - int(self.config.review_hold_horizon), start)

    def _known_total(self, template_id: str | None, start: int, end: int) -> int:
        ids = self.ledgers if template_id is None else [template_id]
        return sum(self.window(t, start, end).total for t in ids)

    def _find_changed(
        self, source: PageSource, scope: str | None, start: int, end: int, changed: list[int]
    ) -> None:
        """Collect the minutes of [start, end) whose total is not the known one (bisection)."""
        page = source.query(DetailsQuery(start, end, scope, limit=1))
        if page.total == self._known_total(scope, start, end):
            return
        if end - start <= MINUTE:
            changed.append(start)
            return
        middle = start + ((end - start) // MINUTE // 2) * MINUTE
        self._find_changed(source, scope, start, middle, changed)
        self._find_changed(source, scope, middle, end, changed)

    def _reread_across_templates(
        self, source: PageSource, templates: list[str], start: int, end: int, outcome: PollOutcome
    ) -> None:
        """Read changed minutes again: whole, or only the templates that changed, if cheaper.

        A review hold releases one template's messages, so one total per template usually
        finds it at a fraction of the cost of reading every template's records again.
        """
        if self._known_total(None, start, end) / self.config.page_size <= len(self.ledgers):
            self._read_minutes(source, templates, start, end, outcome)
            return
        for template_id in sorted(self.ledgers):
            page = source.query(DetailsQuery(start, end, template_id, limit=1))
            if page.total != self._known_total(template_id, start, end):
                changed: list[int] = []
                self._find_changed(source, template_id, start, end, changed)
                for run_start, run_end in runs(changed):
                    self._read_minutes(
                        source, templates, run_start, run_end, outcome, only=template_id
                    )
        check = source.query(DetailsQuery(start, end, limit=1))
        if check.total != self._known_total(None, start, end):
            self._read_minutes(source, templates, start, end, outcome)  # a template we lack

    def _resolve_pending(self, source: PageSource, outcome: PollOutcome) -> None:
        """Find which pending messages resolved, then read just those."""
        if not self.pending and not self.late:
            return
        assert self.end is not None
        resolved: dict[str | int, PendingMessage] = {}
        scopes: dict[str | None, dict[str | int, PendingMessage]] = {}
        for message_id, message in self.pending.items():
            scope = None if self.cross_template else message.template_id
            scopes.setdefault(scope, {})[message_id] = message
        recent_from = self.end - RECENT_PENDING_SECONDS
        for template_id, messages in scopes.items():
            if len(messages) <= self.config.page_size:
                # Few enough for one page: one scan is as cheap as a total.
                self._scan_pending(source, template_id, messages, resolved, outcome)
                continue
            # Recent ones resolve often: read them; older ones are bisected by totals.
            new = {k: m for k, m in messages.items() if m.minute >= recent_from}
            self._scan_pending(source, template_id, new, resolved, outcome)
            by_minute: dict[int, dict[str | int, PendingMessage]] = {}
            for key, message in messages.items():
                if message.minute < recent_from:
                    by_minute.setdefault(message.minute, {})[key] = message
            self._bisect_groups(source, template_id, by_minute, resolved, outcome)
        self._resolve_late(source, resolved, outcome)
        if isinstance(source, _Budgeted):
            source.budget.step = "resolved"
        self._read_resolved(source, resolved, outcome)
        # Scanned past their deadline and still without a final record: given up.
        given_up = self.end - REPORT_HORIZON_SECONDS
        self.late = {m: late for m, late in self.late.items() if m >= given_up and late.keys}

    def _bisect_groups(
        self,
        source: PageSource,
        template_id: str | None,
        by_minute: dict[int, dict[str | int, PendingMessage]],
        resolved: dict[str | int, PendingMessage],
        outcome: PollOutcome,
    ) -> None:
        def count(minute: int) -> int:
            return len(by_minute[minute])

        def materialize(chosen: list[int]) -> dict[str | int, PendingMessage]:
            return {k: m for minute in chosen for k, m in by_minute[minute].items()}

        for minutes in spans_within(sorted(by_minute), self.config.max_query_span):
            self._bisect_pending(
                source, template_id, minutes, count, materialize, resolved, outcome
            )

    def _resolve_late(
        self, source: PageSource, resolved: dict[str | int, PendingMessage], outcome: PollOutcome
    ) -> None:
        """Pending messages past the window.

        Those past the 72 h report deadline are all final (EXPIRED at the latest): they
        are read every poll. The others rarely change: blocks of ``max_query_span``
        (aligned, so blocks stay put as minutes come and go) are checked by totals,
        bisected to the minutes that changed, one block a poll and each at most every
        ``LATE_RECHECK_SECONDS``. A report for a message older than the window is thus
        counted within about a quarter of an hour, for a fraction of a request a poll.
        """
        if not self.late:
            return
        assert self.end is not None
        due_before = self.end - REPORT_DEADLINE_SECONDS - MINUTE
        span = int(self.config.max_query_span)
        blocks = {m // span for m in self.late if m >= due_before}
        checked = {b: at for b, at in self.late_checked.items() if b in blocks}
        ready = [b for b in blocks if checked.get(b, -1) <= self.end - LATE_RECHECK_SECONDS]
        turn = min(ready, key=lambda b: (checked.get(b, -1), b)) if ready else None
        scopes: list[int | None] = [None]
        if not self.cross_template:
            scopes = [*sorted({t for late in self.late.values() for t in late.templates})]
        for scope in scopes:
            template_id = None if scope is None else self.template_names[scope]
            minutes = sorted(m for m, late in self.late.items() if late.count(scope))
            count = partial(self._late_count, scope=scope)
            materialize = partial(self._late_messages, scope=scope)
            due = [m for m in minutes if m < due_before]
            self._scan_pending(source, template_id, materialize(due), resolved, outcome)
            block = [m for m in minutes if m >= due_before and m // span == turn]
            if block:
                self._bisect_pending(
                    source, template_id, block, count, materialize, resolved, outcome
                )
        if turn is not None:  # only once checked: a spent budget retries it next poll
            checked[turn] = self.end
        self.late_checked = checked

    def _late_count(self, minute: int, scope: int | None) -> int:
        """Late messages of one minute, of one template (index) or all."""
        return self.late[minute].count(scope)

    def _late_messages(
        self, minutes: list[int], scope: int | None
    ) -> dict[str | int, PendingMessage]:
        """Late messages of some minutes as pending messages, keyed by their late key."""
        out: dict[str | int, PendingMessage] = {}
        for minute in minutes:
            late = self.late[minute]
            for i, key in enumerate(late.keys):
                if scope is None or late.templates[i] == scope:
                    name = self.template_names[late.templates[i]]
                    out[key] = PendingMessage(name, minute, late.times[i], late.records[i])
        return out

    def _bisect_pending(
        self,
        source: PageSource,
        template_id: str | None,
        minutes: list[int],
        count: Callable[[int], int],
        materialize: Callable[[list[int]], dict[str | int, PendingMessage]],
        resolved: dict[str | int, PendingMessage],
        outcome: PollOutcome,
    ) -> None:
        """Old pending messages rarely change: totals find the minutes where some did."""
        known = sum(count(minute) for minute in minutes)
        if known <= self.config.page_size or len(minutes) == 1:
            self._scan_pending(source, template_id, materialize(minutes), resolved, outcome)
            return
        start, end = minutes[0], minutes[-1] + MINUTE
        probe = source.query(
            DetailsQuery(start, end, template_id, send_result=SendResult.SENDING, limit=1)
        )
        if probe.total == known:
            return
        middle = len(minutes) // 2
        for half in (minutes[:middle], minutes[middle:]):
            self._bisect_pending(source, template_id, half, count, materialize, resolved, outcome)

    def _scan_pending(
        self,
        source: PageSource,
        template_id: str | None,
        group: dict[str | int, PendingMessage],
        resolved: dict[str | int, PendingMessage],
        outcome: PollOutcome,
    ) -> None:
        """Read the ids still sending in the group's minutes; the others resolved."""
        if not group:
            return
        minutes = sorted({m.minute for m in group.values()})
        still: set[str | int] = set()
        for span in spans_within(minutes, self.config.max_query_span):
            query = DetailsQuery(
                span[0],
                span[-1] + MINUTE,
                template_id,
                send_result=SendResult.SENDING,
                limit=self.config.page_size,
            )
            read = read_range(source, query, _Ids)
            outcome.count(read)
            still.update(read.sink.ids)
            still.update(late_key(message_id) for message_id in read.sink.ids)
        resolved.update((k, m) for k, m in group.items() if k not in still)

    def _read_resolved(
        self,
        source: PageSource,
        resolved: dict[str | int, PendingMessage],
        outcome: PollOutcome,
    ) -> None:
        """Read the resolved messages in narrow ranges: per template, or across templates
        when that needs fewer ranges (many quiet templates).

        Outside the window a message carries its template's records in its minute, but
        the density across templates is unknown there: those are read per template.
        """
        if not resolved:
            return
        assert self.end is not None
        window_start = self.end - int(self.config.window)
        inside = [m for m in resolved.values() if m.minute >= window_start]
        outside = [m for m in resolved.values() if m.minute < window_start]
        ranges = self._resolved_ranges(inside, self.cross_template)
        ranges += self._resolved_ranges(outside, False)
        for scope, start, end in ranges:
            query = DetailsQuery(start, end, scope, limit=self.config.page_size)
            read = read_range(source, query, lambda: _Wanted(resolved))
            outcome.count(read)
            for record in read.sink.found:
                self._apply_resolution(record, outcome)

    def _resolved_ranges(
        self, messages: list[PendingMessage], cross_template: bool
    ) -> list[tuple[str | None, float, float]]:
        if not messages:
            return []
        page, span = self.config.page_size, self.config.max_query_span
        by_template: dict[str, list[PendingMessage]] = {}
        for message in messages:
            by_template.setdefault(message.template_id, []).append(message)
        per_template: list[tuple[str | None, float, float]] = []
        for template_id, group in sorted(by_template.items()):
            busiest = max(m.records or self._records_in(template_id, m.minute) for m in group)
            times = sorted(m.send_time for m in group)
            per_template += [
                (template_id, a, b) for a, b in coalesce(times, busiest / MINUTE, page, span)
            ]
        if not cross_template:
            return per_template
        busiest = max(self._records_in(None, m.minute) for m in messages)
        times = sorted(m.send_time for m in messages)
        across: list[tuple[str | None, float, float]] = [
            (None, a, b) for a, b in coalesce(times, busiest / MINUTE, page, span)
        ]
        return min(per_template, across, key=len)

    def _records_in(self, template_id: str | None, minute: int) -> int:
        """Records known in one minute, of one template or all (at least 1)."""
        return max(1, self._known_total(template_id, minute, minute + MINUTE))

    def _apply_resolution(self, record: SendRecord, outcome: PollOutcome) -> None:
        growth = Growth()
        growth.finalized[_outcome(record)] += 1
        message = self.pending.pop(record.message_id, None)
        if message is not None:
            ledger = self.ledgers.setdefault(message.template_id, TemplateLedger())
            tally = ledger.buckets.setdefault(message.minute, Tally())
            tally.sending = max(0, tally.sending - 1)
            tally.add(record)
            outcome.grow(message.template_id, growth)
            return
        minute = minute_floor(record.send_time)
        late = self.late.get(minute)
        key = late_key(record.message_id)
        if late is None or key not in late.keys:
            return
        template = late.templates[late.keys.index(key)]
        late.keep(lambda _, k: k != key)
        outcome.grow(self.template_names[template], growth)
