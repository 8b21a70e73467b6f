"""The review-hold check: find minutes already read where held messages appeared since.

A message held for manual review appears late with its original send time, up to
``review_hold_horizon`` after it was sent. Minutes within that horizon are checked every
poll: in steady state by the same query that reads the new minutes (a record older than
them in its answer would be a held one); otherwise by ``total`` queries, bisected down to
the minutes (and, across templates, to the template) that changed, and only those are
read again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.fetch import PageSource, read_range
from exporter.minutebook import MinuteBook, MinuteFold
from exporter.ranges import MINUTE, runs
from exporter.records import DetailsQuery, SendRecord


@dataclass(slots=True)
class _NewOnly:
    """Folds records of the new minutes; notes a record older than them (a hold released).

    ``anchored``: the read starts one record early, at the last record known, which must
    be older than the new minutes; a new one there means known records vanished and the
    read overshot. Either way ``older`` sends the poll the long way.
    """

    since: int
    anchored: bool = False
    fold: MinuteFold = field(default_factory=MinuteFold)
    older: bool = False

    def add(self, record: SendRecord) -> None:
        if self.anchored:
            self.anchored = False
            self.older = record.send_time >= self.since
        elif record.send_time < self.since:
            self.older = True
        elif not self.older:
            self.fold.add(record)


def _saw_older(sink: _NewOnly) -> bool:
    return sink.older


class HoldCheck:
    """Checks the review-hold horizon of one minute book."""

    def __init__(self, book: MinuteBook) -> None:
        self.book = book
        # The window end at the last poll whose hold check finished: minutes that left
        # the horizon since then are still due for one (a poll cut by the budget skips it).
        self.checked_end: int | None = None
        # The window end at the first poll, which read the newest minutes first: minutes
        # older than it less the horizon were read after a hold could still appear there.
        self.first_end: int | None = None

    def horizon(self, end: int) -> int:
        """Start of the minutes where a held message may still appear unseen."""
        settings = self.book.settings
        start = end - settings.window
        # Never checked: every minute read while a hold could still appear in it (a
        # start-up backfill cut by the budget reads older minutes polls later).
        first = end if self.first_end is None else self.first_end
        checked = first if self.checked_end is None else min(end, self.checked_end)
        return max(checked - int(settings.review_hold_horizon), start)

    def read_new(
        self,
        source: PageSource,
        templates: list[str],
        previous: int,
        end: int,
        since: int | None = None,
    ) -> bool:
        """Read the new minutes [previous, end) and check the horizon with the same requests.

        Records come in send-time order, so a query from the horizon's start that skips
        the records already known returns the new minutes' records first, unless a held
        message appeared earlier: then its first record is older, and False sends the
        poll the long way. True means the new minutes are read and no hold appeared.
        With ``since`` (before the horizon) the query starts there instead, and True also
        means the history from ``since`` holds what was read (the history check's
        question, answered by the same request).
        """
        book = self.book
        horizon = self.horizon(end)
        first = horizon if since is None else min(since, horizon)
        if horizon >= previous or any(m not in book.read for m in range(first, previous, MINUTE)):
            return False
        known = book.known_total(None, first, previous)
        anchor = 1 if known else 0  # the last known record, read again (see _NewOnly)
        query = DetailsQuery(first, end, limit=book.settings.page_size)
        read = read_range(
            source,
            query,
            lambda: _NewOnly(previous, anchored=bool(anchor)),
            skip=known - anchor,
            stop=_saw_older,
        )
        book.counters.count(read)  # fetched (and any rejected) whichever way the poll goes
        if read.stopped or read.sink.anchored:
            return False  # a hold appeared, or known records vanished: the long way
        if read.total != known - anchor + read.fetched + sum(read.rejected.values()):
            return False  # fewer than known: something vanished; take the long way
        fold = read.sink.fold
        targets = set(templates) | set(fold.tallies) | set(book.ledgers)
        book.note_rejected(None, previous, end, bool(read.rejected))
        book.apply_fold(fold, targets, previous, end)
        self.checked_end = end
        return True

    def check(self, source: PageSource, templates: list[str], end: int, earlier: set[int]) -> None:
        """Find minutes where held messages appeared, by totals; read only those again."""
        horizon = self.horizon(end)
        minutes = [m for m in earlier if horizon <= m < end]
        scopes: list[str | None] = [None] if self.book.settings.cross_template else list(templates)
        for scope in scopes:
            changed: list[int] = []
            for start, stop in runs(minutes):
                self._find_changed(source, scope, start, stop, changed)
            for start, stop in runs(changed):
                if scope is None:
                    self._reread_across_templates(source, templates, start, stop)
                else:
                    self.book.read_minutes(source, templates, start, stop, only=scope)
        self.checked_end = end

    def _find_changed(
        self, source: PageSource, scope: str | None, start: int, end: int, changed: list[int]
    ) -> None:
        """Collect the minutes of [start, end) whose total is not the known one (bisection)."""
        page = source.query(DetailsQuery(start, end, scope, limit=1))
        if page.total == self.book.known_total(scope, start, end):
            return
        if end - start <= MINUTE:
            changed.append(start)
            return
        middle = start + ((end - start) // MINUTE // 2) * MINUTE
        self._find_changed(source, scope, start, middle, changed)
        self._find_changed(source, scope, middle, end, changed)

    def _reread_across_templates(
        self, source: PageSource, templates: list[str], start: int, end: int
    ) -> None:
        """Read changed minutes again: whole, or only the templates that changed, if cheaper.

        A review hold releases one template's messages, so one total per template usually
        finds it at a fraction of the cost of reading every template's records again.
        """
        book = self.book
        if book.known_total(None, start, end) / book.settings.page_size <= len(book.ledgers):
            book.read_minutes(source, templates, start, end)
            return
        for template_id in sorted(book.ledgers):
            page = source.query(DetailsQuery(start, end, template_id, limit=1))
            if page.total != book.known_total(template_id, start, end):
                changed: list[int] = []
                self._find_changed(source, template_id, start, end, changed)
                for run_start, run_end in runs(changed):
                    book.read_minutes(source, templates, run_start, run_end, only=template_id)
        check = source.query(DetailsQuery(start, end, limit=1))
        if check.total != book.known_total(None, start, end):
            book.read_minutes(source, templates, start, end)  # a template we lack
        else:  # every record counted: a malformed one skipped earlier was read since
            book.note_rejected(None, start, end, rejected=False)
