"""Per-template tallies of send records, kept per time bucket of sending time.

Pure: records in, aggregates out. A window is a run of whole buckets, so window counts
are sums of bucket tallies, and monotonic counters are the growth of those tallies.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from exporter.records import SendRecord, SendResult
from exporter.stats import bucket_index
from exporter.status_codes import StatusCategory, categorize

DELAY_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


@dataclass(slots=True)
class Tally:
    """Counts of one template's records over a range of sending time."""

    success: int = 0
    failed: int = 0
    sending: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    delay_counts: list[int] = field(default_factory=lambda: [0] * (len(DELAY_BUCKETS) + 1))
    delay_sum_ms: int = 0

    @property
    def total(self) -> int:
        """Every record counted, final or not."""
        return self.success + self.failed + self.sending

    def add(self, record: SendRecord) -> None:
        """Count one record."""
        if record.send_result is SendResult.SENDING:
            self.sending += 1
            return
        if record.send_result is SendResult.SUCCESS:
            self.success += 1
        else:
            self.failed += 1
        self.codes[record.status_code] += 1
        delay_ms = record.delivery_delay_ms
        if delay_ms is not None:
            self.delay_counts[bucket_index(DELAY_BUCKETS, delay_ms / 1000)] += 1
            self.delay_sum_ms += delay_ms

    def merge(self, other: Tally) -> None:
        """Add another tally into this one."""
        self.success += other.success
        self.failed += other.failed
        self.sending += other.sending
        self.codes.update(other.codes)
        for index, count in enumerate(other.delay_counts):
            self.delay_counts[index] += count
        self.delay_sum_ms += other.delay_sum_ms


def finalized_by_outcome(tally: Tally) -> Counter[tuple[SendResult, StatusCategory]]:
    """Final records of a tally by (result, category)."""
    out: Counter[tuple[SendResult, StatusCategory]] = Counter()
    for code, count in tally.codes.items():
        category = categorize(code)
        result = SendResult.SUCCESS if category is StatusCategory.DELIVERED else SendResult.FAILED
        out[(result, category)] += count
    return out


@dataclass(slots=True)
class Growth:
    """What a re-read range added: messages first seen and messages first seen final."""

    sent: int = 0
    finalized: Counter[tuple[SendResult, StatusCategory]] = field(default_factory=Counter)

    def merge(self, other: Growth) -> None:
        """Add another growth into this one."""
        self.sent += other.sent
        self.finalized.update(other.finalized)


@dataclass(slots=True)
class NetGrowth:
    """The growth of a read of moved minutes, per template, and what the minutes lost."""

    growth: dict[str, Growth] = field(default_factory=dict)
    lost: Growth = field(default_factory=Growth)

    def net(self) -> dict[str, Growth]:
        """Per template, the growth less the losses: a moved message found in its new
        minute is not counted again (taken from the templates in name order)."""
        lost = self.lost
        out: dict[str, Growth] = {}
        for template_id in sorted(self.growth):
            grown = self.growth[template_id]
            kept = Growth(sent=max(0, grown.sent - lost.sent))
            lost.sent -= grown.sent - kept.sent
            for outcome, count in grown.finalized.items():
                taken = min(count, lost.finalized[outcome])
                lost.finalized[outcome] -= taken
                if count > taken:
                    kept.finalized[outcome] = count - taken
            out[template_id] = kept
        return out


def growth_between(old: Tally | None, new: Tally) -> Growth:
    """Messages that ``new`` has and ``old`` had not, as counter increments.

    Records never disappear and final records never change, so growth per outcome is
    exact without remembering message ids. A shrink (upstream inconsistency) adds 0.
    """
    before = Tally() if old is None else old
    growth = Growth(sent=max(0, new.total - before.total))
    old_final = finalized_by_outcome(before)
    for outcome, count in finalized_by_outcome(new).items():
        if count > old_final[outcome]:
            growth.finalized[outcome] = count - old_final[outcome]
    return growth


def losses_between(old: Tally | None, new: Tally) -> Growth:
    """What ``old`` had and ``new`` has not, by the same measures as :func:`growth_between`
    (a stored message that moved to another minute or template)."""
    if old is None:
        return Growth()
    return growth_between(new, old)


def bucket_of(send_time: float, resolution: int) -> int:
    """Start (epoch seconds) of the bucket a sending time falls in."""
    return int(send_time // resolution) * resolution


def tally_by_bucket(records: Iterable[SendRecord], resolution: int) -> dict[int, Tally]:
    """Fold records into one tally per bucket of sending time."""
    out: dict[int, Tally] = {}
    for record in records:
        key = bucket_of(record.send_time, resolution)
        tally = out.get(key)
        if tally is None:
            tally = out[key] = Tally()
        tally.add(record)
    return out


@dataclass(slots=True)
class TemplateLedger:
    """One template's bucket tallies."""

    buckets: dict[int, Tally] = field(default_factory=dict)

    def replace(
        self,
        start: int,
        end: int,
        resolution: int,
        tallies: dict[int, Tally],
        lost: Growth | None = None,
    ) -> Growth:
        """Replace buckets in [start, end) with freshly read tallies; return the growth
        (and add what the buckets lost to ``lost``)."""
        growth = Growth()
        for key in range(start, end, resolution):
            new = tallies.get(key, Tally())
            growth.merge(growth_between(self.buckets.get(key), new))
            if lost is not None:
                lost.merge(losses_between(self.buckets.get(key), new))
            if new.total:
                self.buckets[key] = new
            else:
                self.buckets.pop(key, None)
        return growth

    def window(self, start: int, end: int, resolution: int) -> Tally:
        """Sum of the buckets in [start, end) (bucket starts are multiples of ``resolution``)."""
        out = Tally()
        if (end - start) // resolution < len(self.buckets):
            for key in range(start - start % resolution, end, resolution):
                tally = self.buckets.get(key)
                if tally is not None and key >= start:
                    out.merge(tally)
            return out
        for key, tally in self.buckets.items():
            if start <= key < end:
                out.merge(tally)
        return out

    def forget_before(self, start: int) -> None:
        """Drop buckets that start before ``start``."""
        for key in [k for k in self.buckets if k < start]:
            del self.buckets[key]
