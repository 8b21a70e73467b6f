"""Immutable snapshots of what one poll learned: the only thing the collector and web read."""

from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import dataclass, field

from exporter.ledger import DELAY_BUCKETS, Tally
from exporter.records import SendResult
from exporter.stats import RequestTotals, cumulative
from exporter.status_codes import StatusCategory, categorize
from exporter.templates import SmsTemplate

OTHER_CODE = "other"


@dataclass(frozen=True, slots=True)
class CodeCount:
    """Final messages with one status code (or the folded ``other``)."""

    status_code: str
    category: StatusCategory
    count: int


@dataclass(frozen=True, slots=True)
class TemplateWindow:
    """One template's counts over one window."""

    template_id: str
    success: int
    failed: int
    sending: int
    codes: tuple[CodeCount, ...]
    delay_buckets: tuple[tuple[float, int], ...]
    delay_sum: float

    @property
    def total(self) -> int:
        """Messages sent in the window."""
        return self.success + self.failed + self.sending

    @property
    def failure_ratio(self) -> float | None:
        """Failed share of final messages; None when nothing is final yet."""
        final = self.success + self.failed
        return self.failed / final if final else None

    @property
    def top_failures(self) -> tuple[CodeCount, ...]:
        """Failing codes, most frequent first."""
        return tuple(c for c in self.codes if c.category is not StatusCategory.DELIVERED)


def summarize(template_id: str, tally: Tally, top_n: int) -> TemplateWindow:
    """A window's tally as exported: top-N codes, the rest folded into ``other``."""
    ranked = sorted(tally.codes.items(), key=lambda item: (-item[1], item[0]))
    codes = [CodeCount(code, categorize(code), n) for code, n in ranked[:top_n]]
    # The rest fold into "other", one per category, so no category is ever hidden.
    folded: dict[StatusCategory, int] = {}
    for code, n in ranked[top_n:]:
        category = categorize(code)
        folded[category] = folded.get(category, 0) + n
    codes.extend(CodeCount(OTHER_CODE, category, n) for category, n in sorted(folded.items()))
    return TemplateWindow(
        template_id=template_id,
        success=tally.success,
        failed=tally.failed,
        sending=tally.sending,
        codes=tuple(codes),
        delay_buckets=cumulative(DELAY_BUCKETS, tally.delay_counts),
        delay_sum=tally.delay_sum_ms / 1000,
    )


@dataclass(frozen=True, slots=True)
class WindowSnapshot:
    """One window's bounds and per-template counts; [start, end) in epoch seconds."""

    name: str
    start: float
    end: float
    complete: bool
    templates: tuple[TemplateWindow, ...]


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """Everything exported for one account after its latest poll."""

    account: str
    up: bool
    poll_interval: float
    templates: tuple[SmsTemplate, ...] = ()
    windows: tuple[WindowSnapshot, ...] = ()
    last_success: float | None = None
    poll_duration: float | None = None
    data_lag: float = 0.0
    sent_total: dict[str, int] = field(default_factory=dict)
    finalized_total: dict[tuple[str, SendResult, StatusCategory], int] = field(default_factory=dict)
    requests: RequestTotals = field(default_factory=RequestTotals)
    records_fetched: int = 0
    records_rejected: dict[str, int] = field(default_factory=dict)
    poll_failures: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    clock_skew: float | None = None
    """Seconds the exporter's clock is ahead of the upstream's (None: not measured)."""


class Generation:
    """Counts the changes to what the polled part of ``/metrics`` shows: every publish
    and every reload bumps it, so the exposition is rendered again exactly then."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0

    def bump(self) -> None:
        """Note one change."""
        with self._lock:
            self._value += 1

    @property
    def value(self) -> int:
        """Changes so far."""
        with self._lock:
            return self._value


class SnapshotBoard:
    """The latest snapshot of every account, swapped whole; safe across threads."""

    def __init__(self, accounts: list[str], generation: Generation | None = None) -> None:
        self._lock = threading.Lock()
        self._order = list(accounts)
        self._snapshots: dict[str, AccountSnapshot] = {}
        self.generation = generation or Generation()

    def publish(self, snapshot: AccountSnapshot) -> None:
        """Replace one account's snapshot."""
        with self._lock:
            self._snapshots[snapshot.account] = snapshot
        self.generation.bump()

    def snapshots(self) -> list[AccountSnapshot]:
        """The latest snapshots, in configuration order."""
        with self._lock:
            return [self._snapshots[a] for a in self._order if a in self._snapshots]

    @property
    def version(self) -> int:
        """Grows with every publish (and with whatever else shares its generation)."""
        return self.generation.value

    @property
    def ready(self) -> bool:
        """True once every account has had a successful poll."""
        return self.polled()

    def polled(self, exempt: Collection[str] = ()) -> bool:
        """True once every account but the ``exempt`` ones has had a successful poll."""
        with self._lock:
            return all(
                a in self._snapshots and self._snapshots[a].last_success is not None
                for a in self._order
                if a not in exempt
            )
