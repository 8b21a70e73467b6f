"""Slow clients against the real exporter: /metrics and pushes must keep being answered.

Starts ``python -m exporter`` with a push receiver, once under ``ulimit -n 1024`` and
once above it, and for each:

1. scrapes ``/metrics`` every 250 ms over a kept-alive connection (as Prometheus does) and
   pushes single reports at a steady rate, the whole time;
2. after a few seconds, a separate process opens 3,000 slow clients: each sends a request
   line and then one header line every 4 s, never finishing its head, and reopens a
   connection the server closed at its next 4 s round (as slowloris does);
3. once all have connected (or 15 s passed), holds them 30 s, then they all leave.

It prints, per run: the scrapes while the slow clients were there (answered, failed,
p50/p99/max), the pushes acknowledged and refused, the slowest scrape in the first
second after they left, the connections the server held, and what it evicted.

    python bench/slow_clients.py                  # 3,000 clients, 30 s, both fd limits
    python bench/slow_clients.py --clients 1100 --hold 15 --nofile 1024
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import multiprocessing as mp
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from push_throughput import UPDATED, _free_port, wait_healthy

SCRAPE_EVERY = 0.25
TICK_SECONDS = 4.0
RAMP_SECONDS = 15.0
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _start_exporter(workdir: Path, nofile: int | None) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    config = workdir / "config.yaml"
    config.write_text(
        "poll_interval: 15s\n"
        "accounts: [{name: push, source: push, templates: {discover: true}}]\n"
        f"receiver: {{store_path: {workdir / 'push.db'}, synchronous: normal}}\n",
        encoding="utf-8",
    )
    command = [
        *(sys.executable, "-m", "exporter", "--config.file", str(config)),
        *("--web.listen-address", f"127.0.0.1:{port}", "--log.level", "warning"),
        *("--web.shutdown-delay", "0s"),
    ]
    if nofile is not None:
        command = ["sh", "-c", f'ulimit -n {nofile} && exec "$@"', "sh", *command]
    with (workdir / "exporter.log").open("ab") as log:
        proc = subprocess.Popen(command, stderr=log)
    wait_healthy(proc, port, timeout=60)
    return proc, port


# -- the slow clients (their own process, their own event loop) ---------------------


async def _slow_client(port: int, stop: asyncio.Event, counts: dict[str, int]) -> None:
    """Hold a connection whose head never ends; reopen a closed one at the next tick."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            counts["connect_failed"] += 1
            await asyncio.sleep(TICK_SECONDS)
            continue
        counts["connected"] += 1
        try:
            writer.write(b"POST /push/status-report HTTP/1.1\r\nHost: exporter\r\n")
            line = 0
            while not stop.is_set():
                try:
                    data = await asyncio.wait_for(reader.read(1024), timeout=TICK_SECONDS)
                except TimeoutError:
                    line += 1
                    writer.write(f"X-Slow-{line}: {'a' * 20}\r\n".encode())
                    await writer.drain()
                    continue
                if not data:
                    counts["closed_by_server"] += 1
                    break
        except OSError:
            counts["closed_by_server"] += 1
        finally:
            writer.close()
        await asyncio.sleep(TICK_SECONDS)  # as slowloris does: reopen at its next round


def _slow_clients(port: int, clients: int, hold: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, clients + 500)), hard))

    async def main() -> tuple[float, float, dict[str, int]]:
        counts = {"connected": 0, "connect_failed": 0, "closed_by_server": 0}
        stop = asyncio.Event()
        tasks = []
        for _ in range(clients):
            tasks.append(asyncio.create_task(_slow_client(port, stop, counts)))
            await asyncio.sleep(0)  # spread the connects over the loop's turns
        ramp_end = time.monotonic() + RAMP_SECONDS  # a dropped SYN is retried for minutes
        while counts["connected"] < clients and time.monotonic() < ramp_end:
            await asyncio.sleep(0.05)
        began = time.monotonic()
        await asyncio.sleep(hold)
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return began, time.monotonic(), counts

    out.put(asyncio.run(main()))


# -- the scraper and the pusher (threads of this process) ----------------------------


@dataclass
class Probe:
    """Latencies and failures of one kind of request, by when they were sent."""

    samples: list[tuple[float, float]] = field(default_factory=list)  # (sent at, seconds)
    failures: list[float] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)


def _probe(port: int, kind: str, every: float, stop: threading.Event, probe: Probe) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    n = 0
    next_at = time.monotonic()
    while not stop.is_set():
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += every
        n += 1
        sent = time.monotonic()
        try:
            if kind == "scrape":
                conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
            else:
                body = f"smsMsgId=slow-bench-{n}&status=DELIVRD&updateTime={UPDATED.replace(':', '%3A')}"
                conn.request("POST", "/push/status-report", body=body, headers=FORM)
            response = conn.getresponse()
            response.read()
            ok = response.status == 200
        except OSError:
            ok = False
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        if ok:
            probe.samples.append((sent, time.monotonic() - sent))
            if kind == "push":
                probe.acked.append(f"slow-bench-{n}")
        else:
            probe.failures.append(sent)
    conn.close()


