"""An exporter in its own process for the engine benchmark, driven over stdin/stdout.

Each input line is a JSON command; each answer one JSON line:
  {"cmd": "poll"}    -> {"ok", "end", "complete", "requests", "steps": {step: requests},
                         "sent": {"endpoint status": requests}, "windows": {tid: [s, f, p]},
                         "codes": {...}}
  {"cmd": "usage"}   -> {"cpu_seconds", "rss_bytes"}
  {"cmd": "serve"}   -> {"url"}  (starts /metrics on 127.0.0.1:0, no background polling)
The exporter's clock is the simulator's (GET /-/clock before each command), so polls follow
simulated time.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from exporter.app import Exporter
from exporter.config import AccountConfig, Config, Secret, TemplateSelection
from exporter.logs import configure_logging
from exporter.snapshot import CodeCount
from exporter.timestamps import parse_rfc3339
from exporter.web import WebServer


def rss_bytes() -> int:
    """Resident set size of this process, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def codes(counts: tuple[CodeCount, ...]) -> dict[str, int]:
    """Counts by status code; the per-category "other" rows are summed."""
    out: dict[str, int] = {}
    for c in counts:
        out[c.status_code] = out.get(c.status_code, 0) + c.count
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--engine", default="incremental")
    parser.add_argument("--settle", type=float, default=120.0)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--budget", type=int, default=20000)
    args = parser.parse_args()
    configure_logging("warning", "json")  # stdout carries the answers
    http = httpx.Client(timeout=60)
    # The simulator's manual clock moves only when the driver advances it, between two
    # commands: read it once a command, not at every call (the client stamps each answer's
    # arrival with it, which would add a request to the simulator per request measured).
    now = [0.0]

    def read_clock() -> None:
        now[0] = parse_rfc3339(http.get(f"{args.url}/-/clock").json()["now"])

    read_clock()
    clock = lambda: now[0]  # noqa: E731
    account = AccountConfig(
        name="bench",
        endpoint=args.url,
        project_id="0123456789abcdef0123456789abcdef",
        templates=TemplateSelection(discover=True),
        access_key="demo-access-key",
        secret_key=Secret("demo-secret-key"),
    )
    config = Config(
        accounts=(account,),
        engine=args.engine,
        settle_delay=args.settle,
        top_status_codes=args.top,
        request_budget=args.budget,
        request_timeout=60.0,
    )
    exporter = Exporter(config, clock=clock)
    poller = exporter.pollers[0]
    web: WebServer | None = None
    for line in sys.stdin:
        command = json.loads(line)["cmd"]
        read_clock()
        if command == "poll":
            before = poller.source.stats.request_count
            sent_before = Counter(poller.source.stats.totals().by_code)
            ok = exporter.poll_once()
            # What msgsms_upstream_requests_total grew by, for comparison with the simulator.
            sent = Counter(poller.source.stats.totals().by_code) - sent_before
            snap = poller.last
            window = snap.windows[0] if snap.windows else None
            answer = {
                "ok": ok,
                "requests": poller.source.stats.request_count - before,
                "steps": dict(poller.last_outcome.requests) if poller.last_outcome else {},
                "sent": {f"{endpoint} {code}": n for (endpoint, code), n in sent.items()},
                "start": window.start if window else None,
                "end": window.end if window else None,
                "complete": bool(window and window.complete),
                "windows": {
                    t.template_id: [t.success, t.failed, t.sending]
                    for t in (window.templates if window else ())
                },
                "codes": {
                    t.template_id: codes(t.codes) for t in (window.templates if window else ())
                },
            }
        elif command == "usage":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            answer = {"cpu_seconds": usage.ru_utime + usage.ru_stime, "rss_bytes": rss_bytes()}
        elif command == "serve":
            web = WebServer(exporter.router(), "127.0.0.1", 0)
            web.start()
            host, port = web.address
            answer = {"url": f"http://{host}:{port}"}
        else:
            answer = {"error": f"unknown command {command}"}
        print(json.dumps(answer), flush=True)
    if web is not None:
        web.stop()
    exporter.stop()
    http.close()
    time.sleep(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
