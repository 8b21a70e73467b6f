"""Benchmark of the incremental engine against the naive full re-scan (issue 3).

Runs the simulator (manual clock) and each exporter in separate processes and prints,
in one run: upstream requests per simulated hour for the full re-scan and for the
incremental engine (settle delay 3 min, the default, 0 and 10 min), by engine step, and
their ratios; the naive engine's pages and requests as the simulator counted them,
beside the pages it needed and the exporter's own count; the largest
difference from /-/truth at any poll; exporter CPU seconds per simulated hour; exporter
RSS at 10k and 1M messages/hour; /metrics latency under 20 concurrent scraper processes
that ask for gzip as Prometheus does, with a poll among the scrapes; and the sparse case
(500 templates x 10 messages/hour) in requests per poll.

    python bench/engine.py            # 2 simulated hours (about 22 minutes here)
    python bench/engine.py --hours 1  # shorter
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from multiprocessing import Process, Queue
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from simulator_process import simulator_process  # noqa: E402

from exporter.timestamps import format_rfc3339  # noqa: E402

START = "2026-11-26T10:00:00Z"
SCENARIO_1M = str(ROOT / "bench" / "scenarios" / "engine-1m.yaml")
SCENARIO_SPARSE = str(ROOT / "bench" / "scenarios" / "sparse-500.yaml")
PAGE = 100
SCALE = "1"
API = {"send-details": "send_details", "templates": "templates"}
"""The simulator's API endpoints, by the names the exporter counts them under."""


def simulator_args(scenario: str, scale: str) -> tuple[str, ...]:
    """A manual-clock simulator with an hour of history, for a scenario at a scale."""
    return (
        "--clock",
        "manual",
        "--start-time",
        START,
        "--history",
        "1h",
        "--scenario.file",
        scenario,
        "--scale",
        scale,
    )


class Worker:
    """An exporter process driven line by line."""

    def __init__(self, url: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "engine_worker.py"), "--url", url, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def call(self, cmd: str) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"cmd": cmd}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@contextmanager
def workers(url: str, *arg_lists: list[str]) -> Iterator[list[Worker]]:
    started = [Worker(url, *args) for args in arg_lists]
    try:
        yield started
    finally:
        for worker in started:
            worker.close()


class Sim:
    def __init__(self, url: str, http: httpx.Client) -> None:
        self.url, self.http = url, http

    def advance(self, seconds: float) -> None:
        self.http.post(f"{self.url}/-/clock", json={"advance_seconds": seconds}).raise_for_status()

    def sent(self) -> Counter[str]:
        """API requests the simulator answered so far, by endpoint and status as the
        exporter counts them (``send_details 429``); its control endpoints left out."""
        requests = self.http.get(f"{self.url}/-/stats").json()["requests"]
        return Counter(
            {
                f"{API[endpoint]} {status}": n
                for endpoint, by_status in requests.items()
                if endpoint in API
                for status, n in by_status.items()
            }
        )

    def truth(self, start: float, end: float) -> dict:
        params = {"start_time": format_rfc3339(start), "end_time": format_rfc3339(end)}
        return self.http.get(f"{self.url}/-/truth", params=params).json()["templates"]


def difference(answer: dict, truth: dict) -> int:
    """Largest absolute difference between an exported window and the truth."""
    worst = 0
    for tid, t in truth.items():
        s, f, p = answer["windows"].get(tid, [0, 0, 0])
        worst = max(worst, abs(s - t["success"]), abs(f - t["failed"]), abs(p - t["sending"]))
        codes = answer["codes"].get(tid, {})
        named = {c: n for c, n in codes.items() if c != "other"}
        for code, n in named.items():
            worst = max(worst, abs(n - t["status_codes"].get(code, 0)))
        rest = sum(n for c, n in t["status_codes"].items() if c not in named)
        worst = max(worst, abs(codes.get("other", 0) - rest))
    return worst


def naive_cost(truth: dict) -> int:
    """Requests a per-template full re-scan of the window makes: every page of every
    template, and an empty one after a last page that is full (a total may lag the records
    it counts, so only the next page tells that it was the last: ``fetch.read_range``)."""
    return sum((t["success"] + t["failed"] + t["sending"]) // PAGE + 1 for t in truth.values())


# What Prometheus 2.42 sends with every scrape (scrape.go): it asks for gzip.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
    "User-Agent": "Prometheus/2.42.0",
    "X-Prometheus-Scrape-Timeout-Seconds": "10",
}


