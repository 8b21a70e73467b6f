"""The platform's message store: generated blocks indexed by template and minute.

Queries and truth read the state of every message at a simulated instant ``now``
(epoch milliseconds): a message is visible once sent (``send < now``) unless a review
hold (:mod:`hold_calendar`) still covers it; :mod:`queries` reads the visible slices.

Messages sent through the sending API (:meth:`MessageStore.send`) get their outcomes
from the same delivery model, review holds and incidents, and sit in a second block per
template and minute (:mod:`sent_blocks`): every query, the truth and the pushes read both.

Like Huawei's sending details (kept 60 days), the store keeps ``retention_ms`` of
messages (the query lookback, never under 73 h: a message's last report is due 72 h
after it is sent): older minutes, generated or sent, go with what their send requests
asked, so a long-running simulator holds a bounded amount under any send load.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from exporter.records import SendRecord, SendResult
from exporter.simulator.hold_calendar import HoldCalendar
from exporter.simulator.incidents import Incident, apply_incident, parse_incident
from exporter.simulator.queries import (
    Filters,
    Group,
    MergedOrder,
    Piece,
    find_mobile,
    page,
    tally,
)
from exporter.simulator.scenario import Scenario
from exporter.simulator.sent_blocks import Sent, SentBlocks, SentMeta
from exporter.simulator.traffic import (
    CHUNK_MS,
    EXPIRY_MS,
    HOUR_MS,
    Block,
    apply_holds,
    draw_messages,
    format_message_id,
    generate_block,
    rng_for,
)

_MASK32 = (1 << 32) - 1
DEFAULT_RETENTION_MS = 60 * 86_400_000
"""Huawei keeps sending details 60 days (the query lookback's default)."""
MIN_RETENTION_MS = EXPIRY_MS + HOUR_MS
"""Every message stays at least until its last report is due (72 h), and an hour more."""


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
        self._holds = HoldCalendar(scenario, seed)
        self._order = MergedOrder()
        self._sent = SentBlocks(len(scenario.templates))
        self.sent = 0
        """Messages accepted by the sending API."""
        self.retention_ms = max(retention_ms, MIN_RETENTION_MS)
        """Messages sent this long before now are dropped, a minute at a time."""
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
                self._sent.drop(t, chunk)
        self._first_chunk = keep_from
        self._next_chunk = max(self._next_chunk, keep_from)
        # The first minute kept reads the holds of its hour and of the hours before it.
        self._holds.drop_before(keep_from * CHUNK_MS // HOUR_MS)
        self._order.clear()

    @property
    def first_chunk(self) -> int:
        """The oldest minute kept (in minutes since the epoch)."""
        with self.lock:
            return self._first_chunk

    def footprint(self) -> Footprint:
        """Counts of what the store holds now."""
        with self.lock:
            blocks = list(self._kept())
            return Footprint(
                first_minute_ms=self._first_chunk * CHUNK_MS,
                blocks=len(blocks),
                messages=sum(len(b) for b in blocks),
                requests=self._sent.requests,
                hold_hours=len(self._holds),
            )

    def _generate(self, chunk: int) -> None:
        start, end = chunk * CHUNK_MS, (chunk + 1) * CHUNK_MS
        holds = [h for h in self._holds.near(start) if h.start_ms < end and h.end_ms > start]
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
            self._order.clear()
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
        simulated times give the same results. Ids grow with that count.
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
            apply_holds(fresh, self._holds.near(send_ms))
            for incident in self.incidents:
                apply_incident(fresh, incident, spec.template_id, self.seed)
            first = self._sent.append(fresh, meta)
            self._order.clear()
            self.sent += len(recipients)
            ids = tuple(
                format_message_id(fresh.id_hi[i], fresh.id_lo[i]) for i in range(len(fresh))
            )
            return Sent(send_ms, template, chunk, first, ids)

    def meta_of(self, template: int, chunk: int, index: int) -> SentMeta | None:
        """What the send request of a message of a sent block asked for its reports."""
        return self._sent.meta_of(template, chunk, index)

    def blocks_of(self, template: int, chunk: int) -> list[Block]:
        """The template's blocks of one minute: generated, then sent through the API."""
        return [
            block
            for block in (self._blocks[template].get(chunk), self._sent.blocks[template].get(chunk))
            if block is not None
        ]

    def sent_block(self, template: int, chunk: int) -> Block | None:
        """The template's block of messages sent through the API in one minute."""
        return self._sent.blocks[template].get(chunk)

    # -- visibility -------------------------------------------------------------

    def cutoff(self, template: int, now_ms: int) -> int:
        """Messages of ``template`` sent at or after this are not visible yet."""
        return self._holds.cutoff(template, now_ms)

    def _templates(self, template_id: str | None) -> list[int]:
        if template_id is None:
            return list(range(len(self.scenario.templates)))
        found = self._index.get(template_id)
        return [] if found is None else [found]

    def _kept(self) -> Iterator[Block]:
        """Every block kept, generated then sent."""
        for kept in [*self._blocks, *self._sent.blocks]:
            yield from kept.values()

    def _groups(self, f: Filters, now_ms: int, held: bool = False) -> Iterator[Group]:
        """Per chunk, the visible slice of each template's block within [start, end);
        with ``held``, messages still held for review too (every message sent)."""
        bounds = [
            (t, min(f.end_ms, now_ms if held else self.cutoff(t, now_ms)))
            for t in self._templates(f.template_id)
        ]
        bounds = [(t, end) for t, end in bounds if end > f.start_ms]
        if not bounds:
            return
        last = min(max(end for _, end in bounds) - 1, self._next_chunk * CHUNK_MS - 1)
        sending_only = f.send_result is SendResult.SENDING
        # From the first block, not the start asked: a truth window may begin in year 1.
        first = max(f.start_ms // CHUNK_MS, self._first_chunk)
        # Templates with messages sent through the API have a second block a minute.
        sent = [(t, end) for t, end in bounds if self._sent.blocks[t]]
        for chunk in range(first, last // CHUNK_MS + 1):
            lo_ms, hi_ms = chunk * CHUNK_MS, (chunk + 1) * CHUNK_MS
            pieces: list[Piece] = []
            for blocks, templates in ((self._blocks, bounds), (self._sent.blocks, sent)):
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

    # -- queries and truth ------------------------------------------------------

    def query(
        self, f: Filters, offset: int, limit: int, now_ms: int
    ) -> tuple[int, list[SendRecord]]:
        """``total`` matching messages and the page [offset, offset + limit) in order."""
        with self.lock:
            self.advance_to(now_ms)
            groups = self._groups(f, now_ms)
            return page(groups, f, offset, limit, now_ms, self._order, self.scenario.templates)

    def mobile_of(self, message_id: str) -> str | None:
        """The full number a message went to (records carry it masked); for tests and drills."""
        with self.lock:
            return find_mobile(self._kept(), message_id)

    def truth(
        self, start_ms: int, end_ms: int, now_ms: int, held: bool = False
    ) -> dict[str, dict[str, Any]]:
        """Per template: results, final status codes and delivered delay sum, visible now.

        With ``held``, the messages still held for review count too, as ``sending``: what
        an application knows that recorded its sends (the send API answers at once, held
        or not) and receives the status reports, as the push receiver does.
        """
        with self.lock:
            self.advance_to(now_ms)
            return {
                spec.template_id: tally(
                    self._groups(Filters(start_ms, end_ms, spec.template_id), now_ms, held),
                    now_ms,
                )
                for spec in self.scenario.templates
            }
