"""The review holds by simulated hour: drawn on demand, dropped with the store's minutes.

A hold hides its template's messages sent in [start, end) until it ends, as Huawei's
manual review does. A hold lasts at most an hour, so the holds that can cover an
instant are those that started within its hour or the hour before.
"""

from __future__ import annotations

from exporter.simulator.scenario import Scenario
from exporter.simulator.traffic import HOUR_MS, Hold, holds_for_hour


class HoldCalendar:
    """Each simulated hour's review holds, drawn once from the scenario and the run seed."""

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self._scenario = scenario
        self._seed = seed
        self._hours: dict[int, list[Hold]] = {}

    def __len__(self) -> int:
        """Hours whose holds are kept."""
        return len(self._hours)

    def _hour(self, hour: int) -> list[Hold]:
        holds = self._hours.get(hour)
        if holds is None:
            holds = self._hours[hour] = holds_for_hour(self._scenario, self._seed, hour)
        return holds

    def near(self, at_ms: int) -> list[Hold]:
        """The holds that started in the hour of ``at_ms`` or in the hour before."""
        hour = at_ms // HOUR_MS
        return self._hour(hour - 1) + self._hour(hour)

    def cutoff(self, template: int, now_ms: int) -> int:
        """Messages of ``template`` sent at or after this are not visible at ``now_ms``."""
        cut = now_ms
        for hold in self.near(now_ms):
            if hold.template == template and hold.start_ms < now_ms < hold.end_ms:
                cut = min(cut, hold.start_ms)
        return cut

    def drop_before(self, hour: int) -> None:
        """Forget the holds of every hour before ``hour``."""
        for old in [h for h in self._hours if h < hour]:
            del self._hours[old]
