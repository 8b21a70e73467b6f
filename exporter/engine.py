"""The incremental engine: each poll pays for what changed in the window, not for the window.

Sending details change in three ways only: new messages arrive, pending ones resolve
(up to 72 h later) and messages held for review appear late with their original send
time. Per poll the engine therefore

1. reads the minutes it has never read, newest first (at start-up: the whole window);
   in steady state the query that reads the new minute also proves that no held
   message appeared (:mod:`exporter.holds`);
2. otherwise checks the review-hold horizon with ``total`` queries and reads again only
   the minutes that changed (:mod:`exporter.holds`);
3. finds the pending messages that resolved and reads just those
   (:mod:`exporter.followup`);
4. checks, with a ``total`` query, that the minutes past the hold horizon still hold
   what was read; where the upstream's history changed, reads them again, all of them
   when records vanished (:mod:`exporter.history`; not for a push account's own store).

A push account's store also moves messages it holds (a late registration): before
step 1, the minutes they moved from and to are read again (:mod:`exporter.moves`), and
the whole poll reads one snapshot of the store.

A minute is first read ``settle_delay`` after it ends, when most of its messages are
final, so step 3 stays small. What the engine knows lives in its
:class:`~exporter.minutebook.MinuteBook`; every query is paid from one
:class:`~exporter.budget.Budget`, and what the budget leaves undone is done next poll
(the window is marked incomplete until then).

    ranges ← budget
    ranges, pending ← minutebook ← holds, resolutions ← followup ← engine
"""

from __future__ import annotations

from exporter.budget import Budget, Budgeted, Step
from exporter.errors import BudgetExhausted
from exporter.fetch import PageSource, snapshot_of
from exporter.followup import PendingFollowUp
from exporter.history import HistoryCheck
from exporter.holds import HoldCheck
from exporter.minutebook import EngineSettings, MinuteBook, PollOutcome
from exporter.moves import MoveCheck
from exporter.ranges import MINUTE, chunks_newest_first, minute_floor, runs

__all__ = ["Engine", "EngineSettings", "PollOutcome"]

READ_CHUNK_MINUTES = 15
"""Unread minutes are read in chunks this long, so a spent budget cuts between minutes."""


