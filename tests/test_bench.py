"""Every benchmark under bench/ runs, briefly, and its correctness columns hold.

The benchmarks' speed figures are for a quiet machine (README); what is checked here is
what must hold anywhere: no acknowledged report missing from the store, no failed scrape
or push, every window equal to what was written. A benchmark that rots (a renamed
module, a fixed date its server now refuses as implausible) fails here, not in the
next round's measurements.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bench(*args: str) -> str:
    """Run ``bench/<script> args`` from the repository root; its output, or a failure."""
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stdout


def _rows(output: str, first: str) -> list[list[str]]:
    """The whitespace-split lines of ``output`` whose first word is one of ``first``'s."""
    words = first.split()
    return [cells for cells in map(str.split, output.splitlines()) if cells and cells[0] in words]


def test_push_throughput_stores_every_acknowledged_report_on_both_stores() -> None:
    out = _bench(
        *("bench/push_throughput.py", "--seconds", "1", "--processes", "1"),
        *("--connections", "4", "--single-rate", "200", "--batch-rate", "20", "--no-ratio"),
    )
    rows = _rows(out, "single batch")
    assert [(r[0], r[1]) for r in rows] == [
        ("single", "normal"),
        ("batch", "normal"),
        ("single", "postgres"),
        ("batch", "postgres"),
    ]
    for row in rows:
        posts, non_200, missing = float(row[3]), row[8], row[9]
        assert posts > 0 and non_200 == "0" and missing == "0", out


def test_push_throughput_prints_the_ratios_to_the_bare_stack() -> None:
    out = _bench(
        *("bench/push_throughput.py", "--mode", "single", "--synchronous", "normal"),
        *("--seconds", "1", "--processes", "1", "--connections", "4", "--single-rate", "0"),
    )
    kinds = [row[1] for row in _rows(out, "single")]
    assert kinds == ["normal", "nostore", "floor", "bare"], out
    assert all(row[8] == "0" for row in _rows(out, "single")), out
    assert [row[9] for row in _rows(out, "single")] == ["0", "-", "0", "-"], out
    assert re.search(r"the bare HTTP stack \d+/s: ratio \d\.\d\d", out), out
    assert re.search(r"the receiver without its store at most \d+/s: ratio \d\.\d\d", out), out
    assert re.search(r"the leanest durable receiver .* at most \d+/s: ratio \d\.\d\d", out), out


def test_slow_clients_leave_every_scrape_and_push_answered() -> None:
    out = _bench(
        *("bench/slow_clients.py", "--clients", "50", "--hold", "2", "--warmup", "0.5"),
        *("--after", "0.5", "--push-rate", "10"),
    )
    rows = _rows(out, "1024 16384")
    assert len(rows) == 2, out
    for row in rows:
        cells = " ".join(row).split("|")
        scrapes, scrape_failed = cells[1].split()[:2]
        pushes, push_failed, _, lost = cells[2].split()
        _, after_failed = cells[3].split()
        assert int(scrapes) > 0 and scrape_failed == "0", out
        assert int(pushes) > 0 and push_failed == "0" and lost == "0", out
        assert after_failed == "0", out


def test_push_poison_loses_no_valid_report() -> None:
    out = _bench("bench/push_poison.py", "--connections", "8")
    rows = _rows(out, "clean poisoned")
    assert [r[0] for r in rows] == ["clean", "poisoned"], out
    for row in rows:
        valid, stored, lost = row[5], row[6], row[7]
        assert valid == stored and lost == "0", out


def test_store_writer_commits_on_both_stores() -> None:
    out = _bench("bench/store_writer.py", "--seconds", "1", "--in-flight", "8")
    rows = _rows(out, "SQLite PostgreSQL")
    assert len(rows) == 2, out
    assert all(int(row[-5]) > 0 for row in rows), out


def test_push_store_windows_equal_the_writes() -> None:
    out = _bench("bench/push_store.py", "--rate", "60000", "--minutes", "2")
    (line,) = [x for x in out.splitlines() if x.startswith("polls whose window equals")]
    counts = re.findall(r"(\d+) of (\d+)", line)
    assert len(counts) == 2 and all(a == b and a != "0" for a, b in counts), out


def test_soak_matches_the_truth_at_every_poll() -> None:
    out = _bench("bench/soak.py", "--hours", "0.5", "--scale", "0.002")
    assert "mismatches: 0" in out and out.rstrip().endswith("PASS"), out


def test_late_reports_leave_no_finalized_message_uncounted() -> None:
    out = _bench("bench/late_reports.py", "--hours", "1", "--scale", "0.002")
    assert re.search(r"finalized messages not counted yet at the end .* 0 of [1-9]", out), out


def test_scrape_benchmarks_answer_every_scrape() -> None:
    load = _bench("bench/scrape_load.py", "--scrapers", "2", "--duration", "2", "--scale", "0.01")
    assert "errors: 0" in load and load.rstrip().endswith("PASS"), load
    latency = _bench("bench/scrape_latency.py", "--seconds", "1")
    variants = [x for x in latency.splitlines() if "scrapes," in x]
    assert len(variants) == 4 and all(", 0 errors)" in x for x in variants), latency
