"""Deterministic message generation, one block per template per simulated minute.

A block's messages depend only on (seed, template, minute), so the same seed gives the
same data however the clock is advanced and wherever the traffic starts. Send and report
times are whole seconds, as Huawei's reports and registrations carry them. Columns are
compact ``array`` objects.
"""

from __future__ import annotations

import hashlib
import math
import random
from array import array
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate

from exporter.simulator.scenario import Scenario
from exporter.simulator.template_specs import COUNTRY_PLANS, TemplateSpec
from exporter.status_codes import DELIVERED_CODE, EXPIRED_CODE, is_platform_code

CHUNK_MS = 60_000
HOUR_MS = 3_600_000
EXPIRY_MS = 72 * HOUR_MS
REVIEW_REJECTED_CODE = "SC:0001"
# A phone off for hours: the carrier delivers when it is back, or gives up.
LATE_FAILURE_CODES: tuple[tuple[str, float], ...] = (
    ("UNDELIV", 3),
    ("MA:0022", 2),
    ("MC:0001", 2),
    ("ID:0061", 1),
)

# Realistic codes per failure category (facts §5), with relative weights.
CATEGORY_CODES: dict[str, tuple[tuple[str, float], ...]] = {
    "expired": (("E200034", 3), ("MA:0022", 2), ("MC:0001", 2), ("ID:0061", 1)),
    "invalid_number": (("UNDELIV", 6), ("MK:0001", 2), ("MN:0001", 1), ("MI:0024", 1)),
    "carrier_rejected": (("REJECTD", 5), ("DELETED", 1), ("DJ:0255", 1), ("SGIP:13", 1)),
    "blacklisted": (("BLACK", 4), ("SC:0003", 2), ("SC:0016", 2), ("TDBLACK", 1)),
    "content_blocked": (("KEYWORD", 4), ("MK:1004", 1), ("E200051", 1)),
    "rate_limited": (("MILIMIT", 3), ("LIMIT", 2), ("E200036", 1), ("BEYONDN", 1)),
    "platform_config": (("E200018", 3), ("E200020", 2), ("E200024", 1), ("E000629", 1)),
    "unknown": (("UNKNOWN", 1),),
}


class CodeTable:
    """Status codes interned to small integers (0 is DELIVRD, 1 is EXPIRED)."""

    def __init__(self) -> None:
        self.codes: list[str] = [DELIVERED_CODE, EXPIRED_CODE]
        self._index: dict[str, int] = {DELIVERED_CODE: 0, EXPIRED_CODE: 1}

    def intern(self, code: str) -> int:
        """The integer for ``code``, adding it when new."""
        found = self._index.get(code)
        if found is None:
            found = self._index[code] = len(self.codes)
            self.codes.append(code)
        return found


CODES = CodeTable()
DELIVERED = 0
EXPIRED = 1


@dataclass(frozen=True, slots=True)
class Hold:
    """A manual-review hold: the template's messages sent in [start, end) appear at end.

    A rejected hold ends the review with SC:0001 for every held message, at release.
    """

    template: int
    start_ms: int
    end_ms: int
    rejected: bool = False


@dataclass(slots=True)
class Block:
    """One template's messages of one simulated minute, sorted by (send time, id)."""

    template: int
    chunk: int
    send_ms: array[int]
    report_ms: array[int]
    codes: array[int]
    segments: array[int]
    mobiles: array[int]
    id_hi: array[int]
    id_lo: array[int]
    success_reports: array[int] = field(default_factory=lambda: array("q"))
    failed_reports: array[int] = field(default_factory=lambda: array("q"))
    mobile_index: array[int] | None = None
    last_report_ms: int = 0

    def __len__(self) -> int:
        return len(self.send_ms)

    def reindex(self) -> None:
        """Rebuild the sorted report times used to count results without scanning."""
        ok = sorted(r for r, c in zip(self.report_ms, self.codes, strict=True) if c == DELIVERED)
        bad = sorted(r for r, c in zip(self.report_ms, self.codes, strict=True) if c != DELIVERED)
        self.success_reports = array("q", ok)
        self.failed_reports = array("q", bad)
        self.mobile_index = None
        self.last_report_ms = max(self.report_ms, default=0)

    def has_mobile(self, mobile: int) -> bool:
        """True when some message of the block went to ``mobile``."""
        if self.mobile_index is None:
            self.mobile_index = array("Q", sorted(self.mobiles))
        i = bisect_right(self.mobile_index, mobile)
        return i > 0 and self.mobile_index[i - 1] == mobile


