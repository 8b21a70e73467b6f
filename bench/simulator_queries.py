"""The simulator's query path at 1,000,000 messages per simulated hour: does it slow down?

Prints the median query time for pages deep into the busiest template's hour, in the
first simulated hour and in the fourth (three more hours stored), and their ratio; the
same for a failed-only filter and for a query across all templates.

    python bench/simulator_queries.py
"""

from __future__ import annotations

import time

from exporter.records import SendResult
from exporter.simulator.queries import Filters
from exporter.simulator.scenario import load_scenario
from exporter.simulator.store import MessageStore
from exporter.simulator.traffic import HOUR_MS
from exporter.timestamps import parse_rfc3339

T0 = round(parse_rfc3339("2026-11-26T10:00:00Z") * 1000)


def median_ms(store: MessageStore, f: Filters, offsets: list[int], now: int) -> float:
    spent = []
    for _ in range(5):
        for offset in offsets:
            started = time.perf_counter()
            store.query(f, offset, 100, now)
            spent.append(time.perf_counter() - started)
    return sorted(spent)[len(spent) // 2] * 1000


def main() -> None:
    store = MessageStore(load_scenario("load"), 1, T0)
    started = time.perf_counter()
    store.advance_to(T0 + HOUR_MS)
    generation = time.perf_counter() - started
    busiest = store.scenario.templates[0].template_id
    offsets = [0, 1_000, 50_000, 100_000, 150_000]
    early = median_ms(store, Filters(T0, T0 + HOUR_MS, busiest), offsets, T0 + HOUR_MS)
    store.advance_to(T0 + 4 * HOUR_MS)
    now = T0 + 4 * HOUR_MS
    late = median_ms(store, Filters(T0 + 3 * HOUR_MS, now, busiest), offsets, now)
    failed = median_ms(
        store, Filters(T0, now, busiest, send_result=SendResult.FAILED), [0, 1_000, 10_000], now
    )
    everything = median_ms(store, Filters(T0 + 3 * HOUR_MS, now), [0, 500_000, 900_000], now)
    print(f"generated {store.generated:,} messages; the first hour in {generation:.1f} s")
    print(
        f"busiest template, page of 100: hour 1 {early:.2f} ms, hour 4 {late:.2f} ms (ratio {late / early:.2f})"
    )
    print(f"busiest template, failed only over 4 h: {failed:.2f} ms")
    print(f"all templates, one hour, deep offsets: {everything:.2f} ms")


if __name__ == "__main__":
    main()
