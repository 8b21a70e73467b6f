"""How registrations and reports change stored messages: pure, applied in arrival order.

A store that reads the touched messages' rows (locked) and segments can hand them to
:func:`merge_writes` and write back what it returns; the rules are those of the SQLite
store: the first registration of a message wins (and decides its account and template),
a report of an unknown message creates it (its time standing in for the send time), a
report's template from ``extend`` names an unattributed message's template, a segment
keeps its first final report (which replaces a non-final one), and the segments decide
the result. An item a database cannot hold (a NUL or a lone surrogate in a text) is
refused by index, alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from exporter.mobilekey import MobileKey, mobile_hash
from exporter.pushitems import (
    SENDING,
    UNKNOWN_TEMPLATE,
    Outcome,
    Segment,
    SendRegistration,
    StatusReport,
    WriteResult,
    message_outcome,
)
from exporter.records import SendResult, mask_mobile
from exporter.status_codes import is_final

ROW_COLUMNS = (
    "message_id, account, template_id, registered, send_ms, mobile, mobile_hash, segments,"
    " result, status_code, status_desc, receive_ms"
)
"""A stored message's columns in both stores, in the order :func:`message_row` reads."""
SEGMENT_COLUMNS = "message_id, sequence, total, status, status_desc, update_ms"
"""The columns of a stored segment that :func:`merge_writes` needs."""
TEMPLATE_NOTE_MS = 60_000
"""A template's last-seen time is written at most once a minute by a writer."""
_RESULTS = {r.value: r for r in SendResult}


@dataclass(frozen=True, slots=True)
class MessageRow:
    """A stored message as the details contract reads it."""

    message_id: str
    account: str
    template_id: str
    registered: bool
    send_ms: int
    mobile: str = ""
    mobile_hash: str = ""
    segments: int = 1
    outcome: Outcome = SENDING


@dataclass(frozen=True, slots=True)
class SegmentRow:
    """A stored segment report."""

    message_id: str
    segment: Segment
    received_ms: int
    source: str


class WriteBatch(Protocol):
    """One job's writes: registrations first, then reports (the SQLite store's order)."""

    @property
    def sends(self) -> Sequence[SendRegistration]:
        """Send registrations."""
        ...

    @property
    def reports(self) -> Sequence[StatusReport]:
        """Status reports."""
        ...


@dataclass(frozen=True, slots=True)
class Move:
    """A stored message that a write moved: its account, template or send time changed
    (a registration after its report, or a report's ``extend`` naming its template).
    The poller reads the minutes on both sides again (see :mod:`exporter.moves`)."""

    old_account: str
    old_template: str
    old_send_ms: int
    new_account: str
    new_template: str
    new_send_ms: int


MOVE_COLUMNS = (
    "moved_ms, old_account, old_template, old_send_ms, new_account, new_template, new_send_ms"
)
"""A move's columns in both stores (after its sequence), in the order :func:`move_values` gives."""


def move_values(move: Move, now_ms: int) -> tuple[Any, ...]:
    """A move's columns in ``MOVE_COLUMNS`` order."""
    return (
        now_ms,
        move.old_account,
        move.old_template,
        move.old_send_ms,
        move.new_account,
        move.new_template,
        move.new_send_ms,
    )


@dataclass(slots=True)
class Merged:
    """What a group of jobs changes: rows to write, new segments, templates seen, results,
    stored messages moved."""

    rows: dict[str, MessageRow] = field(default_factory=dict)
    segments: dict[tuple[str, int], SegmentRow] = field(default_factory=dict)
    """Segment reports to write (new, or a final one replacing a non-final one)."""
    templates: set[tuple[str, str]] = field(default_factory=set)
    """(account, template id) seen."""
    results: list[WriteResult] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    """Stored messages whose account, template or send time the group changed."""


def message_row(r: Sequence[Any]) -> MessageRow:
    """A stored message read in ``ROW_COLUMNS`` order."""
    return MessageRow(
        *(r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6], r[7]),
        Outcome(_RESULTS[r[8]], r[9], r[10], r[11]),
    )


def row_values(row: MessageRow) -> tuple[Any, ...]:
    """A message's columns in ``ROW_COLUMNS`` order, as both stores write them."""
    outcome = row.outcome
    return (
        row.message_id,
        row.account,
        row.template_id,
        row.registered,
        row.send_ms,
        row.mobile,
        row.mobile_hash,
        row.segments,
        outcome.result.value,
        outcome.status_code,
        outcome.status_desc,
        outcome.receive_ms,
    )


def segment_values(row: SegmentRow) -> tuple[Any, ...]:
    """A segment report's columns in the stores' table order."""
    seg = row.segment
    return (
        row.message_id,
        seg.sequence,
        seg.total,
        seg.status,
        seg.status_desc,
        seg.update_ms,
        row.received_ms,
        row.source,
    )


def segment_entry(r: Sequence[Any]) -> tuple[tuple[str, int], Segment]:
    """A stored segment read in ``SEGMENT_COLUMNS`` order, keyed by (message id, sequence)."""
    return (r[0], r[1]), Segment(r[1], r[2], r[3], r[4], r[5])


