"""The load scenario: 1,000,000 messages per simulated hour (query speed: bench/simulator_queries.py)."""

from __future__ import annotations

import pytest

from exporter.simulator.scenario import load_scenario


def test_the_load_scenario_sends_a_million_messages_an_hour() -> None:
    scenario = load_scenario("load")
    assert len(scenario.templates) == 50
    assert sum(t.rate_per_hour for t in scenario.templates) == pytest.approx(1_000_000)
