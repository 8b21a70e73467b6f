"""Messages followed until their status is final: inside the window, and compact past it.

A status report comes up to 72 h after sending (then the platform reports EXPIRED), so a
message seen ``sending`` is followed that long, even after its minute left every window.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

REPORT_DEADLINE_SECONDS = 72 * 3600
"""Status reports arrive up to 72 h after sending (then the platform reports EXPIRED)."""
REPORT_HORIZON_SECONDS = REPORT_DEADLINE_SECONDS + 15 * 60
"""A pending message is given up once past this age, after a scan past its deadline."""
ABANDON_SECONDS = REPORT_HORIZON_SECONDS + 24 * 3600
"""Given up regardless (polls that never reach the pending step must not grow state)."""


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A message last seen without a final status (``records``: of its template in its
    minute, known for messages whose minute left the window; ``position``: how many
    records of its template precede it in its minute, when it was read, or -1)."""

    template_id: str
    minute: int
    send_time: float
    records: int = 0
    position: int = -1


Followed = dict[str | int, PendingMessage]
"""Pending messages by id (in the window) or by late key (past it)."""


def late_key(message_id: str) -> int:
    """The 64-bit key a late pending message is kept by (a collision among the pending
    messages of one minute is about as likely as 1 in 10^15)."""
    return hash(message_id)


@dataclass(slots=True)
class LateMinute:
    """Pending messages of one minute that left every window, kept compact for the
    counters: 30 bytes a message (template, id key, send time, records of its template
    in the minute) instead of an object, a string and a dict entry."""

    templates: array[int] = field(default_factory=lambda: array("I"))
    keys: array[int] = field(default_factory=lambda: array("q"))
    times: array[float] = field(default_factory=lambda: array("d"))
    records: array[int] = field(default_factory=lambda: array("I"))

    def add(self, template: int, key: int, send_time: float, records: int) -> None:
        """Follow one more message."""
        self.templates.append(template)
        self.keys.append(key)
        self.times.append(send_time)
        self.records.append(records)

    def count(self, template: int | None) -> int:
        """Messages of one template (index), or of all."""
        return len(self.keys) if template is None else self.templates.count(template)

    def keep(self, wanted: Callable[[int, int], bool]) -> None:
        """Keep the messages for which ``wanted(template, key)`` is true."""
        kept = [
            i
            for i, (t, k) in enumerate(zip(self.templates, self.keys, strict=True))
            if wanted(t, k)
        ]
        if len(kept) == len(self.keys):
            return
        self.templates = array("I", (self.templates[i] for i in kept))
        self.keys = array("q", (self.keys[i] for i in kept))
        self.times = array("d", (self.times[i] for i in kept))
        self.records = array("I", (self.records[i] for i in kept))
