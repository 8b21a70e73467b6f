"""Scrape load: many concurrent ``/metrics`` scrapers while the exporter polls.

    python bench/scrape_load.py --scrapers 50 --duration 60

The exporter polls a real-clock simulator every second in the background; each scraper
thread GETs ``/metrics`` in a loop on its own connection. Prints requests, errors and
latency percentiles; exits 1 on any error.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import config_for
from simulator_process import simulator_process

from exporter.app import Exporter
from exporter.logs import configure_logging


def scrape(url: str, until: float, latencies: list[float], errors: list[str]) -> None:
    with httpx.Client(timeout=10) as http:
        while time.monotonic() < until:
            began = time.perf_counter()
            try:
                response = http.get(url)
                if response.status_code != 200 or b"msgsms_up" not in response.content:
                    errors.append(f"HTTP {response.status_code}")
                    continue
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
                continue
            latencies.append(time.perf_counter() - began)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scrapers", type=int, default=50)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--scale", type=float, default=0.2)
    args = p.parse_args(argv)
    configure_logging("error", "console")
    sim_args = ("--history", "1h", "--scale", str(args.scale), "--rate-limit", "0")
    with simulator_process(*sim_args) as sim_url:
        exporter = Exporter(config_for(sim_url, poll_interval=1.0))
        try:
            host, port = exporter.start("127.0.0.1", 0)
            url = f"http://{host}:{port}/metrics"
            deadline = time.monotonic() + 60
            while not exporter.board.ready:
                if time.monotonic() > deadline:
                    print("exporter never became ready", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            polls_before = _polls(exporter)
            latencies: list[float] = []
            errors: list[str] = []
            until = time.monotonic() + args.duration
            threads = [
                threading.Thread(target=scrape, args=(url, until, latencies, errors))
                for _ in range(args.scrapers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            polls = _polls(exporter) - polls_before
        finally:
            exporter.stop()
    print(f"scrapers: {args.scrapers}, duration: {args.duration:g} s, polls meanwhile: {polls}")
    print(
        f"scrapes: {len(latencies)} ({len(latencies) / args.duration:.0f}/s), errors: {len(errors)}"
    )
    if latencies:
        print(
            "latency ms: p50 {:.1f}  p90 {:.1f}  p99 {:.1f}  max {:.1f}  mean {:.1f}".format(
                *(1000 * percentile(latencies, q) for q in (0.5, 0.9, 0.99)),
                1000 * max(latencies),
                1000 * statistics.fmean(latencies),
            )
        )
    ok = not errors and bool(latencies)
    print("PASS" if ok else f"FAIL {sorted(set(errors))}")
    return 0 if ok else 1


def _polls(exporter: Exporter) -> int:
    """Snapshots published so far (one per account and poll)."""
    return exporter.board.version


if __name__ == "__main__":
    sys.exit(main())
