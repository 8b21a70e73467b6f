"""The platform's message store: generated blocks indexed by template and minute.

Queries and truth read the state of every message at a simulated instant ``now``
(epoch milliseconds): a message is visible once sent (``send < now``) unless a review
hold still covers it; it is ``sending`` until its report time, then final.

Messages sent through the sending API (:meth:`MessageStore.send`) sit in a second,
append-only block per template and minute, beside the generated one: their outcomes
come from the same delivery model, review holds and incidents, and every query, the
truth and the pushes read both blocks.

Like Huawei's sending details (kept 60 days), the store keeps ``retention_ms`` of
messages (the query lookback, never under 73 h: a message's last report is due 72 h
after it is sent): older minutes, generated or sent, go with what their send requests
asked, so a long-running simulator holds a bounded amount under any send load.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from exporter.records import SendRecord, SendResult, mask_mobile
from exporter.simulator.incidents import Incident, apply_incident, parse_incident
from exporter.simulator.scenario import Scenario
from exporter.simulator.traffic import (
    CHUNK_MS,
    CODES,
    DELIVERED,
    EXPIRY_MS,
    HOUR_MS,
    Block,
    Hold,
    apply_holds,
    draw_messages,
    format_message_id,
    generate_block,
    holds_for_hour,
    rng_for,
)
from exporter.status_codes import describe

Piece = tuple[Block, int, int]
_MASK32 = (1 << 32) - 1
DEFAULT_RETENTION_MS = 60 * 86_400_000
"""Huawei keeps sending details 60 days (the query lookback's default)."""
MIN_RETENTION_MS = EXPIRY_MS + HOUR_MS
"""Every message stays at least until its last report is due (72 h), and an hour more."""


@dataclass(frozen=True, slots=True)
class SentMeta:
    """What a send request asked for its reports: its statusCallback and its extend."""

    callback: str | None
    extend: str | None


@dataclass(frozen=True, slots=True)
class Sent:
    """Messages the sending API accepted: when, and their ids in the order of the numbers."""

    send_ms: int
    template: int
    chunk: int
    first: int
    """The index of the first of them in the template's sent block of ``chunk``."""
    message_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Footprint:
    """What the store holds: the entries its memory grows with."""

    first_minute_ms: int
    """The start of the oldest minute kept."""
    blocks: int
    """Blocks of a template's minute, generated or sent through the API."""
    messages: int
    requests: int
    """Send requests whose statusCallback or extend is kept for their messages."""
    hold_hours: int
    """Hours whose review holds are kept."""


@dataclass(frozen=True, slots=True)
class Filters:
    """The console's filters, in store units (milliseconds, digits as an integer)."""

    start_ms: int
    end_ms: int
    template_id: str | None = None
    mobile: int | None = None
    send_result: SendResult | None = None


class MessageStore:
    """Generates traffic on demand up to ``now`` and answers queries and truth."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        traffic_start_ms: int,
        retention_ms: int = DEFAULT_RETENTION_MS,
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.lock = threading.RLock()
        self.incidents: list[Incident] = []
        self.generated = 0
        self._index = {t.template_id: i for i, t in enumerate(scenario.templates)}
        self._blocks: list[dict[int, Block]] = [{} for _ in scenario.templates]
        # Traffic starts at a whole minute, so the first minute is the same in every run.
        self._next_chunk = self._first_chunk = traffic_start_ms // CHUNK_MS
        self._holds: dict[int, list[Hold]] = {}
        self._merged: OrderedDict[tuple[Any, ...], list[tuple[Block, int]]] = OrderedDict()
        self._sent: list[dict[int, Block]] = [{} for _ in scenario.templates]
        self.sent = 0
        """Messages accepted by the sending API."""
        self.retention_ms = max(retention_ms, MIN_RETENTION_MS)
        """Messages sent this long before now are dropped, a minute at a time."""
        # Per (template, minute) of sent blocks: (first, end, meta) of each request that
        # named a statusCallback or an extend, by index in the block (ordered by first).
        self._meta: dict[tuple[int, int], list[tuple[int, int, SentMeta]]] = {}
        self._last_send_ms = 0

    # -- generation -------------------------------------------------------------

    def advance_to(self, now_ms: int) -> None:
        """Drop the minutes past the retention; generate every chunk that starts before
        ``now_ms`` (none of those already past it)."""
        with self.lock:
            self._trim(now_ms)
            while self._next_chunk * CHUNK_MS < now_ms:
                self._generate(self._next_chunk)
                self._next_chunk += 1

    def _trim(self, now_ms: int) -> None:
        """Drop every minute that ended ``retention_ms`` or more before ``now_ms``."""
        keep_from = (now_ms - self.retention_ms) // CHUNK_MS
        if keep_from <= self._first_chunk:
            return
        for chunk in range(self._first_chunk, min(keep_from, self._next_chunk)):
            for t in range(len(self.scenario.templates)):
                self._blocks[t].pop(chunk, None)
                self._sent[t].pop(chunk, None)
                self._meta.pop((t, chunk), None)
        self._first_chunk = keep_from
        self._next_chunk = max(self._next_chunk, keep_from)
        first_hour = keep_from * CHUNK_MS // HOUR_MS - 1  # _holds_near reads the hour before
        for hour in [h for h in self._holds if h < first_hour]:
            del self._holds[hour]
        self._merged.clear()

    @property
    def first_chunk(self) -> int:
        """The oldest minute kept (in minutes since the epoch)."""
        with self.lock:
            return self._first_chunk

    def footprint(self) -> Footprint:
        """Counts of what the store holds now."""
        with self.lock:
            blocks = [b for kept in [*self._blocks, *self._sent] for b in kept.values()]
            return Footprint(
                first_minute_ms=self._first_chunk * CHUNK_MS,
                blocks=len(blocks),
                messages=sum(len(b) for b in blocks),
                requests=sum(len(ranges) for ranges in self._meta.values()),
                hold_hours=len(self._holds),
            )

    def _hour_holds(self, hour: int) -> list[Hold]:
        holds = self._holds.get(hour)
        if holds is None:
            holds = self._holds[hour] = holds_for_hour(self.scenario, self.seed, hour)
        return holds

    def _holds_near(self, at_ms: int) -> list[Hold]:
        hour = at_ms // HOUR_MS
        return self._hour_holds(hour - 1) + self._hour_holds(hour)

    def _generate(self, chunk: int) -> None:
        start, end = chunk * CHUNK_MS, (chunk + 1) * CHUNK_MS
        holds = [h for h in self._holds_near(start) if h.start_ms < end and h.end_ms > start]
        for t, spec in enumerate(self.scenario.templates):
            block = generate_block(self.scenario, self.seed, t, chunk)
            if block is None:
                continue
            apply_holds(block, holds)
            for incident in self.incidents:
                apply_incident(block, incident, spec.template_id, self.seed)
            block.reindex()
            self._blocks[t][chunk] = block
            self.generated += len(block)

    def add_incident(self, body: object, now_ms: int) -> Incident:
        """Start an incident at ``now_ms``; ValueError names a bad field."""
        with self.lock:
            self.advance_to(now_ms)
            incident = parse_incident(body, len(self.incidents) + 1, now_ms, set(self._index))
            self.incidents.append(incident)
            # Blocks already generated hold messages not yet sent: rewrite them the same
            # way a later generation would, so results do not depend on clock steps.
            for chunk in range(now_ms // CHUNK_MS, self._next_chunk):
                for t, spec in enumerate(self.scenario.templates):
                    block = self._blocks[t].get(chunk)
                    if block is not None and apply_incident(
                        block, incident, spec.template_id, self.seed
                    ):
                        block.reindex()
            self._merged.clear()
            return incident

    def send(
        self,
        template: int,
        recipients: list[tuple[int, int]],
        now_ms: int,
        meta: SentMeta | None = None,
    ) -> Sent:
        """Send one message per (mobile digits, segments) of ``template`` at ``now_ms``.

        The send time is the whole second at or before ``now_ms`` (never before an earlier
        send), so the message is visible once the clock passes it, like generated ones.
        Outcomes are drawn from the template's model, seeded by the run seed, the send
        time and the count of messages sent before: the same requests at the same
        simulated times give the same results. Ids grow with that count, so the sent
        block only ever grows at its end.
        """
        with self.lock:
            send_ms = max(self._last_send_ms, now_ms // 1000 * 1000)
            self.advance_to(send_ms + 1)  # the minute of the send is generated
            self._last_send_ms = send_ms
            spec = self.scenario.templates[template]
            rng = rng_for(self.seed, "sent", spec.template_id, send_ms, self.sent)
            head = (send_ms // 1000 & _MASK32) << 32
            pairs = [
                (send_ms, (head | (self.sent + k) & _MASK32) << 64 | rng.getrandbits(64))
                for k in range(len(recipients))
            ]
            chunk = send_ms // CHUNK_MS
            fresh = draw_messages(self.scenario, template, chunk, rng, pairs, recipients)
            apply_holds(fresh, self._holds_near(send_ms))
            for incident in self.incidents:
                apply_incident(fresh, incident, spec.template_id, self.seed)
            block = self._sent[template].setdefault(chunk, _empty(template, chunk))
            first = len(block)
            for name in ("send_ms", "report_ms", "codes", "segments", "mobiles", "id_hi", "id_lo"):
                getattr(block, name).extend(getattr(fresh, name))
            block.reindex()
            self._merged.clear()
            self.sent += len(recipients)
            ids = tuple(
                format_message_id(fresh.id_hi[i], fresh.id_lo[i]) for i in range(len(fresh))
            )
            if meta is not None and (meta.callback or meta.extend):
                self._meta.setdefault((template, chunk), []).append((first, len(block), meta))
            return Sent(send_ms, template, chunk, first, ids)

    def meta_of(self, template: int, chunk: int, index: int) -> SentMeta | None:
        """What the send request of a message of a sent block asked for its reports."""
        ranges = self._meta.get((template, chunk))
        if not ranges:
            return None
        k = bisect_right(ranges, index, key=lambda r: r[0]) - 1
        return ranges[k][2] if k >= 0 and index < ranges[k][1] else None

    def blocks_of(self, template: int, chunk: int) -> list[Block]:
        """The template's blocks of one minute: generated, then sent through the API."""
        return [
            block
            for block in (self._blocks[template].get(chunk), self._sent[template].get(chunk))
            if block is not None
        ]

    def sent_block(self, template: int, chunk: int) -> Block | None:
        """The template's block of messages sent through the API in one minute."""
        return self._sent[template].get(chunk)

    # -- visibility -------------------------------------------------------------

    def _cutoff(self, template: int, now_ms: int) -> int:
        """Messages of ``template`` sent at or after this are not visible yet."""
        cut = now_ms
        for hold in self._holds_near(now_ms):
            if hold.template == template and hold.start_ms < now_ms < hold.end_ms:
                cut = min(cut, hold.start_ms)
        return cut

    def _templates(self, template_id: str | None) -> list[int]:
        if template_id is None:
            return list(range(len(self.scenario.templates)))
        found = self._index.get(template_id)
        return [] if found is None else [found]

    def _groups(self, f: Filters, now_ms: int) -> Iterator[tuple[int, list[Piece]]]:
        """Per chunk, the visible slice of each template's block within [start, end)."""
        bounds = [
            (t, min(f.end_ms, self._cutoff(t, now_ms))) for t in self._templates(f.template_id)
        ]
        bounds = [(t, end) for t, end in bounds if end > f.start_ms]
        if not bounds:
            return
        last = min(max(end for _, end in bounds) - 1, self._next_chunk * CHUNK_MS - 1)
        sending_only = f.send_result is SendResult.SENDING
        # From the first block, not the start asked: a truth window may begin in year 1.
        first = max(f.start_ms // CHUNK_MS, self._first_chunk)
        # Templates with messages sent through the API have a second block a minute.
        sent = [(t, end) for t, end in bounds if self._sent[t]]
        for chunk in range(first, last // CHUNK_MS + 1):
            lo_ms, hi_ms = chunk * CHUNK_MS, (chunk + 1) * CHUNK_MS
            pieces: list[Piece] = []
            for blocks, templates in ((self._blocks, bounds), (self._sent, sent)):
                for t, end in templates:
                    block = blocks[t].get(chunk)
                    if block is None or end <= lo_ms:
                        continue
                    if sending_only and block.last_report_ms <= now_ms:
                        continue  # every message of the block is final
                    lo = 0 if f.start_ms <= lo_ms else bisect_left(block.send_ms, f.start_ms)
                    hi = len(block) if end >= hi_ms else bisect_left(block.send_ms, end)
                    if hi > lo:
                        pieces.append((block, lo, hi))
            if pieces:
                yield chunk, pieces

    @staticmethod
    def _result(block: Block, i: int, now_ms: int) -> SendResult:
        if block.report_ms[i] > now_ms:
            return SendResult.SENDING
        return SendResult.SUCCESS if block.codes[i] == DELIVERED else SendResult.FAILED

    def _matches(self, piece: Piece, f: Filters, now_ms: int) -> Iterator[int]:
        block, lo, hi = piece
        if f.mobile is not None and not block.has_mobile(f.mobile):
            return
        for i in range(lo, hi):
            if f.mobile is not None and block.mobiles[i] != f.mobile:
                continue
            if f.send_result is not None and self._result(block, i, now_ms) is not f.send_result:
                continue
            yield i

    def _count(self, piece: Piece, f: Filters, now_ms: int) -> int:
        block, lo, hi = piece
        if f.mobile is None and f.send_result is None:
            return hi - lo
        if f.mobile is None and lo == 0 and hi == len(block):
            ok = bisect_right(block.success_reports, now_ms)
            bad = bisect_right(block.failed_reports, now_ms)
            counts = {
                SendResult.SUCCESS: ok,
                SendResult.FAILED: bad,
                SendResult.SENDING: len(block) - ok - bad,
            }
            return counts[f.send_result] if f.send_result is not None else hi - lo
        return sum(1 for _ in self._matches(piece, f, now_ms))

    # -- queries ----------------------------------------------------------------

    def query(
        self, f: Filters, offset: int, limit: int, now_ms: int
    ) -> tuple[int, list[SendRecord]]:
        """``total`` matching messages and the page [offset, offset + limit) in order."""
        with self.lock:
            self.advance_to(now_ms)
            total = 0
            page: list[SendRecord] = []
            for chunk, pieces in self._groups(f, now_ms):
                count = sum(self._count(p, f, now_ms) for p in pieces)
                want_from, want_to = offset + len(page), offset + limit
                if count and want_from < want_to and total + count > want_from:
                    ordered = self._ordered(chunk, pieces, f, now_ms)
                    skip = want_from - total
                    for block, i in ordered[skip : skip + want_to - want_from]:
                        page.append(self._record(block, i, now_ms))
                total += count
            return total, page

    def _ordered(
        self, chunk: int, pieces: list[Piece], f: Filters, now_ms: int
    ) -> list[tuple[Block, int]]:
        if len(pieces) == 1 and f.mobile is None and f.send_result is None:
            block, lo, hi = pieces[0]
            return [(block, i) for i in range(lo, hi)]
        key = (
            chunk,
            # The block itself: a template's minute may have a generated and a sent block.
            tuple((id(b), lo, hi) for b, lo, hi in pieces),
            f.mobile,
            f.send_result,
            now_ms if f.send_result else None,
        )
        cached = self._merged.get(key)
        if cached is not None:
            self._merged.move_to_end(key)
            return cached
        rows = [
            (block.send_ms[i], block.id_hi[i], block.id_lo[i], block, i)
            for piece in pieces
            for block in [piece[0]]
            for i in self._matches(piece, f, now_ms)
        ]
        if len(pieces) > 1:
            rows.sort(key=lambda r: (r[0], r[1], r[2]))
        ordered = [(r[3], r[4]) for r in rows]
        self._merged[key] = ordered
        if len(self._merged) > 16:
            self._merged.popitem(last=False)
        return ordered

    def _record(self, block: Block, i: int, now_ms: int) -> SendRecord:
        result = self._result(block, i, now_ms)
        code = "" if result is SendResult.SENDING else CODES.codes[block.codes[i]]
        return SendRecord(
            message_id=format_message_id(block.id_hi[i], block.id_lo[i]),
            template_id=self.scenario.templates[block.template].template_id,
            mobile=mask_mobile(str(block.mobiles[i])),
            send_time=block.send_ms[i] / 1000,
            send_result=result,
            status_code=code,
            status_desc=describe(code) if code else "",
            receive_time=None if result is SendResult.SENDING else block.report_ms[i] / 1000,
            segments=block.segments[i],
        )

    def mobile_of(self, message_id: str) -> str | None:
        """The full number a message went to (records carry it masked); for tests and drills."""
        digits = message_id.partition("_")[0].replace("-", "")
        try:
            ident = int(digits, 16)
        except ValueError:
            return None
        hi, lo = ident >> 64, ident & ((1 << 64) - 1)
        with self.lock:
            for blocks in [*self._blocks, *self._sent]:
                for block in blocks.values():
                    for i, value in enumerate(block.id_lo):
                        if value == lo and block.id_hi[i] == hi:
                            return str(block.mobiles[i])
        return None

    # -- truth ------------------------------------------------------------------

    def truth(self, start_ms: int, end_ms: int, now_ms: int) -> dict[str, dict[str, Any]]:
        """Per template: results, final status codes and delivered delay sum, visible now."""
        with self.lock:
            self.advance_to(now_ms)
            out: dict[str, dict[str, Any]] = {}
            for spec in self.scenario.templates:
                ok = bad = sending = delay_ms = 0
                codes: dict[int, int] = {}
                f = Filters(start_ms, end_ms, spec.template_id)
                for _, pieces in self._groups(f, now_ms):
                    for block, lo, hi in pieces:
                        reports, kinds, sends = block.report_ms, block.codes, block.send_ms
                        for i in range(lo, hi):
                            report = reports[i]
                            if report > now_ms:
                                sending += 1
                                continue
                            code = kinds[i]
                            codes[code] = codes.get(code, 0) + 1
                            if code == DELIVERED:
                                ok += 1
                                delay_ms += report - sends[i]
                            else:
                                bad += 1
                out[spec.template_id] = {
                    "success": ok,
                    "failed": bad,
                    "sending": sending,
                    "status_codes": dict(sorted((CODES.codes[c], n) for c, n in codes.items())),
                    "delivery_delay_seconds_sum": delay_ms / 1000,
                }
            return out


def _empty(template: int, chunk: int) -> Block:
    return Block(
        template,
        chunk,
        send_ms=array("q"),
        report_ms=array("q"),
        codes=array("H"),
        segments=array("B"),
        mobiles=array("Q"),
        id_hi=array("Q"),
        id_lo=array("Q"),
    )
