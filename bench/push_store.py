"""The push stores side by side: SQLite and PostgreSQL at 1M messages an hour.

For each store, in one run: fills one simulated hour at ``--rate`` messages/hour
(registrations, then each message's report 5-60 s later, 2 % failed, 3 % reported 20
minutes late), polling it minute by minute with the exporter's own poller as the push
source does; then a second hour the same way, so a poll with two hours stored can be
compared with a poll with one (a poll that re-scanned the store would cost double);
then the store size per million messages, and the time to prune the first hour after
the retention. PostgreSQL is Debian's, started for the run in a temporary directory with
fsync on (as in production); SQLite runs with synchronous=normal.

    python bench/push_store.py                     # 1,000,000 messages/hour, both stores
    python bench/push_store.py --rate 200000       # quicker
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from postgres_server import PostgresServer  # noqa: E402

from exporter.config import AccountConfig, Config, TemplateSelection  # noqa: E402
from exporter.pgstore import PostgresStore  # noqa: E402
from exporter.poller import Poller  # noqa: E402
from exporter.pushstore import (  # noqa: E402
    PushStore,
    ReportStore,
    SendRegistration,
    StatusReport,
)
from exporter.timestamps import parse_rfc3339  # noqa: E402

START = parse_rfc3339("2026-11-26T10:00:00Z")
TEMPLATES = [f"TPL_{i:02d}" for i in range(20)]
CHUNK = 5000


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class Traffic:
    """Messages sent each minute and their reports, due in time order."""

    def __init__(self, rate: float, seed: int = 7) -> None:
        self.per_minute = round(rate / 60)
        self.random = random.Random(seed)
        self.due: list[tuple[float, StatusReport]] = []
        self.sent = 0

    def minute(self, start: float) -> list[SendRegistration]:
        sends = []
        for i in range(self.per_minute):
            at = start + 60 * i / self.per_minute
            mid = f"{self.sent:08d}-{self.random.getrandbits(32):08x}"
            self.sent += 1
            sends.append(SendRegistration(mid, self.random.choice(TEMPLATES), at, "4402000000"))
            late = self.random.random() < 0.03
            delay = 1200 + self.random.random() * 600 if late else 5 + self.random.random() * 55
            status = "UNDELIV" if self.random.random() < 0.02 else "DELIVRD"
            self.due.append((at + delay, StatusReport(mid, status, update_time=at + delay)))
        return sends

    def reports_until(self, now: float) -> list[StatusReport]:
        ready = [r for t, r in self.due if t <= now]
        self.due = [(t, r) for t, r in self.due if t > now]
        return ready


def _chunks(items: list, size: int = CHUNK) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def run_store(name: str, opener: Callable[[Clock], ReportStore], rate: float) -> dict[str, str]:
    clock = Clock()
    traffic = Traffic(rate)
    account = AccountConfig(
        name="push",
        endpoint="",
        project_id="",
        templates=TemplateSelection(discover=True),
        source="push",
    )
    config = Config(accounts=(account,), top_status_codes=100)
    write_seconds = 0.0
    polls: dict[int, list[tuple[float, int]]] = {1: [], 2: []}
    with closing(opener(clock)) as store:
        poller = Poller(account, config, store, clock=clock)
        for minute in range(120):
            clock.now = START + 60 * minute
            started = time.perf_counter()
            for chunk in _chunks(traffic.minute(clock.now)):
                store.register(chunk)
            for chunk in _chunks(traffic.reports_until(clock.now + 60)):
                store.add_reports(chunk)
            write_seconds += time.perf_counter() - started
            clock.now += 60
            before = store.stats.request_count
            started = time.perf_counter()
            poller.poll()
            elapsed = time.perf_counter() - started
            if minute >= 5:  # the first polls read the whole (young) window
                polls[1 if minute < 60 else 2].append((elapsed, store.stats.request_count - before))
        stored = store.message_count()
        store.prune()  # measure the size as the store does, after its minute's pruning
        size = store.size_bytes
        clock.now = START + 7200 + store_retention(store) - 3600 + 1
        started = time.perf_counter()
        store.prune()
        prune_seconds = time.perf_counter() - started
        pruned = store.pruned
    per_million = size / stored * 1_000_000
    p1 = [e for e, _ in polls[1]]
    p2 = [e for e, _ in polls[2]]
    r1 = statistics.fmean(r for _, r in polls[1])
    r2 = statistics.fmean(r for _, r in polls[2])
    return {
        "store": name,
        "messages stored (2 h)": f"{stored:,}",
        "writes: messages+reports/s": f"{2 * stored / write_seconds:,.0f}",
        "poll, hour 1: mean / p95 ms": f"{1000 * statistics.fmean(p1):.0f} / {1000 * _p95(p1):.0f}",
        "poll, hour 2: mean / p95 ms": f"{1000 * statistics.fmean(p2):.0f} / {1000 * _p95(p2):.0f}",
        "poll queries, hour 1 / hour 2": f"{r1:.1f} / {r2:.1f}",
        "poll time ratio hour 2 / hour 1": f"{statistics.fmean(p2) / statistics.fmean(p1):.2f}x",
        "store size per 1M messages": f"{per_million / 2**20:,.0f} MiB",
        "prune 1 h of messages": f"{pruned:,} in {prune_seconds:.1f} s",
    }


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def store_retention(store: ReportStore) -> float:
    retention: float = store.retention  # type: ignore[attr-defined]
    return retention


@contextmanager
def stores() -> Iterator[list[tuple[str, Callable[[Clock], ReportStore]]]]:
    with tempfile.TemporaryDirectory() as tmp, PostgresServer.running(fsync=True) as server:
        url = server.fresh_schema()
        yield [
            ("SQLite (WAL, normal)", lambda c: PushStore(Path(tmp) / "push.db", clock=c)),
            ("PostgreSQL 15 (fsync on)", lambda c: PostgresStore(url, clock=c)),
        ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1_000_000, help="messages per hour")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(
        f"# {os.cpu_count()} CPUs (shared), {args.rate:,.0f} messages/hour, 2 simulated hours, poll every minute"
    )
    results = []
    with stores() as chosen:
        for name, opener in chosen:
            results.append(run_store(name, opener, args.rate))
            print(f"# {name} done", flush=True)
    width = max(len(k) for k in results[0])
    print(f"{'':<{width}}  " + "  ".join(f"{r['store']:>26}" for r in results))
    for key in results[0]:
        if key != "store":
            print(f"{key:<{width}}  " + "  ".join(f"{r[key]:>26}" for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
