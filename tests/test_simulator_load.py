"""The simulator at 1,000,000 messages per simulated hour (``-m slow``)."""

from __future__ import annotations

import time

import pytest

from exporter.records import SendResult
from exporter.simulator.scenario import load_scenario
from exporter.simulator.store import Filters, MessageStore
from exporter.simulator.traffic import HOUR_MS
from exporter.timestamps import parse_rfc3339

T0 = round(parse_rfc3339("2026-11-26T10:00:00Z") * 1000)


def test_the_load_scenario_sends_a_million_messages_an_hour() -> None:
    scenario = load_scenario("load")
    assert len(scenario.templates) == 50
    assert sum(t.rate_per_hour for t in scenario.templates) == pytest.approx(1_000_000)


def median_seconds(store: MessageStore, f: Filters, offsets: list[int], now: int) -> float:
    spent = []
    for offset in offsets:
        started = time.perf_counter()
        store.query(f, offset, 100, now)
        spent.append(time.perf_counter() - started)
    return sorted(spent)[len(spent) // 2]


@pytest.mark.slow
def test_queries_stay_fast_over_hours_of_a_million_messages_an_hour() -> None:
    store = MessageStore(load_scenario("load"), 1, T0)
    started = time.perf_counter()
    store.advance_to(T0 + HOUR_MS)
    assert time.perf_counter() - started < 60
    assert store.generated > 900_000
    busiest = store.scenario.templates[0].template_id
    window = Filters(T0, T0 + HOUR_MS, busiest)
    offsets = [0, 1_000, 50_000, 100_000, 150_000]
    early = median_seconds(store, window, offsets, T0 + HOUR_MS)
    store.advance_to(T0 + 4 * HOUR_MS)
    late_window = Filters(T0 + 3 * HOUR_MS, T0 + 4 * HOUR_MS, busiest)
    late = median_seconds(store, late_window, offsets, T0 + 4 * HOUR_MS)
    assert early < 0.05 and late < 0.05
    failed = Filters(T0, T0 + 4 * HOUR_MS, busiest, send_result=SendResult.FAILED)
    assert median_seconds(store, failed, [0, 1_000, 10_000], T0 + 4 * HOUR_MS) < 0.1
    everything = Filters(T0 + 3 * HOUR_MS, T0 + 4 * HOUR_MS)
    assert median_seconds(store, everything, [0, 500_000, 900_000], T0 + 4 * HOUR_MS) < 0.5