def rng_for(seed: int, *parts: object) -> random.Random:
    """A generator seeded from the run seed and a stable key."""
    key = ":".join([str(seed), *map(str, parts)]).encode()
    return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big"))


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (normal approximation for large means)."""
    if lam <= 0:
        return 0
    if lam > 50:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def format_message_id(hi: int, lo: int) -> str:
    """A Huawei-style ``smsMsgId``: uuid-like hex plus ``_N``; sorts like (hi, lo)."""
    h = f"{hi:016x}{lo:016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}_{1 + lo % 9}"


def chunk_rate(scenario: Scenario, spec: TemplateSpec, chunk: int) -> float:
    """Expected messages of ``spec`` in one chunk."""
    hour = (chunk * CHUNK_MS // HOUR_MS) % 24
    per_hour = spec.rate_per_hour * scenario.rate_multiplier * scenario.daily_shape[hour]
    return per_hour * CHUNK_MS / HOUR_MS


def holds_for_hour(scenario: Scenario, seed: int, hour: int) -> list[Hold]:
    """The review holds that start within simulated hour ``hour``."""
    cfg = scenario.review_holds
    weights = [t.review_hold_weight for t in scenario.templates]
    if cfg.per_hour <= 0 or sum(weights) <= 0:
        return []
    rng = rng_for(seed, "holds", hour)
    holds = []
    for _ in range(poisson(rng, cfg.per_hour)):
        template = rng.choices(range(len(weights)), weights=weights)[0]
        start = hour * HOUR_MS + rng.randrange(HOUR_MS // 1000) * 1000
        length = round(rng.uniform(cfg.min_seconds, cfg.max_seconds)) * 1000
        rejected = rng.random() < cfg.rejected_share
        holds.append(Hold(template, start, start + length, rejected))
    return holds


def _code_picker(spec: TemplateSpec) -> tuple[list[int], list[float]]:
    codes: list[int] = []
    weights: list[float] = []
    total = sum(spec.failure_mix.values()) or 1.0
    for category, share in spec.failure_mix.items():
        table = CATEGORY_CODES[category]
        inner = sum(w for _, w in table)
        for code, w in table:
            codes.append(CODES.intern(code))
            weights.append(share / total * w / inner)
    return codes, list(accumulate(weights))


def _seconds_ms(seconds: float) -> int:
    """A delay in whole milliseconds of whole seconds, at least one second."""
    return 1000 * max(1, round(seconds))


def _cumulative(table: tuple[tuple[str, float], ...]) -> tuple[list[int], list[float]]:
    return [CODES.intern(code) for code, _ in table], list(accumulate(w for _, w in table))


def generate_block(scenario: Scenario, seed: int, template: int, chunk: int) -> Block | None:
    """The messages of one template in one chunk, or None when there are none."""
    spec = scenario.templates[template]
    rng = rng_for(seed, spec.template_id, chunk)
    n = poisson(rng, chunk_rate(scenario, spec, chunk))
    if n == 0:
        return None
    rnd, bits = rng.random, rng.getrandbits
    start = chunk * CHUNK_MS
    seconds = CHUNK_MS // 1000
    pairs = sorted((start + int(rnd() * seconds) * 1000, bits(128)) for _ in range(n))
    return draw_messages(scenario, template, chunk, rng, pairs)


def draw_messages(
    scenario: Scenario,
    template: int,
    chunk: int,
    rng: random.Random,
    pairs: list[tuple[int, int]],
    recipients: list[tuple[int, int]] | None = None,
) -> Block:
    """The block of messages sent at ``pairs`` (send ms, 128-bit id), their outcomes drawn
    from the template's delivery model: expiry, failure mix, carrier delay, the late tail.

    Generated traffic draws each recipient and segment count too; messages sent through
    the API pass theirs as ``recipients`` (mobile digits, segments), one per pair.
    """
    spec = scenario.templates[template]
    rnd = rng.random
    fail_codes, fail_cum = _code_picker(spec)
    fail_total = fail_cum[-1] if fail_cum else 0.0
    expire_cut = scenario.never_reported_share
    fail_cut = expire_cut + spec.failure_share * (1 - expire_cut)
    late = scenario.late_reports
    late_lo, late_span = math.log(late.min_seconds), math.log(late.max_seconds / late.min_seconds)
    late_codes, late_cum = _cumulative(LATE_FAILURE_CODES)
    w1, w2, w3 = scenario.segment_weights
    seg1, seg2 = w1 / (w1 + w2 + w3), (w1 + w2) / (w1 + w2 + w3)
    mu, sigma = math.log(scenario.delay.median_seconds), scenario.delay.sigma
    cap = scenario.delay.max_seconds
    lognorm = rng.lognormvariate
    plans = [
        (cc, int(cc) * 10**length, length, lead)
        for cc in spec.countries
        for length, lead in [COUNTRY_PLANS[cc]]
    ]
    platform = [is_platform_code(CODES.codes[c]) for c in fail_codes]
    sends, reports, codes, segs, mobiles, his, los = (
        array("q"),
        array("q"),
        array("H"),
        array("B"),
        array("Q"),
        array("Q"),
        array("Q"),
    )
    mask = (1 << 64) - 1
    for m, (send, ident) in enumerate(pairs):
        u = rnd()
        quick = False
        if u < expire_cut:
            code, report = EXPIRED, send + EXPIRY_MS
        elif u < fail_cut and fail_codes:
            k = bisect_right(fail_cum, rnd() * fail_total)
            k = min(k, len(fail_codes) - 1)
            code, quick = fail_codes[k], platform[k]
            delay = rnd() * 1.5 if quick else min(cap, lognorm(mu, sigma))
            report = send + _seconds_ms(delay)
        else:
            code = DELIVERED
            report = send + _seconds_ms(min(cap, lognorm(mu, sigma)))
        if code != EXPIRED and not quick and rnd() < late.share:
            report = send + _seconds_ms(math.exp(late_lo + rnd() * late_span))
            code = DELIVERED
            if rnd() < late.failed_share:
                k = bisect_right(late_cum, rnd() * late_cum[-1])
                code = late_codes[min(k, len(late_codes) - 1)]
        if recipients is None:
            v = rnd()
            _, base, length, lead = plans[int(rnd() * len(plans))]
            first = int(lead[int(rnd() * len(lead))])
            mobiles.append(base + first * 10 ** (length - 1) + int(rnd() * 10 ** (length - 1)))
            segs.append(1 if v < seg1 else 2 if v < seg2 else 3)
        else:
            mobiles.append(recipients[m][0])
            segs.append(recipients[m][1])
        sends.append(send)
        reports.append(report)
        codes.append(code)
        his.append(ident >> 64)
        los.append(ident & mask)
    return Block(template, chunk, sends, reports, codes, segs, mobiles, his, los)


def expire_overdue(block: Block, i: int) -> None:
    """A report due later than send + 72 h never comes: the platform writes EXPIRED then."""
    deadline = block.send_ms[i] + EXPIRY_MS
    if block.report_ms[i] > deadline:
        block.codes[i] = EXPIRED
        block.report_ms[i] = deadline


def apply_holds(block: Block, holds: list[Hold]) -> None:
    """Held messages are reported only after their release (plus their own delay).

    A rejected review fails every held message with SC:0001 a second after release.
    """
    rejected = CODES.intern(REVIEW_REJECTED_CODE)
    for hold in holds:
        if hold.template != block.template:
            continue
        for i, send in enumerate(block.send_ms):
            if not hold.start_ms <= send < hold.end_ms:
                continue
            if hold.rejected:
                block.codes[i] = rejected
                block.report_ms[i] = hold.end_ms + 1000
            elif block.codes[i] != EXPIRED:
                block.report_ms[i] = max(
                    block.report_ms[i], hold.end_ms + block.report_ms[i] - send
                )
                expire_overdue(block, i)
