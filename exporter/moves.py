"""Moved messages: minutes already counted where a stored message changed place.

A push store moves a message it holds when a write changes its template or send time: a
send registration stored after the message's report (the report's time stood in for the
send time, ``unknown`` or the report's ``extend`` for the template), or a report whose
``extend`` names an unattributed message's template. Each move is recorded with an
increasing sequence. A move keeps every count the other checks compare (the minutes'
totals across templates, the records before an anchor), so each poll of a push account
asks its store for the moves since the last poll and reads the minutes on both sides
again.

Those minutes are read in the poll's snapshot, the one the moves were asked in: a moved
message is then missing from its old minute exactly when it is found in its new one. A
record never leaves a minute otherwise, so what the old minutes lost is what the new ones
gained by moves: the counters grow by the gains less the losses, and a moved message is
not counted twice (its counts stay where they were first made). Reading a minute again
that did not change adds nothing, so a move seen twice costs a read and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from exporter.fetch import PageSource, snapshot_of
from exporter.ledger import NetGrowth
from exporter.ranges import runs

if TYPE_CHECKING:
    from exporter.minutebook import MinuteBook


@dataclass(slots=True)
class MovedMinutes:
    """The minutes (starts, epoch seconds) that messages moved from or to, and the cursor
    to ask with next time."""

    minutes: set[int]
    cursor: object


def minutes_of(rows: Iterable[tuple[int, int]]) -> set[int]:
    """The minutes of (old send ms, new send ms) pairs."""
    out: set[int] = set()
    for old_ms, new_ms in rows:
        out.add(int(old_ms) // 60_000 * 60)
        out.add(int(new_ms) // 60_000 * 60)
    return out


@runtime_checkable
class MovingSource(Protocol):
    """A source whose records can move between minutes and templates (a push store)."""

    def moved_since(self, cursor: object) -> MovedMinutes:
        """The minutes moved from or to since ``cursor`` (None: a first cursor only)."""
        ...


class MoveCheck:
    """Reads again the minutes of one minute book where stored messages moved."""

    def __init__(self, book: MinuteBook) -> None:
        self.book = book
        self.cursor: object = None

    def check(self, source: PageSource, templates: list[str], start: int, end: int) -> None:
        """Ask ``source`` (in the snapshot the caller holds) for the moves since the last
        poll; read their minutes of [start, end) that were read, with the ones a cut poll
        left, in one snapshot, and count only what is new."""
        book = self.book
        if isinstance(source, MovingSource):
            moved = source.moved_since(self.cursor)
            self.cursor = moved.cursor
            book.moved.update(moved.minutes)
        book.moved = {m for m in book.moved if start <= m < end and m in book.read}
        if not book.moved:
            return
        net = NetGrowth()
        with snapshot_of(source):
            folds = [
                (run_start, run_end, *book.fold_minutes(source, templates, run_start, run_end))
                for run_start, run_end in runs(sorted(book.moved))
            ]
        # Only once every minute is read: a failed read applies none of them.
        for run_start, run_end, fold, targets, rejected in folds:
            book.note_reads(rejected, run_start, run_end)
            book.apply_fold(fold, targets, run_start, run_end, net=net)
        for template_id, growth in net.net().items():
            book.counters.grow(template_id, growth)
        book.moved.clear()