class TemplateNotes:
    """Which templates' last-seen times a writer must write: each at most once a minute
    (retention is hours; writing it with every report would be a statement per commit)."""

    def __init__(self) -> None:
        self._due: dict[tuple[str, str], int] = {}

    def due(self, templates: Iterable[tuple[str, str]], now_ms: int) -> list[tuple[str, str]]:
        """The templates to write in this transaction, sorted."""
        return sorted(t for t in templates if self._due.get(t, 0) < now_ms)

    def written(self, templates: Iterable[tuple[str, str]], now_ms: int) -> None:
        """Call once the transaction that wrote ``templates`` committed."""
        for template in templates:
            self._due[template] = now_ms + TEMPLATE_NOTE_MS


def touched_ids(batches: Iterable[WriteBatch]) -> list[str]:
    """Every message id the batches write, sorted (the order rows are locked in)."""
    ids = {s.message_id for b in batches for s in b.sends if storable(s)}
    ids.update(r.message_id for b in batches for r in b.reports if storable(r))
    return sorted(ids)


def storable(item: StatusReport | SendRegistration) -> bool:
    """False when a text holds what a database cannot store: NUL, or a lone surrogate."""
    text = "\x01".join(_texts(item))
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _texts(item: StatusReport | SendRegistration) -> list[str]:
    """The item's text fields."""
    if isinstance(item, SendRegistration):
        return [item.message_id, item.template_id, item.mobile, item.account]
    return [
        item.message_id,
        item.status,
        item.status_desc,
        item.source,
        item.account,
        item.template_id or "",
    ]


def _head(row: MessageRow) -> tuple[str, str, str, bool, int]:
    """The identifying fields, for building a changed row (``replace`` is slow here)."""
    return row.message_id, row.account, row.template_id, row.registered, row.send_ms


def report_ms(report: StatusReport, now_ms: int) -> int:
    """The report's update time in ms; the receipt time when it carries none."""
    return now_ms if report.update_time is None else round(report.update_time * 1000)


def merge_writes(
    batches: Sequence[WriteBatch],
    rows: Mapping[str, MessageRow],
    segments: Mapping[tuple[str, int], Segment],
    now_ms: int,
    *,
    mobile_key: MobileKey | None = None,
) -> Merged:
    """Apply each batch in order to the stored ``rows`` and ``segments``; a registered
    number is kept masked and hashed with ``mobile_key`` (not at all without one).

    Returns the rows that changed, the segment reports that are new (a report of a
    segment already stored is a duplicate), the templates seen and one result per batch.
    """
    out = Merged()
    current = dict(rows)
    stored = dict(segments)
    changed: set[str] = set()
    for batch in batches:
        result = WriteResult()
        for index, send in enumerate(batch.sends):
            if not storable(send):
                result.rejected.append(index)
                continue
            out.templates.add((send.account, send.template_id))
            row = current.get(send.message_id)
            if row is not None and row.registered:
                result.duplicates += 1
                continue
            current[send.message_id] = MessageRow(
                send.message_id,
                send.account,
                send.template_id,
                True,
                round(send.send_time * 1000),
                mask_mobile(send.mobile) if send.mobile else "",
                mobile_hash(send.mobile, mobile_key),
                max(send.segments, row.segments if row else 1),
                row.outcome if row else SENDING,
            )
            changed.add(send.message_id)
            result.stored += 1
        for index, report in enumerate(batch.reports):
            if not storable(report):
                result.rejected.append(index)
                continue
            key = (report.message_id, report.sequence)
            known = stored.get(key)
            if known is not None and (is_final(known.status) or not is_final(report.status)):
                result.duplicates += 1
                continue
            update_ms = report_ms(report, now_ms)
            seg = Segment(
                report.sequence, report.total, report.status, report.status_desc, update_ms
            )
            stored[key] = seg
            out.segments[key] = SegmentRow(report.message_id, seg, now_ms, report.source)
            row = current.get(report.message_id)
            if row is None:
                template = report.template_id or UNKNOWN_TEMPLATE
                row = MessageRow(
                    report.message_id,
                    report.account,
                    template,
                    False,
                    update_ms,
                    segments=report.total,
                )
            elif not row.registered and row.template_id == UNKNOWN_TEMPLATE and report.template_id:
                out.templates.add((row.account, row.template_id))
                row = replace(row, template_id=report.template_id)
            current[report.message_id] = row
            changed.add(report.message_id)
            out.templates.add((row.account, row.template_id))
            result.stored += 1
            result.unattributed += int(row.template_id == UNKNOWN_TEMPLATE)
        out.results.append(result)
    by_message: dict[str, list[Segment]] = {}
    for (message_id, _), seg in stored.items():
        if message_id in changed:
            by_message.setdefault(message_id, []).append(seg)
    for message_id in sorted(changed):
        row = current[message_id]
        segs = sorted(by_message.get(message_id, []), key=lambda s: s.sequence)
        if segs:
            total = max([row.segments, *(s.total for s in segs)])
            outcome = message_outcome(segs, row.segments)
            row = MessageRow(*_head(row), row.mobile, row.mobile_hash, total, outcome)
        out.rows[message_id] = row
        before = rows.get(message_id)
        where = (row.account, row.template_id, row.send_ms)
        if before is not None and (before.account, before.template_id, before.send_ms) != where:
            out.moves.append(
                Move(
                    before.account,
                    before.template_id,
                    before.send_ms,
                    row.account,
                    row.template_id,
                    row.send_ms,
                )
            )
    return out
