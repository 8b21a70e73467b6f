"""The simulator's message store as an in-process page source, for fast engine tests.

Each query goes through the contract exactly as over HTTP (parameters parsed and
checked against the console's limits, the answer written to JSON and parsed back), but
without a subprocess, a socket or a thread: a poll of the engine costs only its folding.
A query the contract refuses raises ``BadParameter`` (over HTTP it would be a 400).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from exporter.contract import QueryLimits
from exporter.demo import simulated_account
from exporter.records import DetailsPage, DetailsQuery, parse_page
from exporter.simulator.api import send_details
from exporter.simulator.scenario import Scenario, load_scenario
from exporter.simulator.store import MessageStore
from exporter.timestamps import parse_rfc3339

START = parse_rfc3339("2026-11-26T10:00:00Z")
ACCOUNT = replace(simulated_account("http://127.0.0.1:1"), name="sim")
"""An account that exports every template (the engine reads across templates)."""


class StoreSource:
    """Answers sending-details queries from a simulator store at a manual clock."""

    def __init__(
        self,
        scenario: Scenario | str | Path,
        *,
        history: float = 3600.0,
        start: float = START,
        limits: QueryLimits | None = None,
        seed: int = 1,
    ) -> None:
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        self.now = start
        self.limits = limits or QueryLimits()
        self.store = MessageStore(scenario, seed, round((start - history) * 1000))
        self.queries: list[DetailsQuery] = []
        self.store.advance_to(self._now_ms)

    @property
    def _now_ms(self) -> int:
        return round(self.now * 1000)

    @property
    def template_ids(self) -> list[str]:
        """Every template of the scenario, sorted."""
        return sorted(t.template_id for t in self.store.scenario.templates)

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds
        self.store.advance_to(self._now_ms)

    def query(self, query: DetailsQuery) -> DetailsPage:
        """One page, as the simulator's HTTP endpoint would answer it."""
        self.queries.append(query)
        params = {name: [value] for name, value in query.params().items()}
        return parse_page(send_details(self.store, params, self.now, self.limits))

    def truth(self, start: float, end: float) -> dict[str, dict[str, Any]]:
        """Per template: success, failed, sending, status codes and delay sum, now."""
        return self.store.truth(round(start * 1000), round(end * 1000), self._now_ms)

    def incident(self, body: dict[str, Any]) -> None:
        """Start an incident now (for example late status reports of one template)."""
        self.store.add_incident(body, self._now_ms)

    def cost(self) -> Counter[str]:
        """Queries made so far, by whether they asked for a total only or for records."""
        return Counter("total" if q.limit == 1 else "records" for q in self.queries)