def _metric(port: int, name: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(nofile: int | None, args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    workdir.mkdir()
    proc, port = _start_exporter(workdir, nofile)
    stop = threading.Event()
    scrapes, pushes = Probe(), Probe()
    threads = [
        threading.Thread(target=_probe, args=(port, "scrape", SCRAPE_EVERY, stop, scrapes)),
        threading.Thread(target=_probe, args=(port, "push", 1 / args.push_rate, stop, pushes)),
    ]
    held: list[float] = []
    try:
        for thread in threads:
            thread.start()
        time.sleep(args.warmup)
        out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        attackers = mp.Process(target=_slow_clients, args=(port, args.clients, args.hold, out))
        attackers.start()
        while attackers.is_alive() and out.empty():
            time.sleep(2.0)
            held.append(_metric(port, "msgsms_http_connections "))
        began, left, counts = out.get()
        attackers.join()
        time.sleep(args.after)
        stop.set()
        for thread in threads:
            thread.join()
        evicted = _metric(port, 'msgsms_http_connections_dropped_total{reason="evicted"}')
        timeouts = _metric(port, 'msgsms_http_requests_rejected_total{reason="timeout"}')
        limit = _metric(port, "msgsms_http_connections_limit ")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    with closing(sqlite3.connect(workdir / "push.db")) as conn:
        stored = {row[0] for row in conn.execute("SELECT message_id FROM segments")}
    during = [s for at, s in scrapes.samples if began <= at < left]
    after = [s for at, s in scrapes.samples if left <= at < left + 1.0]
    pushes_during = [s for at, s in pushes.samples if began <= at < left]
    return {
        "nofile": nofile or resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "limit": limit,
        "held": max(held) if held else 0,
        "connects": counts["connected"],
        "scrapes": len(during),
        "scrape_failed": sum(1 for at in scrapes.failures if began <= at < left),
        "p50": _percentile(during, 0.5) * 1000,
        "p99": _percentile(during, 0.99) * 1000,
        "max": max(during, default=float("nan")) * 1000,
        "pushes": len(pushes_during),
        "push_failed": sum(1 for at in pushes.failures if began <= at < left),
        "push_p99": _percentile(pushes_during, 0.99) * 1000,
        "missing": len(set(pushes.acked) - stored),
        "after_max": max(after, default=float("nan")) * 1000,
        "after_failed": sum(1 for at in scrapes.failures if left <= at < left + 1.0),
        "evicted": evicted,
        "timeouts": timeouts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=3000)
    parser.add_argument("--hold", type=float, default=30.0, help="seconds the clients stay")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--after", type=float, default=3.0, help="seconds watched after")
    parser.add_argument("--push-rate", type=float, default=20.0, help="single pushes/s")
    parser.add_argument(
        "--nofile",
        type=int,
        action="append",
        help="file-descriptor limits to run under (default: 1024 and 16384)",
    )
    args = parser.parse_args(argv)
    limits = args.nofile or [1024, 16384]
    print(
        f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.clients} slow"
        f" clients (a header line every 4 s, reconnecting) for {args.hold:.0f} s;"
        f" /metrics every {SCRAPE_EVERY * 1000:.0f} ms, {args.push_rate:.0f} pushes/s"
    )
    print(
        f"{'ulimit -n':>9} {'cap':>5} {'held':>5} {'connects':>8} | {'scrapes':>7} {'failed':>6}"
        f" {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} | {'pushes':>6} {'failed':>6}"
        f" {'p99 ms':>7} {'lost':>4} | {'after: max ms':>13} {'failed':>6} |"
        f" {'evicted':>7} {'408s':>6}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n, nofile in enumerate(limits):
            r = run(nofile, args, Path(tmp) / f"run-{n}")
            print(
                f"{r['nofile']:>9} {r['limit']:>5.0f} {r['held']:>5.0f} {r['connects']:>8} |"
                f" {r['scrapes']:>7} {r['scrape_failed']:>6} {r['p50']:>7.1f} {r['p99']:>7.1f}"
                f" {r['max']:>7.1f} | {r['pushes']:>6} {r['push_failed']:>6} {r['push_p99']:>7.1f}"
                f" {r['missing']:>4} | {r['after_max']:>13.1f} {r['after_failed']:>6} |"
                f" {r['evicted']:>7.0f} {r['timeouts']:>6.0f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