def _scraper(url: str, seconds: float, pause: float, headers: dict, out: Queue) -> None:
    """One scraper process: GET /metrics in a loop over one keep-alive connection.

    The time is to the last byte of the body as sent (not decompressed, not parsed).
    """
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    latencies, errors = [], 0
    connection.request("GET", "/metrics", headers=headers)  # connect before the clock starts
    connection.getresponse().read()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        began = time.perf_counter()
        try:
            connection.request("GET", "/metrics", headers=headers)
            response = connection.getresponse()
            response.read()
            errors += response.status != 200
        except OSError:
            errors += 1
            connection.close()
        latencies.append(time.perf_counter() - began)
        if pause:
            time.sleep(pause)
    connection.close()
    out.put((latencies, errors))


def scrape_latency(
    url: str, scrapers: int, seconds: float, pause: float, headers: dict = PROMETHEUS_HEADERS
) -> tuple[float, float, int, int]:
    """p50 and p99 of /metrics under ``scrapers`` concurrent processes (like Prometheus servers)."""
    results: Queue = Queue()
    procs = [
        Process(target=_scraper, args=(url, seconds, pause, headers, results))
        for _ in range(scrapers)
    ]
    for proc in procs:
        proc.start()
    latencies: list[float] = []
    errors = 0
    for _ in procs:
        got, bad = results.get()
        latencies += got
        errors += bad
    for proc in procs:
        proc.join()
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return p50, p99, len(latencies), errors


