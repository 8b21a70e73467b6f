"""The push stores' write path alone: single reports through the group commit, no HTTP.

``push_throughput.py`` measures the receiver end to end; this measures the store behind
it by itself, so that the two can be told apart. 64 reports (the HTTP benchmark's 2 x 32
connections) are always waiting for their commit, handed over with ``add_reports_then``
as the receiver hands them; each one's answer, on the writer thread, hands over the next.
That is the HTTP benchmark's saturation row without the event loop: no parsing, routing
or answering, and nothing else wanting the interpreter's lock. It prints the rate, the
mean group, the latency of a write and this process's CPU per report (PostgreSQL's own
processes are not counted). SQLite (WAL, synchronous normal) and PostgreSQL (fsync on)
side by side, each in a new store.

    python bench/store_writer.py
    python bench/store_writer.py --seconds 20 --in-flight 128
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from postgres_server import PostgresServer

from exporter.pgstore import PostgresStore
from exporter.pushitems import StatusReport
from exporter.pushstore import GroupCommitWrites
from exporter.sqlitestore import PushStore


def run(store: GroupCommitWrites, in_flight: int, seconds: float) -> dict[str, float]:
    """Closed loop: ``in_flight`` reports always waiting for their commit; each one's
    answer (on the writer thread, as the receiver's are) hands over the next report."""
    stop = threading.Event()
    latencies: list[float] = []
    updated = time.time() - 60
    counter = itertools.count()

    def send(_result: object = None, _failure: object = None, started: float = 0.0) -> None:
        if started:
            latencies.append(time.perf_counter() - started)
        if stop.is_set():
            return
        report = StatusReport(f"w{next(counter)}-{os.getpid()}", "DELIVRD", update_time=updated)
        store.add_reports_then([report], partial(send, started=time.perf_counter()))

    for _ in range(in_flight):
        send()
    time.sleep(1.0)  # warm up: the first groups and statements
    done, commits = len(latencies), store.commits
    cpu, wall = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    stored, commits = len(latencies) - done, store.commits - commits
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    stop.set()
    store.settle()
    measured = sorted(latencies[done : done + stored])
    return {
        "rate": stored / wall,
        "p50_ms": measured[len(measured) // 2] * 1000,
        "p99_ms": measured[int(len(measured) * 0.99)] * 1000,
        "cpu_us": cpu / stored * 1e6,
        "group": stored / max(commits, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--in-flight", type=int, default=64)
    args = parser.parse_args(argv)
    print(
        f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f},"
        f" {args.in_flight} single reports in flight, closed loop, {args.seconds:.0f} s per store"
    )
    print(
        f"{'store':<34} {'reports/s':>10} {'group':>6} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'CPU us/report':>14}"
    )
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        server = stack.enter_context(PostgresServer.running(fsync=True))
        stores: list[tuple[str, PushStore | PostgresStore]] = [
            ("SQLite (WAL, synchronous normal)", PushStore(Path(tmp) / "push.db")),
            ("PostgreSQL (fsync on)", PostgresStore(server.fresh_schema())),
        ]
        for name, store in stores:
            os.sync()
            try:
                r = run(store, args.in_flight, args.seconds)
            finally:
                store.close()
            print(
                f"{name:<34} {r['rate']:>10.0f} {r['group']:>6.1f} {r['p50_ms']:>7.1f}"
                f" {r['p99_ms']:>7.1f}"
                f" {r['cpu_us']:>14.0f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
