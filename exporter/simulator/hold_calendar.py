"""The review holds by simulated hour: drawn on demand, dropped with the store's minutes.

A hold hides its template's messages sent in [start, end) until it ends, as Huawei's
manual review does. A hold lasts at most ``review_holds.max_seconds`` (up to a day), so
the holds that can cover an instant are those that started within its hour or within
the ``reach`` hours before.
"""

from __future__ import annotations

import math

from exporter.simulator.scenario import Scenario
from exporter.simulator.traffic import HOUR_MS, Hold, holds_for_hour


class HoldCalendar:
    """Each simulated hour's review holds, drawn once from the scenario and the run seed."""

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self._scenario = scenario
        self._seed = seed
        self._hours: dict[int, list[Hold]] = {}
        self.reach = max(1, math.ceil(scenario.review_holds.max_seconds * 1000 / HOUR_MS))
        """Hours before an instant's own whose holds may still cover it."""

    def __len__(self) -> int:
        """Hours whose holds are kept."""
        return len(self._hours)

    def _hour(self, hour: int) -> list[Hold]:
        holds = self._hours.get(hour)
        if holds is None:
            holds = self._hours[hour] = holds_for_hour(self._scenario, self._seed, hour)
        return holds

    def near(self, at_ms: int) -> list[Hold]:
        """The holds that started in the hour of ``at_ms`` or in the ``reach`` hours before."""
        hour = at_ms // HOUR_MS
        return [h for back in range(self.reach, -1, -1) for h in self._hour(hour - back)]

    def cutoff(self, template: int, now_ms: int) -> int:
        """Messages of ``template`` sent at or after this are not visible at ``now_ms``."""
        cut = now_ms
        for hold in self.near(now_ms):
            if hold.template == template and hold.start_ms < now_ms < hold.end_ms:
                cut = min(cut, hold.start_ms)
        return cut

    def drop_before(self, hour: int) -> None:
        """Forget the holds of every hour that cannot cover an instant of ``hour`` or later."""
        for old in [h for h in self._hours if h < hour - self.reach]:
            del self._hours[old]