class Engine:
    """Per-account incremental state (its minute book) and the poll that advances it."""

    def __init__(self, settings: EngineSettings) -> None:
        self.book = MinuteBook(settings)
        self.holds = HoldCheck(self.book)
        self.history = HistoryCheck(self.book)
        self.followup = PendingFollowUp(self.book)
        self.moves = MoveCheck(self.book)
        self._previous_end: int | None = None
        self._chunk = READ_CHUNK_MINUTES * MINUTE
        """How much of the unread window one read takes: halved while a chunk needs more
        requests than a whole poll may spend (it would never be read), down to a minute."""

    @property
    def settings(self) -> EngineSettings:
        """The settings in force."""
        return self.book.settings

    def reconfigure(self, settings: EngineSettings) -> None:
        """Apply reloaded settings; tallies, pending messages and counters are kept."""
        self.book.settings = settings
        self._chunk = READ_CHUNK_MINUTES * MINUTE  # a new budget may fit whole chunks

    def poll(
        self, source: PageSource, templates: list[str], now: float, budget: Budget | None = None
    ) -> PollOutcome:
        """Advance to ``now``: UpstreamError propagates, a spent budget cuts the poll short;
        either way the state stays consistent and the next poll goes on from it.

        A source with snapshots (a push store) is read from one snapshot for the whole
        poll: the moves it is asked for are then all the moves its reads can see."""
        with snapshot_of(source):
            return self._poll(source, templates, now, budget)

    def _poll(
        self, source: PageSource, templates: list[str], now: float, budget: Budget | None
    ) -> PollOutcome:
        settings = self.settings
        book = self.book
        end = minute_floor(now - settings.settle_delay)
        outcome = PollOutcome(end=end)
        budget = budget or Budget(settings.request_budget)
        budget.renew(settings.request_budget)
        paid = Budgeted(source, budget)
        book.forget_before(end - settings.window, end)
        if settings.full_scan:
            book.read.clear()
        book.follow_selection(templates)
        previous, self._previous_end = self._previous_end, end
        book.end = end
        if self.holds.first_end is None:
            self.holds.first_end = end
        if not settings.full_scan:
            # Not paid from the budget: the store is local, and a cut between a move's two
            # minutes would leave them unread poll after poll.
            self.moves.check(source, templates, end - settings.window, end)
        earlier = set(book.read)
        try:
            holds_checked = self._read_new(paid, templates, previous, end)
            history_checked = holds_checked and settings.check_history
            self._read_unread(paid, templates, end)
            self._read_backfill(paid, templates)
            if not settings.full_scan:
                if not holds_checked:
                    budget.step = Step.HOLDS
                    self.holds.check(paid, templates, end, earlier)
                budget.step = Step.PENDING
                resolved = self.followup.find_resolved(paid, end)
                outcome.resolved = len(resolved)
                budget.step = Step.RESOLVED
                self.followup.read(paid, end, resolved)
                if settings.check_history and not history_checked:
                    budget.step = Step.HOLDS
                    self._check_history(paid, templates, end)
            outcome.checks_done = True
        except BudgetExhausted as exc:
            outcome.cut_short = str(exc)
        finally:
            outcome.requests = budget.by_step
        return outcome

    def _read_new(
        self, source: PageSource, templates: list[str], previous: int | None, end: int
    ) -> bool:
        """The steady-state read of the new minutes with the hold check in the same query."""
        settings = self.settings
        if not settings.cross_template or settings.full_scan:
            return False
        if previous is None or previous >= end:
            return False
        # With the history check on, the same query also verifies the window's history.
        since = end - settings.window if settings.check_history else None
        return self.holds.read_new(source, templates, previous, end, since)

    def _check_history(self, source: Budgeted, templates: list[str], end: int) -> None:
        """Verify the minutes past the hold horizon; when the upstream lost records, forget
        every minute read and read the window again, newest first, as far as the budget goes."""
        start = end - self.settings.window
        if self.history.check(source, templates, start, self.holds.horizon(end)):
            return
        self.book.read.clear()
        self.book.backfill.clear()
        source.budget.step = Step.READ
        self._read_unread(source, templates, end)
        source.budget.step = Step.HOLDS

    def _read_unread(self, source: Budgeted, templates: list[str], end: int) -> None:
        settings = self.settings
        start = end - settings.window
        unread = [m for m in range(start, end, MINUTE) if m not in self.book.read]
        # Small chunks let a budget cut fall between minutes; a full scan reads it all.
        chunk = settings.window if settings.full_scan else self._chunk
        size = min(chunk, int(settings.max_query_span))
        for chunk_start, chunk_end in chunks_newest_first(runs(unread), size):
            left = source.budget.limit - source.budget.used
            try:
                self.book.read_minutes(source, templates, chunk_start, chunk_end)
            except BudgetExhausted:
                # A chunk that took most of a poll's budget and still did not fit would
                # cut every poll short at the same place: read less at a time.
                if 2 * left >= source.budget.limit and chunk_end - chunk_start > MINUTE:
                    self._chunk = max(MINUTE, (chunk_end - chunk_start) // 2 // MINUTE * MINUTE)
                raise

    def _read_backfill(self, source: PageSource, templates: list[str]) -> None:
        book = self.book
        size = min(self._chunk, int(self.settings.max_query_span))
        for template_id in sorted(book.backfill):
            minutes = book.backfill[template_id]
            for start, end in chunks_newest_first(runs(minutes), size):
                book.read_minutes(source, templates, start, end, only=template_id)
                minutes.difference_update(range(start, end, MINUTE))
            del book.backfill[template_id]
