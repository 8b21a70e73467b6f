"""Poisoned pushes: do a few items the store cannot hold cost anyone else's reports?

Starts the real exporter (``python -m exporter``) with a receiver and an SQLite store,
then posts 400 valid batches of 50 reports and 30 poisoned ones (a lone surrogate in one
item's ``statusDesc``, 49 valid items beside it) from 32 concurrent connections, all
shuffled together. Side by side with the same load without poison: answers by code,
valid reports posted, stored and lost, and the acknowledgement latency.

    python bench/push_poison.py
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sqlite3
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from push_throughput import UPDATED, _percentile, _start_exporter

POISON = "\ud800"  # parses as JSON, cannot be encoded as UTF-8


def _batches(valid: int, poisoned: int, seed: int) -> tuple[list[bytes], set[str]]:
    """The bodies to post, shuffled, and the ids of every valid report among them."""
    bodies: list[bytes] = []
    ids: set[str] = set()
    for n in range(valid + poisoned):
        items = [
            {"smsMsgId": f"b{n}-{i}", "status": "DELIVRD", "updateTime": UPDATED} for i in range(50)
        ]
        if n >= valid:
            items[0] = {"smsMsgId": f"b{n}-0", "status": "UNDELIV", "statusDesc": POISON}
        ids.update(item["smsMsgId"] for item in items if "statusDesc" not in item)
        bodies.append(json.dumps({"statusReportList": items}).encode())
    random.Random(seed).shuffle(bodies)
    return bodies, ids


def _post_all(port: int, bodies: list[bytes], connections: int) -> list[tuple[int, float]]:
    """Post every body, ``connections`` at a time; (status, seconds) per post."""
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    queue = list(bodies)

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if not queue:
                    break
                body = queue.pop()
            started = time.perf_counter()
            conn.request(
                "POST",
                "/push/status-reports",
                body=body,
                headers={"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            response.read()
            with lock:
                results.append((response.status, time.perf_counter() - started))
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def run(workdir: Path, name: str, poisoned: int, connections: int) -> dict[str, object]:
    """One run on a fresh exporter and store."""
    run_dir = workdir / name
    run_dir.mkdir()
    proc, port = _start_exporter(run_dir, "normal")
    try:
        bodies, valid_ids = _batches(400, poisoned, seed=11)
        results = _post_all(port, bodies, connections)
    finally:
        proc.terminate()
        proc.wait(30)
    with closing(sqlite3.connect(run_dir / "push-normal.db")) as db:
        stored = {row[0] for row in db.execute("SELECT message_id FROM segments")}
    seconds = [s for _, s in results]
    codes = [c for c, _ in results]
    return {
        "run": name,
        "posts": len(results),
        "200": codes.count(200),
        "400": codes.count(400),
        "other": len(codes) - codes.count(200) - codes.count(400),
        "valid": len(valid_ids),
        "stored": len(valid_ids & stored),
        "lost": len(valid_ids - stored),
        "p50": _percentile(seconds, 0.50) * 1000,
        "p99": _percentile(seconds, 0.99) * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="push-poison-") as scratch:
        rows = [
            run(Path(scratch), "clean", 0, args.connections),
            run(Path(scratch), "poisoned", 30, args.connections),
        ]
    header = (
        f"{'run':<9}{'posts':>6}{'200':>6}{'400':>6}{'other':>6}"
        f"{'valid':>8}{'stored':>8}{'lost':>6}{'p50 ms':>9}{'p99 ms':>9}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['run']:<9}{r['posts']:>6}{r['200']:>6}{r['400']:>6}{r['other']:>6}"
            f"{r['valid']:>8}{r['stored']:>8}{r['lost']:>6}{r['p50']:>9.1f}{r['p99']:>9.1f}"
        )
    return 0 if all(r["lost"] == 0 and r["other"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
