"""The upstream's clock against the exporter's, as its answers' ``Date`` headers tell (pure).

Sending times are stamped by the upstream's clock, so a minute is settled when it is
``settle_delay`` old on that clock. An exporter whose clock is ahead (SDK-HMAC-SHA256
signing tolerates 15 minutes) would otherwise read minutes the upstream has not finished
and show them as complete.

The measurement errs towards the exporter being ahead: ``Date`` has whole seconds and is
written before the answer leaves, so the upstream's time at its arrival is taken as the
``Date`` itself (+0), and the exporter's time is read after the answer arrived. An exporter
that is behind is not moved forward (its windows merely lag): only a correction towards
the past is ever applied, so a wrong ``Date`` can delay a window but never make one
complete early.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.signing import MAX_CLOCK_SKEW_SECONDS

SKEW_TOLERANCE_SECONDS = 2.0
"""Less is no skew: ``Date``'s whole seconds and the answer's flight alone measure up to
about a second on clocks that agree."""
MAX_SKEW_CORRECTION_SECONDS = float(MAX_CLOCK_SKEW_SECONDS)
"""The most a window is moved back. A signed request is accepted within 15 minutes of the
gateway's clock, so a ``Date`` further ahead of us than that is not the gateway's clock (or
the account signs with a token): windows are moved back this far and marked incomplete."""
SKEW_WARNING_SECONDS = 10.0
"""A skew at least this large (either way) is logged when it appears."""


@dataclass(frozen=True, slots=True)
class ClockSkew:
    """How far the exporter's clock is ahead of the upstream's, in seconds (negative:
    behind): the exporter's time after an answer arrived less that answer's ``Date``."""

    seconds: float

    @property
    def correction(self) -> float:
        """Seconds to take off the exporter's clock to read the upstream's: the skew when
        the exporter is ahead (by the tolerance or more), at most the largest correction."""
        if self.seconds < SKEW_TOLERANCE_SECONDS:
            return 0.0
        return min(self.seconds, MAX_SKEW_CORRECTION_SECONDS)

    @property
    def uncorrected(self) -> bool:
        """Ahead by more than is corrected: a window's newest minutes may be unsettled."""
        return self.seconds > MAX_SKEW_CORRECTION_SECONDS

    @property
    def notable(self) -> bool:
        """Large enough (either way) to be logged."""
        return abs(self.seconds) >= SKEW_WARNING_SECONDS


NO_SKEW = ClockSkew(0.0)
