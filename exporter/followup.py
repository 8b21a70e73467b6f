"""The pending follow-up: find which followed messages resolved, then read just those.

Messages still ``sending`` are followed until final. Each poll a ``send_result=sending``
scan over the minutes holding recent ones shows which resolved; older ones rarely change
and are checked with ``total`` queries, bisected down to the minutes that did. Past the
window, the 72 h deadline bounds the work: those past it are all final and read once;
the others are checked by aligned 24 h block, one block a poll and each at most every
``LATE_RECHECK_SECONDS``. Those found resolved are then read (:mod:`exporter.resolutions`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from exporter.fetch import PageSource, read_range
from exporter.minutebook import MinuteBook
from exporter.pending import (
    REPORT_DEADLINE_SECONDS,
    REPORT_HORIZON_SECONDS,
    Followed,
    PendingMessage,
    late_key,
)
from exporter.ranges import MINUTE, spans_within
from exporter.records import DetailsQuery, SendRecord, SendResult
from exporter.resolutions import read_resolved

RECENT_PENDING_SECONDS = 15 * 60
LATE_RECHECK_SECONDS = 15 * 60


@dataclass(slots=True)
class _Ids:
    """Collects the message ids of a range."""

    ids: set[str] = field(default_factory=set)

    def add(self, record: SendRecord) -> None:
        self.ids.add(record.message_id)


class PendingFollowUp:
    """Follows the pending messages of one minute book until each is final."""

    def __init__(self, book: MinuteBook) -> None:
        self.book = book
        self.late_checked: dict[int, int] = {}  # block of late minutes → when checked
        # Scopes whose older pending messages changed at the last poll: while they keep
        # changing, one scan of them costs less than totals bisected down to the changes.
        self.old_changing: set[str | None] = set()

    def find_resolved(self, source: PageSource, end: int) -> Followed:
        """The followed messages that are no longer sending (read them with ``read``)."""
        book = self.book
        resolved: Followed = {}
        if not book.pending and not book.late:
            return resolved
        page_size = book.settings.page_size
        scopes: dict[str | None, Followed] = {}
        for message_id, message in book.pending.items():
            scope = None if book.settings.cross_template else message.template_id
            scopes.setdefault(scope, {})[message_id] = message
        recent_from = end - RECENT_PENDING_SECONDS
        for template_id, messages in scopes.items():
            if len(messages) <= page_size:
                # Few enough for one page: one scan is as cheap as a total.
                self._scan(source, template_id, messages, resolved)
                continue
            # Recent ones resolve often: read them. Older ones are bisected by totals, or
            # read too while they keep changing.
            new = {k: m for k, m in messages.items() if m.minute >= recent_from}
            self._scan(source, template_id, new, resolved)
            before = len(resolved)
            if template_id in self.old_changing:
                old = {k: m for k, m in messages.items() if m.minute < recent_from}
                self._scan(source, template_id, old, resolved)
            else:
                by_minute: dict[int, Followed] = {}
                for key, message in messages.items():
                    if message.minute < recent_from:
                        by_minute.setdefault(message.minute, {})[key] = message
                self._bisect_groups(source, template_id, by_minute, resolved)
            if len(resolved) > before:
                self.old_changing.add(template_id)
            else:
                self.old_changing.discard(template_id)
        self._resolve_late(source, end, resolved)
        return resolved

    def _bisect_groups(
        self,
        source: PageSource,
        template_id: str | None,
        by_minute: dict[int, Followed],
        resolved: Followed,
    ) -> None:
        def count(minute: int) -> int:
            return len(by_minute[minute])

        def materialize(chosen: list[int]) -> Followed:
            return {k: m for minute in chosen for k, m in by_minute[minute].items()}

        for minutes in spans_within(sorted(by_minute), self.book.settings.max_query_span):
            self._bisect(source, template_id, minutes, count, materialize, resolved)

    def _resolve_late(self, source: PageSource, end: int, resolved: Followed) -> None:
        """Pending messages past the window.

        Those past the 72 h report deadline are all final (EXPIRED at the latest): they
        are read every poll. The others rarely change: blocks of ``max_query_span``
        (aligned, so blocks stay put as minutes come and go) are checked by totals,
        bisected to the minutes that changed, one block a poll and each at most every
        ``LATE_RECHECK_SECONDS``. A report for a message older than the window is thus
        counted within about a quarter of an hour, for a fraction of a request a poll.
        """
        book = self.book
        if not book.late:
            return
        due_before = end - REPORT_DEADLINE_SECONDS - MINUTE
        span = int(book.settings.max_query_span)
        blocks = {m // span for m in book.late if m >= due_before}
        checked = {b: at for b, at in self.late_checked.items() if b in blocks}
        ready = [b for b in blocks if checked.get(b, -1) <= end - LATE_RECHECK_SECONDS]
        turn = min(ready, key=lambda b: (checked.get(b, -1), b)) if ready else None
        scopes: list[int | None] = [None]
        if not book.settings.cross_template:
            scopes = [*sorted({t for late in book.late.values() for t in late.templates})]
        for scope in scopes:
            template_id = None if scope is None else book.template_names[scope]
            minutes = sorted(m for m, late in book.late.items() if late.count(scope))
            count = partial(self._late_count, scope=scope)
            materialize = partial(self._late_messages, scope=scope)
            due = [m for m in minutes if m < due_before]
            self._scan(source, template_id, materialize(due), resolved)
            block = [m for m in minutes if m >= due_before and m // span == turn]
            if block:
                self._bisect(source, template_id, block, count, materialize, resolved)
        if turn is not None:  # only once checked: a spent budget retries it next poll
            checked[turn] = end
        self.late_checked = checked

    def _late_count(self, minute: int, scope: int | None) -> int:
        """Late messages of one minute, of one template (index) or all."""
        return self.book.late[minute].count(scope)

    def _late_messages(self, minutes: list[int], scope: int | None) -> Followed:
        """Late messages of some minutes as pending messages, keyed by their late key."""
        book = self.book
        out: Followed = {}
        for minute in minutes:
            late = book.late[minute]
            for i, key in enumerate(late.keys):
                if scope is None or late.templates[i] == scope:
                    name = book.template_names[late.templates[i]]
                    out[key] = PendingMessage(name, minute, late.times[i], late.records[i])
        return out

    def _bisect(
        self,
        source: PageSource,
        template_id: str | None,
        minutes: list[int],
        count: Callable[[int], int],
        materialize: Callable[[list[int]], Followed],
        resolved: Followed,
    ) -> None:
        """Old pending messages rarely change: totals find the minutes where some did."""
        known = sum(count(minute) for minute in minutes)
        if known <= self.book.settings.page_size or len(minutes) == 1:
            self._scan(source, template_id, materialize(minutes), resolved)
            return
        start, end = minutes[0], minutes[-1] + MINUTE
        probe = source.query(
            DetailsQuery(start, end, template_id, send_result=SendResult.SENDING, limit=1)
        )
        if probe.total == known:
            return
        middle = len(minutes) // 2
        for half in (minutes[:middle], minutes[middle:]):
            self._bisect(source, template_id, half, count, materialize, resolved)

    def _scan(
        self, source: PageSource, template_id: str | None, group: Followed, resolved: Followed
    ) -> None:
        """Read the ids still sending in the group's minutes; the others resolved."""
        if not group:
            return
        book = self.book
        minutes = sorted({m.minute for m in group.values()})
        still: set[str | int] = set()
        for span in spans_within(minutes, book.settings.max_query_span):
            query = DetailsQuery(
                span[0],
                span[-1] + MINUTE,
                template_id,
                send_result=SendResult.SENDING,
                limit=book.settings.page_size,
            )
            # Reports arrive while this reads: a message the shrinking set's shift skips
            # is taken for resolved, found still sending by the narrow read, and kept.
            read = read_range(source, query, _Ids, shrinking=True)
            book.counters.count(read)
            still.update(read.sink.ids)
            still.update(late_key(message_id) for message_id in read.sink.ids)
        resolved.update((k, m) for k, m in group.items() if k not in still)

    def read(self, source: PageSource, end: int, resolved: Followed) -> None:
        """Read the resolved messages (:mod:`exporter.resolutions`); then let go of the late
        messages scanned past their deadline and still not final."""
        book = self.book
        read_resolved(book, source, end, resolved)
        given_up = end - REPORT_HORIZON_SECONDS
        book.late = {m: late for m, late in book.late.items() if m >= given_up and late.keys}
