"""Where the incremental engine's requests go, in process (no HTTP), by step and by cause.

Runs the engine over the simulator's store (``tests/store_source.py``) on the engine
benchmark's scenario (1M messages an hour, 50 templates, page 100), one poll a simulated
minute after an hour of history, and prints per settle delay: requests per simulated
hour by step, messages that resolved after their minute was read (each needs its final
record: its receive time and code) and how many of those one request brings back.

    python bench/poll_cost.py                    # 10 polls each for settle 3 and 10 min
    python bench/poll_cost.py --polls 30 --settle 180
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

SCENARIO = ROOT / "bench" / "scenarios" / "engine-1m.yaml"


def measure(settle: float, polls: int) -> dict[str, float]:
    """Requests and resolutions per simulated hour at one settle delay."""
    source = StoreSource(SCENARIO, history=3600.0)
    config = Config(accounts=(ACCOUNT,), settle_delay=settle, request_budget=100_000)
    engine = Engine(EngineSettings.of(config, ACCOUNT))
    engine.poll(source, source.template_ids, source.now)  # start-up: the whole window
    steps = Counter[str]()
    resolved = 0
    for _ in range(polls):
        source.advance(60)
        outcome = engine.poll(source, source.template_ids, source.now)
        steps.update(outcome.requests)
        resolved += outcome.resolved
    per_hour = {step: n * 60 / polls for step, n in steps.items()}
    per_hour["total"] = sum(steps.values()) * 60 / polls
    per_hour["resolutions"] = resolved * 60 / polls
    return per_hour


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=10)
    parser.add_argument("--settle", type=float, nargs="*", default=[180.0, 600.0])
    args = parser.parse_args()
    print(f"engine requests per simulated hour, 1M msgs/h, page 100, {args.polls} polls")
    for settle in args.settle:
        began = time.monotonic()
        m = measure(settle, args.polls)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
