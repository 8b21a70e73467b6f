"""Soak: simulated hours of polling against a faulty simulator on a manual clock.

    python bench/soak.py --hours 24 --scale 0.02 --fault-share 0.05

Faults hit ``--fault-share`` of the upstream requests (5xx, 429 with and without
Retry-After, resets, truncated JSON, wrongly typed pages), and random incidents start
every few simulated hours. The packaged default scenario has the late tail (0.3 % of
reports 1-48 h late) and review rejections. After every successful poll the 1 h window
must equal the simulator's truth; at the end, every message final since the start must
be counted final once (``msgsms_messages_finalized_total``; a report past the window is
counted within 15 minutes, so a few may not be yet); the exporter's RSS after the first
simulated hour and at the end are compared. Prints its figures; exits 1 when a check
fails.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import Simulator, config_for
from prometheus_client.parser import text_string_to_metric_families
from simulator_process import simulator_process

from exporter.app import Exporter
from exporter.logs import configure_logging

CATEGORIES = ("blacklisted", "carrier_rejected", "platform_config", "expired", "rate_limited")


def rss_kib() -> int:
    """This process's resident set size (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fault_rules(share: float) -> list[dict[str, object]]:
    """Transport and page faults only: each is all-or-nothing for a page."""
    kinds: list[dict[str, object]] = [
        {"fault": "status", "status": 503},
        {"fault": "status", "status": 502, "retry_after": None},
        {"fault": "status", "status": 429, "retry_after": 1},
        {"fault": "status", "status": 429, "retry_after": None},
        {"fault": "reset"},
        {"fault": "truncated"},
        {"fault": "wrong_page_types"},
    ]
    # Rules are tried in order; each share is of what the earlier ones left.
    rules, left = [], share
    for kind in kinds:
        part = share / len(kinds)
        rules.append({**kind, "share": min(1.0, part / (1 - (share - left)))})
        left -= part
    return rules


def window(exposition: bytes) -> tuple[float, float, dict[str, dict[str, int]]]:
    out: dict[str, dict[str, int]] = {}
    start = end = 0.0
    for family in text_string_to_metric_families(exposition.decode()):
        for s in family.samples:
            if s.labels.get("window") not in (None, "1h"):
                continue
            if s.name == "msgsms_window_messages":
                out.setdefault(s.labels["template"], {})[s.labels["result"]] = int(s.value)
            elif s.name == "msgsms_window_start_timestamp_seconds":
                start = s.value
            elif s.name == "msgsms_window_end_timestamp_seconds":
                end = s.value
    return start, end, out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=24.0)
    p.add_argument("--scale", type=float, default=0.02)
    p.add_argument("--fault-share", type=float, default=0.05)
    p.add_argument("--incident-every-hours", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    configure_logging("error", "console")
    rng = random.Random(args.seed)
    sim_args = ("--clock", "manual", "--start-time", "2026-11-26T00:00:00Z", "--history", "1h")
    sim_args += ("--scale", str(args.scale), "--rate-limit", "0", "--seed", str(args.seed))
    polls = int(args.hours * 60)
    failures = mismatches = compared = 0
    rss_after_first_hour = 0
    started = time.monotonic()
    first_start = 0.0
    with simulator_process(*sim_args) as url, httpx.Client(timeout=60) as http:
        sim = Simulator(url, http)
        sim.post("/-/faults", {"rules": fault_rules(args.fault_share)})
        exporter = Exporter(config_for(url), clock=sim.now, sleep=lambda _s: None)
        try:
            for poll in range(1, polls + 1):
                sim.advance(60)
                if poll % int(args.incident_every_hours * 60) == 0:
                    sim.post(
                        "/-/incidents",
                        {
                            "category": rng.choice(CATEGORIES),
                            "failure_share": round(rng.uniform(0.1, 0.6), 2),
                            "duration_seconds": rng.choice((600, 1800, 3600)),
                        },
                    )
                if not exporter.poll_once():
                    failures += 1
                    continue
                start, end, exported = window(exporter.exposition_text())
                first_start = first_start or start
                truth = sim.truth(start, end)
                expected = {
                    t: {k: v[k] for k in ("success", "failed", "sending")}
                    for t, v in truth.items()
                    if t in exported
                }
                compared += 1
                if exported != expected:
                    mismatches += 1
                    print(f"poll {poll}: window differs from truth", file=sys.stderr)
                if poll == 60:
                    rss_after_first_hour = rss_kib()
            stats = http.get(f"{url}/-/stats").json()["requests"]
            sim.post("/-/faults", {"rules": []})
            for _ in range(2):  # every block of minutes past the window has its turn
                sim.advance(900)
                exporter.poll_once()
            _, end, _ = window(exporter.exposition_text())
            final = sim.truth(first_start, end)
            counters = exporter.pollers[0].engine.book.counters.finalized
        finally:
            exporter.stop()
    expected_final = sum(v["success"] + v["failed"] for v in final.values())
    counted_final = sum(counters.values())
    rss_end = rss_kib()
    growth = (rss_end - rss_after_first_hour) / rss_after_first_hour if rss_after_first_hour else 0
    faulted = sum(
        n
        for ep in ("send-details", "templates")
        for code, n in stats.get(ep, {}).items()
        if code != "200"
    )
    served = sum(n for ep in ("send-details", "templates") for n in stats.get(ep, {}).values())
    print(f"simulated hours:         {args.hours:g} ({polls} polls, scale {args.scale:g})")
    print(f"upstream requests:       {served} ({faulted} answered with an error status)")
    print(f"failed polls:            {failures}")
    print(f"polls compared to truth: {compared}, mismatches: {mismatches}")
    print(f"finalized counted/truth: {counted_final} / {expected_final}")
    print(f"RSS after 1 h / end:     {rss_after_first_hour} KiB / {rss_end} KiB ({growth:+.1%})")
    print(f"wall time:               {time.monotonic() - started:.0f} s")
    ok = mismatches == 0 and counted_final == expected_final and (growth < 0.05 or args.hours <= 1)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
