"""The simulated clock: the wall clock, or a manual one moved by the control API."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Where the simulator reads the current instant (epoch seconds)."""

    manual: bool

    def now(self) -> float:
        """The current simulated instant."""
        ...


class RealClock:
    """The wall clock."""

    manual = False

    def now(self) -> float:
        """The wall-clock time."""
        return time.time()


class ManualClock:
    """A clock that moves only when told to."""

    manual = True

    def __init__(self, start: float) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        """The current simulated instant."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (>= 0); return the new instant."""
        if not seconds >= 0:  # NaN too: it would stop the clock for good
            raise ValueError("advance_seconds must be a number >= 0")
        with self._lock:
            self._now += seconds
            return self._now
