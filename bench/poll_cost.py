"""Where the incremental engine's requests go, in process (no HTTP), by step and by cause.

Runs the engine over the simulator's store (``tests/store_source.py``) on the engine
benchmark's scenario (1M messages an hour, 50 templates, page 100), one poll a simulated
minute after an hour of history, and prints per settle delay: requests per simulated
hour by step, messages that resolved after their minute was read (each needs its final
record: its receive time and code) and how many of those one request brings back.

``--bound`` also prints the least any reader could pay for those final records under the
contract, polled as often and exact at every poll: each page holds 100 consecutive
records of one template's (send time, id) order, read from any offset, and this reader
knows where every resolved message stands in that order (the engine does not). It
costs two uncounted queries a resolved message, so it runs slower.

    python bench/poll_cost.py                    # 10 polls each for settle 3 and 10 min
    python bench/poll_cost.py --polls 30 --settle 180
    python bench/poll_cost.py --bound --settle 180
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from store_source import ACCOUNT, StoreSource  # noqa: E402

from exporter.config import Config  # noqa: E402
from exporter.engine import Engine, EngineSettings  # noqa: E402
from exporter.pending import PendingMessage  # noqa: E402
from exporter.records import DetailsQuery, SendRecord, SendResult  # noqa: E402

SCENARIO = ROOT / "bench" / "scenarios" / "engine-1m.yaml"


def _final_record(source: StoreSource, message_id: str, message: PendingMessage) -> SendRecord:
    """A resolved message's record, read from its second (not counted)."""
    second = float(int(message.send_time))
    query = DetailsQuery(second, second + 1, message.template_id, limit=100)
    return next(r for r in source.query(query).records if r.message_id == message_id)


def _position(source: StoreSource, record: SendRecord, origin: float) -> int:
    """Where a record stands among its template's records sent since ``origin``."""
    second = float(int(record.send_time))
    before = 0
    if second > origin:
        before = source.query(DetailsQuery(origin, second, record.template_id, limit=1)).total
    page = source.query(DetailsQuery(second, second + 1, record.template_id, limit=100))
    return before + [r.message_id for r in page.records].index(record.message_id)


def least_pages(source: StoreSource, resolved: dict[str, PendingMessage]) -> tuple[int, int]:
    """Pages a reader knowing every position needs for these final records (100 consecutive
    records of one template a page), and how many of the records are failures."""
    records = [_final_record(source, k, m) for k, m in resolved.items()]
    by_template: dict[str, list[SendRecord]] = {}
    for record in records:
        by_template.setdefault(record.template_id, []).append(record)
    pages = 0
    for group in by_template.values():
        origin = float(int(min(r.send_time for r in group)))
        first: int | None = None
        for position in sorted(_position(source, r, origin) for r in group):
            if first is None or position - first >= 100:
                pages, first = pages + 1, position
    return pages, sum(1 for r in records if r.send_result is SendResult.FAILED)


def measure(settle: float, polls: int, bound: bool = False) -> dict[str, float]:
    """Requests and resolutions per simulated hour at one settle delay."""
    source = StoreSource(SCENARIO, history=3600.0)
    config = Config(accounts=(ACCOUNT,), settle_delay=settle, request_budget=100_000)
    engine = Engine(EngineSettings.of(config, ACCOUNT))
    engine.poll(source, source.template_ids, source.now)  # start-up: the whole window
    steps = Counter[str]()
    resolved = least = failed = 0
    for _ in range(polls):
        source.advance(60)
        followed = dict(engine.book.pending)
        outcome = engine.poll(source, source.template_ids, source.now)
        steps.update(outcome.requests)
        resolved += outcome.resolved
        if bound:
            start = outcome.end - engine.settings.window
            gone = {
                k: m
                for k, m in followed.items()
                if k not in engine.book.pending and m.minute >= start
            }
            pages, failures = least_pages(source, gone)
            least, failed = least + pages, failed + failures
    per_hour = {step: n * 60 / polls for step, n in steps.items()}
    per_hour["total"] = sum(steps.values()) * 60 / polls
    per_hour["resolutions"] = resolved * 60 / polls
    per_hour["least"] = least * 60 / polls
    per_hour["failed"] = failed * 60 / polls
    return per_hour


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=10)
    parser.add_argument("--settle", type=float, nargs="*", default=[180.0, 600.0])
    parser.add_argument("--bound", action="store_true", help="print the resolved step's floor")
    args = parser.parse_args()
    print(f"engine requests per simulated hour, 1M msgs/h, page 100, {args.polls} polls")
    for settle in args.settle:
        began = time.monotonic()
        m = measure(settle, args.polls, args.bound)
        steps = ", ".join(
            f"{s} {m.get(s, 0):,.0f}" for s in ("read", "holds", "pending", "resolved")
        )
        per_request = m["resolutions"] / m["resolved"] if m.get("resolved") else float("nan")
        print(f"  settle {settle / 60:g} min: total {m['total']:,.0f} ({steps})")
        print(
            f"    messages resolved after their minute was read {m['resolutions']:,.0f}/h,"
            f" {per_request:.2f} per request of the resolved step"
            f" ({time.monotonic() - began:.0f} s)"
        )
        if args.bound:
            print(
                f"    least any reader pays for them (positions known, same polls):"
                f" {m['least']:,.0f}/h, {m['resolutions'] / m['least']:.2f} per request;"
                f" failures among them {m['failed']:,.0f}/h"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
