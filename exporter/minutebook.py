"""The minute book: what one account's engine knows, minute by minute, and how a read changes it.

It holds the per-template minute tallies (ledgers), which minutes are read, the messages
still pending (in the window, and compact past it) and the counters. A fresh read of
some minutes is folded (:class:`MinuteFold`) and applied (:meth:`MinuteBook.apply_fold`):
it becomes the truth for those minutes and only its growth reaches the counters, so a
message is counted once however often its minute is read. The hold check and the
pending follow-up work on this book; neither knows the other.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from exporter.budget import Step
from exporter.config import AccountConfig, AccountSource, Config, EngineKind
from exporter.fetch import PageSource, RangeRead, read_range
from exporter.ledger import Growth, NetGrowth, Tally, TemplateLedger
from exporter.pending import ABANDON_SECONDS, LateMinute, PendingMessage, late_key
from exporter.ranges import MINUTE, minute_floor
from exporter.records import DetailsQuery, SendRecord, SendResult
from exporter.status_codes import StatusCategory, categorize


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """What an engine reads and how, fixed until a reload hands it new settings.

    ``cross_template`` reads all templates with one query per range: only when every
    template is exported and nothing shards them (otherwise each selected template is
    read on its own, so a shard or a filter does not pay for records it throws away).
    """

    window: int
    settle_delay: float = 180.0
    page_size: int = 100
    max_query_span: float = 86400.0
    review_hold_horizon: float = 900.0
    request_budget: int = 2000
    cross_template: bool = False
    full_scan: bool = False
    check_history: bool = True
    """Verify the minutes past the hold horizon each poll (:mod:`exporter.history`); off
    for a push account, whose store is ours and would count its rows again every poll."""

    @classmethod
    def of(cls, config: Config, account: AccountConfig, *, shards: int = 1) -> EngineSettings:
        """The settings for one account of a configuration (``shards``: replicas sharing it)."""
        selection = account.templates
        everything = selection.discover and not selection.include and not selection.exclude
        full_scan = config.engine == EngineKind.FULL_SCAN
        return cls(
            window=int(config.window),
            settle_delay=config.settle_delay,
            page_size=config.page_size,
            max_query_span=config.max_query_span,
            review_hold_horizon=config.review_hold_horizon,
            request_budget=config.request_budget,
            cross_template=everything and shards == 1 and not full_scan,
            full_scan=full_scan,
            check_history=account.source != AccountSource.PUSH,
        )


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

    def count(self, read: RangeRead[Any]) -> None:
        """Add the records a read fetched or rejected."""
        self.fetched += read.fetched
        self.rejected.update(read.rejected)


@dataclass(slots=True)
class PollOutcome:
    """What one engine poll did: the window end, its requests by step, the followed
    messages it found resolved, whether it finished (or why not)."""

    end: int
    requests: Counter[Step] = field(default_factory=Counter)
    resolved: int = 0
    checks_done: bool = False
    cut_short: str = ""


@dataclass(slots=True)
class MinuteFold:
    """Folds a range's records into per-template minute tallies as pages arrive."""

    tallies: dict[str, dict[int, Tally]] = field(default_factory=dict)
    pending: dict[str, PendingMessage] = field(default_factory=dict)

    def add(self, record: SendRecord) -> None:
        """Count one record in its template's minute; remember it if still sending."""
        minute = minute_floor(record.send_time)
        by_minute = self.tallies.setdefault(record.template_id, {})
        tally = by_minute.get(minute)
        if tally is None:
            tally = by_minute[minute] = Tally()
        if record.send_result is SendResult.SENDING:
            # Records come in (send time, id) order: those counted so far precede it.
            self.pending[record.message_id] = PendingMessage(
                record.template_id, minute, record.send_time, position=tally.total
            )
        tally.add(record)


