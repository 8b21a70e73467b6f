"""The history check: minutes read before the review-hold horizon still hold what was read.

Past the horizon nothing should change but statuses (which the pending follow-up
reads). A count that changed there means the upstream's history did: a message held
longer than the horizon appeared (more records), or the upstream lost or replaced its
data, a restart of a service that keeps it in memory or a store restored from elsewhere
(fewer records somewhere). One ``total`` query per scope and 24 h span finds out each
poll. More records: the minutes that changed are found by bisection and read again.
Fewer anywhere: nothing read is trusted any more, and the whole window is read again
(newest first, under the budget; incomplete until then), rather than shown as if right.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.fetch import PageSource
from exporter.minutebook import MinuteBook
from exporter.ranges import MINUTE, chunks_newest_first, runs
from exporter.records import DetailsQuery


@dataclass(slots=True)
class _Changes:
    """What the bisection found: minutes with more records than known, and any with fewer."""

    grown: list[int] = field(default_factory=list)
    shrunk: bool = False


class HistoryCheck:
    """Checks the minutes of one minute book that lie before the review-hold horizon."""

    def __init__(self, book: MinuteBook) -> None:
        self.book = book

    def check(self, source: PageSource, templates: list[str], start: int, horizon: int) -> bool:
        """Verify the minutes read in [start, horizon); read again those that grew.

        Returns False when records vanished: the caller forgets every minute read.
        """
        book = self.book
        scopes: list[str | None] = [None] if book.settings.cross_template else list(templates)
        span = int(book.settings.max_query_span)
        for scope in scopes:
            waiting = book.backfill.get(scope, set()) if scope is not None else set()
            minutes = [m for m in range(start, horizon, MINUTE) if m in book.read]
            minutes = [m for m in minutes if m not in waiting]
            changes = _Changes()
            for run_start, run_end in chunks_newest_first(runs(minutes), span):
                self._find(source, scope, run_start, run_end, changes)
                if changes.shrunk:
                    return False
            for run_start, run_end in runs(sorted(changes.grown)):
                if scope is None:
                    book.read_minutes(source, templates, run_start, run_end)
                else:
                    book.read_minutes(source, templates, run_start, run_end, only=scope)
        return True

    def _find(
        self, source: PageSource, scope: str | None, start: int, end: int, changes: _Changes
    ) -> None:
        """Bisect [start, end) down to the minutes whose total is not the known one."""
        page = source.query(DetailsQuery(start, end, scope, limit=1))
        known = self.book.known_total(scope, start, end)
        if page.total == known:
            return
        if page.total < known:
            changes.shrunk = True
            return
        if end - start <= MINUTE:
            changes.grown.append(start)
            return
        middle = start + ((end - start) // MINUTE // 2) * MINUTE
        self._find(source, scope, start, middle, changes)
        if not changes.shrunk:
            self._find(source, scope, middle, end, changes)
