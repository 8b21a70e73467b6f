"""What a push carries and what it decides: reports, registrations, segments, outcomes.

Pure values shared by the parser, the merge and both stores. A message's result follows
its segments (a long SMS has one report per segment): failed as soon as any segment
reports a final non-DELIVRD code (the earliest such report gives the code), success
once every segment reported DELIVRD, sending otherwise. A non-final report (``ACCEPTD``,
see :data:`~exporter.status_codes.NON_FINAL_CODES`) keeps its segment sending, and the
segment's first final report replaces it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from exporter.records import SendResult
from exporter.status_codes import DELIVERED_CODE, describe, is_final

UNKNOWN_TEMPLATE = "unknown"
"""Template of reports whose message was never registered and carries no usable extend."""


@dataclass(frozen=True, slots=True)
class StatusReport:
    """One pushed status report (one segment of one message)."""

    message_id: str
    status: str
    sequence: int = 1
    total: int = 1
    status_desc: str = ""
    update_time: float | None = None
    source: str = ""
    extend: str = ""
    template_id: str | None = None
    """The template named by ``extend``, when attribution from extend is configured."""
    account: str = ""
    """The push account it was pushed for (its path or signing key); "" when only one."""


@dataclass(frozen=True, slots=True)
class SendRegistration:
    """What the sender knows at sending time: message id, template, send time."""

    message_id: str
    template_id: str
    send_time: float
    mobile: str = ""
    segments: int = 1
    account: str = ""


@dataclass(slots=True)
class WriteResult:
    """What one write added; ``rejected`` lists the indexes of items that cannot be stored."""

    stored: int = 0
    duplicates: int = 0
    unattributed: int = 0
    rejected: list[int] = field(default_factory=list)

    def merge(self, other: WriteResult) -> None:
        """Add another result into this one."""
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.unattributed += other.unattributed


@dataclass(frozen=True, slots=True)
class Segment:
    """The stored facts of one segment report that decide a message's result."""

    sequence: int
    total: int
    status: str
    status_desc: str
    update_ms: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """A message's result as its segments decide it."""

    result: SendResult
    status_code: str = ""
    status_desc: str = ""
    receive_ms: int | None = None


SENDING = Outcome(SendResult.SENDING)
"""A message with no final report yet."""


def message_outcome(segments: Sequence[Segment], expected: int) -> Outcome:
    """Failed on the earliest final non-DELIVRD segment; success when all ``expected``
    segments delivered; sending otherwise (non-final reports decide nothing)."""
    if len(segments) != 1:
        return segments_outcome(segments, expected)
    # Most messages have one segment: the same rules without building lists (the
    # writer decides every message of a group commit here).
    only = segments[0]
    if not is_final(only.status):
        return SENDING
    if only.status != DELIVERED_CODE:
        return Outcome(SendResult.FAILED, only.status, only.status_desc, only.update_ms)
    if max(expected, only.total) > 1:
        return SENDING
    desc = only.status_desc or describe(DELIVERED_CODE)
    return Outcome(SendResult.SUCCESS, DELIVERED_CODE, desc, only.update_ms)


def segments_outcome(segments: Sequence[Segment], expected: int) -> Outcome:
    """:func:`message_outcome` for any number of segments."""
    final = [s for s in segments if is_final(s.status)]
    failed = [s for s in final if s.status != DELIVERED_CODE]
    if failed:
        first = min(failed, key=lambda s: (s.update_ms, s.sequence))
        return Outcome(SendResult.FAILED, first.status, first.status_desc, first.update_ms)
    total = max([expected, *(s.total for s in segments)])
    if final and len({s.sequence for s in final}) >= total:
        return Outcome(
            SendResult.SUCCESS,
            DELIVERED_CODE,
            final[0].status_desc or describe(DELIVERED_CODE),
            max(s.update_ms for s in final),
        )
    return SENDING