class MinuteBook:
    """Per-account state of the incremental engine; see the module docstring."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.ledgers: dict[str, TemplateLedger] = {}
        self.pending: dict[str, PendingMessage] = {}
        # Pending messages whose minute left the window, by minute; templates by index.
        self.late: dict[int, LateMinute] = {}
        self.template_names: list[str] = []
        self.template_index: dict[str, int] = {}
        self.read: set[int] = set()
        self.moved: set[int] = set()
        """Minutes read where stored messages moved since (:mod:`exporter.moves`)."""
        self.end: int | None = None
        self.counters = Counters()
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
        # Minutes whose last read skipped a malformed record, by the template read (None:
        # across templates): their tallies lack it, so the window is not complete.
        self.doubtful: dict[int, set[str | None]] = {}
        # Followed messages found resolved whose final record was skipped as malformed:
        # still counted as sending, so their minutes are not complete either.
        self.unreadable: set[str | int] = set()

    # -- questions ----------------------------------------------------------------------

    def window(self, template_id: str, start: int, end: int) -> Tally:
        """One template's tally over [start, end)."""
        ledger = self.ledgers.get(template_id)
        return ledger.window(start, end, MINUTE) if ledger else Tally()

    def known_total(self, template_id: str | None, start: int, end: int) -> int:
        """Records known in [start, end), of one template or of all."""
        ids = self.ledgers if template_id is None else [template_id]
        return sum(self.window(t, start, end).total for t in ids)

    def records_in(self, template_id: str | None, minute: int) -> int:
        """Records known in one minute, of one template or all (at least 1)."""
        return max(1, self.known_total(template_id, minute, minute + MINUTE))

    def unread_minutes(self, start: int, end: int) -> int:
        """How many minutes of [start, end) have not been read yet (for every template)."""
        waiting: set[int] = set().union(*self.backfill.values())
        waiting.update(self.doubtful)
        waiting.update(self.pending[k].minute for k in self.unreadable if k in self.pending)
        return sum(1 for m in range(start, end, MINUTE) if m not in self.read or m in waiting)

    def pending_count(self) -> int:
        """Messages followed until they are final, inside the window and past it."""
        return len(self.pending) + sum(len(m.keys) for m in self.late.values())

    def newest_read_end(self) -> int | None:
        """End of the newest minute read."""
        return max(self.read) + MINUTE if self.read else None

    def index(self, template_id: str) -> int:
        """A template's index in the compact late-message arrays."""
        index = self.template_index.get(template_id)
        if index is None:
            index = self.template_index[template_id] = len(self.template_names)
            self.template_names.append(template_id)
        return index

    # -- changes ------------------------------------------------------------------------

    def forget_before(self, start: int, end: int) -> None:
        """Drop what precedes the window, but keep following its pending messages, in
        compact form, until their report can no longer come (see ``exporter.followup``)."""
        full_scan = self.settings.full_scan
        leaving = {k: p for k, p in self.pending.items() if p.minute < start}
        if leaving:
            self.pending = {k: p for k, p in self.pending.items() if p.minute >= start}
        if not full_scan:
            for message_id, message in leaving.items():
                minute = self.late.get(message.minute)
                if minute is None:
                    minute = self.late[message.minute] = LateMinute()
                records = self.records_in(message.template_id, message.minute)
                index = self.index(message.template_id)
                minute.add(index, late_key(message_id), message.send_time, records)
        abandon = end - ABANDON_SECONDS
        self.late = {m: late for m, late in self.late.items() if m >= abandon}
        for ledger in self.ledgers.values():
            ledger.forget_before(start)
        if self.start is not None and not full_scan:
            gone = range(self.start, start, MINUTE)
            self.never_read.update(m for m in gone if m not in self.read)
            self.forgotten_until = max(self.forgotten_until or start, start)
            longest = int(self.settings.max_query_span)  # no window is longer
            self.never_read = {m for m in self.never_read if m >= end - longest}
        self.start = start
        self.read = {m for m in self.read if m >= start}
        self.doubtful = {m: d for m, d in self.doubtful.items() if m >= start}
        for minutes in self.backfill.values():
            minutes.intersection_update(self.read)

    def follow_selection(self, templates: list[str]) -> None:
        """Keep the minutes read valid for the templates selected now.

        Across templates every read covers every template. One template at a time, a
        template selected later has not been read in the minutes already read: those are
        read for it alone (newest first, under the budget; the window is incomplete until
        then). A template no longer selected is no longer followed: querying it could
        fail (a deleted template answers 404).
        """
        chosen = set(templates)
        if self.settings.cross_template:
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
                gone = {self.index(t) for t in dropped}
                for late in self.late.values():
                    late.keep(lambda template, _: template not in gone)
                for minute, doubts in list(self.doubtful.items()):
                    doubts.difference_update(dropped)
                    if not doubts:
                        del self.doubtful[minute]
            self.covers_all = False
        self.active = chosen
        for template_id in templates:
            self.ledgers.setdefault(template_id, TemplateLedger())

    def read_minutes(
        self,
        source: PageSource,
        templates: list[str],
        start: int,
        end: int,
        *,
        only: str | None = None,
    ) -> None:
        """Read [start, end) in full and make it the truth for those minutes."""
        fold, targets, rejected = self.fold_minutes(source, templates, start, end, only=only)
        self.note_reads(rejected, start, end)
        self.apply_fold(fold, targets, start, end)

    def fold_minutes(
        self,
        source: PageSource,
        templates: list[str],
        start: int,
        end: int,
        *,
        only: str | None = None,
    ) -> tuple[MinuteFold, set[str], dict[str | None, bool]]:
        """Read [start, end) in full: its fold, the templates it is the truth for, and
        whether each read (by template, or across: None) skipped malformed records."""
        page_size = self.settings.page_size
        fold = MinuteFold()
        rejected: dict[str | None, bool] = {}
        if self.settings.cross_template and only is None:
            read = read_range(source, DetailsQuery(start, end, limit=page_size), MinuteFold)
            self.counters.count(read)
            rejected[None] = bool(read.rejected)
            fold = read.sink
            targets = set(templates) | set(fold.tallies) | set(self.ledgers)
        else:
            targets = {only} if only is not None else set(templates)
            for template_id in sorted(targets):
                query = DetailsQuery(start, end, template_id, limit=page_size)
                read = read_range(source, query, MinuteFold)
                self.counters.count(read)
                rejected[template_id] = bool(read.rejected)
                fold.tallies[template_id] = read.sink.tallies.get(template_id, {})
                fold.pending.update(read.sink.pending)
        return fold, targets, rejected

    def note_reads(self, rejected: dict[str | None, bool], start: int, end: int) -> None:
        """Note what each read of [start, end) skipped (see ``note_rejected``); only once
        every template is read: a spent budget applies none of them."""
        for scope, skipped in rejected.items():
            self.note_rejected(scope, start, end, skipped)

    def note_rejected(self, scope: str | None, start: int, end: int, rejected: bool) -> None:
        """A read of [start, end) for one template (or across, ``None``) skipped malformed
        records, or read every record: its minutes become doubtful, or that doubt goes."""
        for minute in range(start, end, MINUTE):
            doubts = self.doubtful.get(minute)
            if rejected:
                self.doubtful.setdefault(minute, set()).add(scope)
            elif doubts is not None:
                if scope is None:
                    doubts.clear()  # every template was read
                else:
                    doubts.discard(scope)
                if not doubts:
                    del self.doubtful[minute]

    def apply_fold(
        self,
        fold: MinuteFold,
        targets: set[str],
        start: int,
        end: int,
        *,
        net: NetGrowth | None = None,
    ) -> None:
        """Make a fresh read of [start, end) the truth for those minutes of ``targets``;
        its growth goes to the counters, or to ``net`` (a read of moved minutes)."""
        self.pending = {
            k: p
            for k, p in self.pending.items()
            if not (start <= p.minute < end and p.template_id in targets)
        }
        self.pending.update(fold.pending)
        if self.late:  # a window grown on reload reads minutes that hold late messages
            read_for = {self.index(t) for t in targets}
            for minute in range(start, end, MINUTE):
                late = self.late.get(minute)
                if late is not None:
                    late.keep(lambda template, _: template not in read_for)
        for template_id in targets:
            ledger = self.ledgers.setdefault(template_id, TemplateLedger())
            tallies = fold.tallies.get(template_id, {})
            self._mark_counted(ledger, template_id, start, end, tallies)
            if net is None:
                self.counters.grow(template_id, ledger.replace(start, end, MINUTE, tallies))
            else:
                growth = ledger.replace(start, end, MINUTE, tallies, net.lost)
                net.growth.setdefault(template_id, Growth()).merge(growth)
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

    def apply_resolution(self, record: SendRecord) -> None:
        """A followed message's final record: its minute's tally and the counters learn it."""
        growth = Growth()
        growth.finalized[(record.send_result, categorize(record.status_code))] += 1
        message = self.pending.pop(record.message_id, None)
        if message is not None:
            ledger = self.ledgers.setdefault(message.template_id, TemplateLedger())
            tally = ledger.buckets.setdefault(message.minute, Tally())
            tally.sending = max(0, tally.sending - 1)
            tally.add(record)
            self.counters.grow(message.template_id, growth)
            return
        late = self.late.get(minute_floor(record.send_time))
        key = late_key(record.message_id)
        if late is None or key not in late.keys:
            return
        template = late.templates[late.keys.index(key)]
        late.keep(lambda _, k: k != key)
        self.counters.grow(self.template_names[template], growth)
