"""Benchmark: what following pending messages to the 72 h report deadline costs.

Runs the simulator (manual clock) with issue 3's scenario scaled down and one exporter
(window 1 h, settle 3 min, poll every simulated minute) for 75 simulated hours, and
prints, in one run, the upstream requests per poll of hour 2 (pending messages only
inside the window), of hour 40 (a day and a half of old pending messages, the default
late tail of reports 1-48 h late resolving among them) and of hours 73-75 (old pending
messages expiring every minute), their ratios, the
pending messages followed, exporter CPU per poll, and how many final messages
``msgsms_messages_finalized_total`` has not counted yet at the end (a report for a
message past the window is counted within 15 minutes; a negative count would be a
message counted twice).

    python bench/late_reports.py                # 75 simulated hours (a few minutes here)
    python bench/late_reports.py --hours 3      # quick: no expirations yet
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from simulator_process import simulator_process  # noqa: E402

from exporter.app import Exporter  # noqa: E402
from exporter.config import AccountConfig, Config, Secret, TemplateSelection  # noqa: E402
from exporter.timestamps import format_rfc3339, parse_rfc3339  # noqa: E402

START = "2026-11-26T10:00:00Z"
SCENARIO = str(ROOT / "bench" / "scenarios" / "engine-1m.yaml")
HOUR = 3600.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=75.0, help="simulated hours")
    parser.add_argument("--scale", default="0.02", help="of 1M messages/hour (0.02: 20k/h)")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    sim_args = ("--clock", "manual", "--start-time", START, "--history", "1h")
    with (
        simulator_process(*sim_args, "--scenario.file", SCENARIO, "--scale", args.scale) as url,
        httpx.Client(timeout=60) as http,
    ):

        def now() -> float:
            return parse_rfc3339(http.get(f"{url}/-/clock").json()["now"])

        def truth(start: float, end: float) -> dict[str, dict[str, int]]:
            params = {"start_time": format_rfc3339(start), "end_time": format_rfc3339(end)}
            templates: dict[str, dict[str, int]] = http.get(f"{url}/-/truth", params=params).json()[
                "templates"
            ]
            return templates

        account = AccountConfig(
            name="bench",
            endpoint=url,
            project_id="0123456789abcdef0123456789abcdef",
            templates=TemplateSelection(discover=True),
            access_key="demo-access-key",
            secret_key=Secret("demo-secret-key"),
        )
        config = Config(accounts=(account,), windows=(HOUR,), page_size=100)
        by_hour: dict[int, list[int]] = {}
        steps_by_hour: dict[int, Counter[str]] = {}
        cpu_by_hour: dict[int, list[float]] = {}
        followed_peak = outside_peak = 0
        with Exporter(config, clock=now) as exporter:
            poller = exporter.pollers[0]
            assert exporter.poll_once()
            first_start = poller.last.windows[0].start
            polls = int(args.hours * 60)
            for index in range(polls):
                http.post(f"{url}/-/clock", json={"advance_seconds": 60}).raise_for_status()
                before = poller.source.stats.request_count
                cpu = time.process_time()
                assert exporter.poll_once()
                hour = index // 60 + 1
                cpu_by_hour.setdefault(hour, []).append(time.process_time() - cpu)
                by_hour.setdefault(hour, []).append(poller.source.stats.request_count - before)
                last = poller.last_outcome
                assert last is not None
                steps_by_hour.setdefault(hour, Counter()).update(last.requests)
                engine = poller.engine
                followed_peak = max(followed_peak, engine.book.pending_count())
                outside = engine.book.pending_count() - len(engine.book.pending)
                outside_peak = max(outside_peak, outside)
            end = poller.last.windows[0].end
            final = truth(first_start, end)
            counted: dict[str, int] = {}
            for (template_id, _, _), n in poller.engine.book.counters.finalized.items():
                counted[template_id] = counted.get(template_id, 0) + n
    expected = {t: v["success"] + v["failed"] for t, v in final.items()}
    mismatched = sum(1 for t, n in expected.items() if counted.get(t, 0) != n)
    behind = sum(expected.values()) - sum(counted.get(t, 0) for t in expected)

    def mean(hours: range) -> float:
        values = [v for h in hours if h in by_hour for v in by_hour[h]]
        return statistics.fmean(values) if values else float("nan")

    def steps(hours: range) -> str:
        total: Counter[str] = Counter()
        for h in hours:
            total.update(steps_by_hour.get(h, Counter()))
        polls = sum(len(by_hour.get(h, [])) for h in hours) or 1
        return ", ".join(f"{k} {v / polls:.1f}" for k, v in sorted(total.items()))

    def cpu_ms(hours: range) -> float:
        values = [v for h in hours if h in cpu_by_hour for v in cpu_by_hour[h]]
        return 1000 * statistics.fmean(values) if values else float("nan")

    last = max(by_hour)
    early, middle, late = range(2, 3), range(40, 41), range(max(3, last - 2), last + 1)
    rate = float(args.scale) * 1_000_000
    rows = [
        (f"messages per hour (scale {args.scale}), simulated hours", f"{rate:,.0f}, {last}"),
        ("requests per poll, hour 2 (pending only inside the window)", f"{mean(early):.1f}"),
        ("requests per poll, hour 40 (old pending, late tail resolving)", f"{mean(middle):.1f}"),
        (f"requests per poll, hours {late.start}-{last} (expiring)", f"{mean(late):.1f}"),
        ("  by step, hour 2", steps(early)),
        ("  by step, hour 40", steps(middle)),
        (f"  by step, hours {late.start}-{last}", steps(late)),
        ("ratio hour 40 / hour 2", f"{mean(middle) / mean(early):.2f}x"),
        (f"ratio hours {late.start}-{last} / hour 2", f"{mean(late) / mean(early):.2f}x"),
        (
            "exporter CPU per poll, hour 2 / last hours",
            f"{cpu_ms(early):.1f} / {cpu_ms(late):.1f} ms",
        ),
        (
            "pending messages followed (peak), outside the window",
            f"{followed_peak:,}, {outside_peak:,}",
        ),
        (
            "finalized messages not counted yet at the end (all templates)",
            f"{behind} of {sum(expected.values()):,} ({mismatched} of {len(expected)} templates)",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
