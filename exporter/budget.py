"""The one request budget of a poll, shared by the engine's queries and the client's retries.

A poll renews it; every upstream request is paid from it (a query by the engine, a
retry by the HTTP client), so ``request_budget`` bounds what one poll can cost whatever
fails. What a spent budget leaves undone waits for the next poll.
"""

from __future__ import annotations

from collections import Counter
from contextlib import AbstractContextManager
from enum import StrEnum

from exporter.errors import BudgetExhausted
from exporter.fetch import PageSource, snapshot_of
from exporter.records import DetailsPage, DetailsQuery


class Step(StrEnum):
    """The engine step a request is paid for (``PollOutcome.requests`` counts by it)."""

    READ = "read"  # minutes never read (new, start-up, backfill)
    HOLDS = "holds"  # the review-hold check, and minutes it reads again
    PENDING = "pending"  # finding which followed messages resolved
    RESOLVED = "resolved"  # reading the resolved ones


class Budget:
    """Counts the requests of one poll against a limit, by the engine step that made them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.step = Step.READ
        self.by_step: Counter[Step] = Counter()

    def renew(self, limit: int | None = None) -> None:
        """Start a poll: nothing spent yet (``limit``: a reloaded one)."""
        if limit is not None:
            self.limit = limit
        self.used = 0
        self.step = Step.READ
        self.by_step = Counter()

    @property
    def left(self) -> bool:
        """Whether another request may be made."""
        return self.used < self.limit

    def take(self) -> None:
        """Spend one request, or raise BudgetExhausted."""
        if not self.left:
            raise BudgetExhausted(f"request budget of {self.limit} spent")
        self.used += 1
        self.by_step[self.step] += 1


class Budgeted:
    """A page source whose every query is paid from a budget."""

    def __init__(self, source: PageSource, budget: Budget) -> None:
        self._source = source
        self.budget = budget

    def query(self, query: DetailsQuery) -> DetailsPage:
        """Pay for one query, then make it."""
        self.budget.take()
        return self._source.query(query)

    def snapshot(self) -> AbstractContextManager[object]:
        """The source's snapshot, if it has them (a snapshot costs no request)."""
        return snapshot_of(self._source)