def run_1m(hours: float) -> dict:
    polls = int(hours * 60)
    args = simulator_args(SCENARIO_1M, SCALE)
    out: dict = {}
    with simulator_process(*args, startup_timeout=300) as url, httpx.Client(timeout=120) as http:
        sim = Sim(url, http)
        specs = [
            ["--settle", "180", "--top", "30"],
            ["--settle", "0"],
            ["--settle", "600"],
            ["--engine", "full_scan", "--settle", "180"],
        ]
        with workers(url, *specs) as (inc, inc0, inc10, full):
            # Every request each exporter counted (msgsms_upstream_requests_total), by code.
            sent = {k: Counter[str]() for k in ("inc", "inc0", "inc10", "naive")}
            for key, worker in (("inc", inc), ("inc0", inc0), ("inc10", inc10)):
                # start-up backfill of the whole window, not in the per-hour figures
                sent[key].update(worker.call("poll")["sent"])
            requests = {"inc": [], "inc0": [], "inc10": [], "naive": []}
            steps: dict[str, Counter[str]] = {k: Counter() for k in ("inc", "inc0", "inc10")}
            worst = 0
            cpu_start = None
            naive_polls: list[tuple[Counter[str], Counter[str], int]] = []
            for step in range(polls):
                sim.advance(60)
                for key, worker in (("inc", inc), ("inc0", inc0), ("inc10", inc10)):
                    answer = worker.call("poll")
                    truth = sim.truth(answer["start"], answer["end"])
                    worst = max(worst, difference(answer, truth))
                    requests[key].append(answer["requests"])
                    sent[key].update(answer["sent"])
                    steps[key].update(answer["steps"])
                    if key == "inc":
                        requests["naive"].append(naive_cost(truth))
                if step in (polls // 2, polls - 1):
                    before = sim.sent()
                    answer = full.call("poll")
                    at_simulator = sim.sent() - before
                    sent["naive"].update(answer["sent"])
                    truth = sim.truth(answer["start"], answer["end"])
                    worst = max(worst, difference(answer, truth))
                    naive_polls.append((at_simulator, Counter(answer["sent"]), naive_cost(truth)))
                if step == min(59, polls // 2) and cpu_start is None:
                    cpu_start = (step, inc.call("usage")["cpu_seconds"])
            usage = inc.call("usage")
            steady_polls = polls - 1 - cpu_start[0]
            out["cpu_per_hour"] = (usage["cpu_seconds"] - cpu_start[1]) * 60 / steady_polls
            out["rss_1m"] = usage["rss_bytes"]
            out["requests"] = requests
            out["steps"] = {k: {s: n * 60 / polls for s, n in c.items()} for k, c in steps.items()}
            out["naive_polls"] = naive_polls
            served = inc.call("serve")["url"]
            # 60 s of scrapes with a poll in the middle, as in steady state: the poll
            # folds a minute of records (about a second of CPU) while scrapes arrive.
            with ThreadPoolExecutor(1) as pool:
                scraping = pool.submit(scrape_latency, served, 20, 60.0, 1.0)
                time.sleep(30)
                sim.advance(60)
                answer = inc.call("poll")
                sent["inc"].update(answer["sent"])
                worst = max(worst, difference(answer, sim.truth(answer["start"], answer["end"])))
                out["scrape"] = scraping.result()
            out["sent"] = sent
            out["sent_at_simulator"] = sim.sent()
            out["worst"] = worst
            out["scrape_plain"] = scrape_latency(served, 20, 30.0, 1.0, {})
            out["scrape_closed"] = scrape_latency(served, 20, 10.0, 0.0)
            out["series"] = sum(
                1
                for line in httpx.get(f"{served}/metrics").text.splitlines()
                if line and not line.startswith("#")
            )
    return out


def run_rss(scale: str, hours: float) -> int:
    args = simulator_args(SCENARIO_1M, scale)
    with simulator_process(*args, startup_timeout=300) as url, httpx.Client(timeout=120) as http:
        sim = Sim(url, http)
        with workers(url, ["--settle", "180", "--top", "30"]) as (inc,):
            inc.call("poll")
            for _ in range(int(hours * 60)):
                sim.advance(60)
                inc.call("poll")
            return inc.call("usage")["rss_bytes"]


def run_sparse(polls: int) -> list[int]:
    args = simulator_args(SCENARIO_SPARSE, SCALE)
    with simulator_process(*args, startup_timeout=300) as url, httpx.Client(timeout=120) as http:
        sim = Sim(url, http)
        with workers(url, ["--settle", "180"]) as (inc,):
            inc.call("poll")
            counts = []
            for _ in range(polls):
                sim.advance(60)
                counts.append(inc.call("poll")["requests"])
            return counts


STEPS = ("read", "holds", "pending", "resolved")


def _by_step(per_hour: dict[str, float]) -> str:
    """Requests per simulated hour by engine step, in the order a poll takes them."""
    return ", ".join(f"{per_hour.get(step, 0):,.0f}" for step in STEPS)


ENGINES = {"inc": "settle 3m", "inc0": "settle 0", "inc10": "settle 10m", "naive": "naive"}


def _beyond_pages(sent: Counter[str]) -> str:
    """The requests of one poll besides pages answered: `` + 15 send_details 429``."""
    rest = sorted((k, n) for k, n in sent.items() if k != "send_details 200")
    return "".join(f" + {n} {k}" for k, n in rest)


def _naive_sent(polls: list[tuple[Counter[str], Counter[str], int]]) -> str:
    """Each measured naive poll at the simulator: all it answered, as pages and the rest."""
    return ", ".join(
        f"{sum(s.values())} = {s['send_details 200']} pages{_beyond_pages(s)}"
        + ("" if s == counted else f" (the exporter counted {sum(counted.values())})")
        for s, counted, _ in polls
    )


def _all_sent(sent: dict[str, Counter[str]], at_simulator: Counter[str]) -> str:
    """The exporters' count of the run's requests beside the simulator's, and the throttled."""
    counted = sum(sent.values(), Counter[str]())
    throttled = ", ".join(
        f"{ENGINES[k]} {sum(n for code, n in c.items() if code.endswith(' 429'))}"
        for k, c in sent.items()
    )
    same = "" if counted == at_simulator else " (by endpoint and code: differ)"
    return (
        f"{sum(counted.values()):,} vs {sum(at_simulator.values()):,}{same};"
        f" of them 429 throttled and retried: {throttled}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0, help="simulated hours at 1M/h")
    parser.add_argument("--scale", default="1", help="scale every rate (a quick smoke run: 0.01)")
    args = parser.parse_args()
    began = time.monotonic()
    global SCALE
    SCALE = args.scale
    big = run_1m(args.hours)
    rss_10k = run_rss(str(float(SCALE) * 0.01), args.hours)
    sparse = run_sparse(30)
    per_hour = {k: statistics.mean(v) * 60 for k, v in big["requests"].items()}
    mb = 1024 * 1024
    p50, p99, scrapes, errors = big["scrape"]
    i50, i99, iscrapes, ierrors = big["scrape_plain"]
    c50, c99, cscrapes, cerrors = big["scrape_closed"]
    rows = [
        ("upstream requests / simulated hour, naive full re-scan", f"{per_hour['naive']:,.0f}", ""),
        (
            "upstream requests / simulated hour, incremental (settle 3m)",
            f"{per_hour['inc']:,.0f}",
            "",
        ),
        (
            "upstream requests / simulated hour, incremental (settle 0)",
            f"{per_hour['inc0']:,.0f}",
            "",
        ),
        (
            "  by step (settle 3m): read, holds, pending, resolved",
            _by_step(big["steps"]["inc"]),
            "",
        ),
        (
            "  by step (settle 0): read, holds, pending, resolved",
            _by_step(big["steps"]["inc0"]),
            "",
        ),
        (
            "upstream requests / simulated hour, incremental (settle 10m)",
            f"{per_hour['inc10']:,.0f}",
            "<= 15,000",
        ),
        (
            "  by step (settle 10m): read, holds, pending, resolved",
            _by_step(big["steps"]["inc10"]),
            "",
        ),
        (
            "ratio naive / incremental (settle 3m)",
            f"{per_hour['naive'] / per_hour['inc']:.1f}x",
            ">= 20x",
        ),
        (
            "ratio naive / incremental (settle 0)",
            f"{per_hour['naive'] / per_hour['inc0']:.1f}x",
            "",
        ),
        (
            "ratio naive / incremental (settle 10m)",
            f"{per_hour['naive'] / per_hour['inc10']:.1f}x",
            "",
        ),
        (
            "naive pages per poll, answered at the simulator vs counted",
            ", ".join(f"{s['send_details 200']} vs {pages}" for s, _, pages in big["naive_polls"]),
            "equal",
        ),
        (
            "  naive requests per poll at the simulator",
            _naive_sent(big["naive_polls"]),
            "",
        ),
        (
            "all requests of the run, the exporters' count vs the simulator's",
            _all_sent(big["sent"], big["sent_at_simulator"]),
            "equal",
        ),
        ("largest difference from /-/truth at any poll", str(big["worst"]), "0"),
        (
            "exporter CPU seconds / simulated hour at 1M/h",
            f"{big['cpu_per_hour']:.1f} ({big['cpu_per_hour'] / 36:.2f} % of a core)",
            "<= 2 %",
        ),
        ("exporter RSS at 10k msgs/h", f"{rss_10k / mb:.1f} MiB", ""),
        (
            "exporter RSS at 1M msgs/h",
            f"{big['rss_1m'] / mb:.1f} MiB ({(big['rss_1m'] / rss_10k - 1) * 100:+.1f} %)",
            "within 15 %",
        ),
        (
            f"/metrics p50 / p99, 20 scrapers as Prometheus (gzip) every 1 s, a poll among them, {big['series']} series",
            f"{p50 * 1000:.1f} ms / {p99 * 1000:.1f} ms ({scrapes} scrapes, {errors} errors)",
            "p99 <= 10 ms",
        ),
        (
            "/metrics p50 / p99, 20 scrapers uncompressed (as curl) every 1 s",
            f"{i50 * 1000:.1f} ms / {i99 * 1000:.1f} ms ({iscrapes} scrapes, {ierrors} errors)",
            "",
        ),
        (
            "/metrics p50 / p99, 20 scrapers as Prometheus back to back (saturation)",
            f"{c50 * 1000:.1f} ms / {c99 * 1000:.1f} ms ({cscrapes} scrapes, {cerrors} errors)",
            "",
        ),
        (
            "sparse 500 x 10/h: requests per poll (steady, last 20)",
            f"max {max(sparse[-20:])}, mean {statistics.mean(sparse[-20:]):.1f}",
            "<= 5",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(
        f"msgsms-exporter engine benchmark: {args.hours:g} simulated hours at 1M msgs/h, 50 templates (Zipf), page 100, poll 60 s, window 1h"
    )
    for name, value, target in rows:
        print(f"  {name:<{width}}  {value:<40} {('target ' + target) if target else ''}")
    print(f"  (ran in {time.monotonic() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
