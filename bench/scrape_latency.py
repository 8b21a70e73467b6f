"""/metrics latency under 20 scraper processes: what gzip and the GIL switch interval buy.

    python bench/scrape_latency.py              # 4 variants x 30 s, about 2.5 minutes
    python bench/scrape_latency.py --seconds 10

Serves the real collector's exposition for 50 templates x 30 status codes (the size issue
3 sets) from the exporter's own web server, in this process, while a thread stands in
for the poller folding records: pure-Python work 1 s in every 6 (a 1M messages/hour poll
takes about 1 s of CPU a minute, so this is six times heavier). 20 scraper processes
GET /metrics every second; the variants run side by side in one run:

  - as shipped: gzip (Prometheus asks for it), GIL handed over every 1 ms while serving;
  - uncompressed (a client that does not ask for gzip, like curl);
  - gzip with the interpreter's default 5 ms switch interval;
  - as shipped with a status-report receiver: its counters (a real PushCollector on a
    real store) rendered for every scrape and appended to the cached gzip stream.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import PROMETHEUS_HEADERS, scrape_latency

from exporter.collector import DeliveryCollector
from exporter.ledger import Tally
from exporter.pushstats import PushCollector, ReceiverStats
from exporter.records import SendResult
from exporter.snapshot import AccountSnapshot, SnapshotBoard, WindowSnapshot, summarize
from exporter.sqlitestore import PushStore
from exporter.status_codes import StatusCategory
from exporter.templates import SmsTemplate
from exporter.web import ExpositionCache, Router, WebServer

TEMPLATES, CODES = 50, 30


def snapshot() -> AccountSnapshot:
    """One account, 50 templates, each with 30 status codes in its window."""
    templates, windows, sent, finalized = [], [], {}, {}
    for t in range(TEMPLATES):
        tid = f"8ff5a7c1e0b94d2c9a3f{t:012d}"
        templates.append(SmsTemplate(tid, f"Template {t}", "VERIFY_CODE_TYPE"))
        tally = Tally(success=20_000, failed=300, sending=40)
        tally.codes.update({"DELIVRD": 20_000, **{f"E2000{c:02d}": 10 + c for c in range(CODES)}})
        tally.delay_counts[:] = [1000 * (i + 1) for i in range(len(tally.delay_counts))]
        tally.delay_sum_ms = 61_000_000
        windows.append(summarize(tid, tally, CODES))
        sent[tid] = 20_340
        for category in StatusCategory:
            finalized[(tid, SendResult.FAILED, category)] = 5
        finalized[(tid, SendResult.SUCCESS, StatusCategory.DELIVERED)] = 20_000
    return AccountSnapshot(
        account="main",
        up=True,
        poll_interval=60.0,
        templates=tuple(templates),
        windows=(WindowSnapshot("1h", 1_790_000_000.0, 1_790_003_600.0, True, tuple(windows)),),
        last_success=1_790_003_780.0,
        poll_duration=0.9,
        sent_total=sent,
        finalized_total=finalized,
    )


def fold(stop: threading.Event, busy: float, every: float) -> None:
    """Pure-Python work ``busy`` seconds in every ``every``, like the poller folding pages."""
    while not stop.is_set():
        until = time.monotonic() + busy
        tallies: dict[int, int] = {}
        while time.monotonic() < until:
            for i in range(1000):
                tallies[i % 97] = tallies.get(i % 97, 0) + i
        stop.wait(every - busy)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="per variant")
    args = parser.parse_args()
    board = SnapshotBoard(["main"])
    board.publish(snapshot())
    registry = CollectorRegistry()
    registry.register(DeliveryCollector(board.snapshots))
    exposition = ExpositionCache(registry, lambda: board.version)
    exposition.refresh()
    workdir = tempfile.TemporaryDirectory()
    store = PushStore(Path(workdir.name) / "push.db")
    stats = ReceiverStats()
    for endpoint in ("single", "batch", "sends"):
        stats.request(endpoint, 200, 0.004)
    live = CollectorRegistry()
    live.register(PushCollector(stats, store))
    with_receiver = ExpositionCache(registry, lambda: board.version, live)
    serving = [exposition]
    router = Router()
    router.add("/metrics", lambda request: serving[0].route(request))
    server = WebServer(router, "127.0.0.1", 0)
    server.start()
    url = "http://{}:{}".format(*server.address)
    shipped = sys.getswitchinterval()
    series = sum(1 for line in exposition.body().splitlines() if not line.startswith(b"#"))
    print(
        f"/metrics under 20 scraper processes every 1 s, {series} series, "
        f"{len(exposition.body()):,} bytes ({len(exposition.body(gzipped=True)):,} gzip), "
        f"a poller stand-in busy 1 s in 6, {args.seconds:g} s a variant"
    )
    variants = [
        ("as shipped: gzip, GIL switch 1 ms", exposition, PROMETHEUS_HEADERS, shipped),
        ("uncompressed (as curl), GIL switch 1 ms", exposition, {}, shipped),
        ("gzip, GIL switch 5 ms (interpreter default)", exposition, PROMETHEUS_HEADERS, 0.005),
        ("as shipped, with a receiver's live counters", with_receiver, PROMETHEUS_HEADERS, shipped),
    ]
    stop = threading.Event()
    poller = threading.Thread(target=fold, args=(stop, 1.0, 6.0), daemon=True)
    poller.start()
    try:
        for name, cache, headers, interval in variants:
            serving[0] = cache
            sys.setswitchinterval(interval)
            p50, p99, scrapes, errors = scrape_latency(url, 20, args.seconds, 1.0, headers)
            print(
                f"  {name:<44} p50 {p50 * 1000:5.1f} ms  p99 {p99 * 1000:5.1f} ms"
                f"  ({scrapes} scrapes, {errors} errors)",
                flush=True,
            )
    finally:
        stop.set()
        sys.setswitchinterval(shipped)
        server.stop()
        store.close()
        workdir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
