"""Push receiver throughput: single reports/s and batch posts/s, with ack latency.

Starts the real exporter (``python -m exporter``) with a push receiver and an SQLite
store in a temporary directory, then drives it from worker processes over keep-alive
HTTP connections, open loop at the offered rate (Poisson arrivals) (and closed loop with ``--max``). Every
acknowledged report must be in the store after the exporter stops (checked by id).

The same run measures the bare HTTP stack: ``bench/bare_server.py``, the same server
answering 200 without parsing or storing, closed loop, and prints the durable
receiver's maximum single-report rate as a ratio to it (machines of one kind differ twice
in absolute rates; the ratio does not).

PostgreSQL runs side by side (``--synchronous postgres``, in the default run): Debian's
server started for the run in a temporary directory, fsync and synchronous_commit on,
the exporter given ``receiver.store_url``.

    python bench/push_throughput.py                      # SQLite normal and PostgreSQL, ratio
    python bench/push_throughput.py --mode single --seconds 20 --synchronous full
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, closing
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from postgres_server import PostgresServer


def _free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _receiver(workdir: Path, synchronous: str, pg_url: str) -> str:
    if synchronous == "postgres":
        return f"receiver: {{store_url: '{pg_url}'}}\n"
    return f"receiver: {{store_path: {workdir / f'push-{synchronous}.db'}, synchronous: {synchronous}}}\n"


def _stored_ids(workdir: Path, synchronous: str, pg_url: str, mode: str) -> set[str]:
    if synchronous == "postgres":
        with psycopg.connect(pg_url) as pg:
            rows = pg.execute(
                "SELECT message_id FROM msgsms_segments WHERE message_id LIKE %s", (f"{mode}-%",)
            ).fetchall()
        return {row[0] for row in rows}
    with closing(sqlite3.connect(workdir / f"push-{synchronous}.db")) as conn:
        return {
            row[0]
            for row in conn.execute(
                "SELECT message_id FROM segments WHERE message_id LIKE ?", (f"{mode}-%",)
            )
        }


def wait_healthy(proc: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    """Wait until the exporter on ``port`` answers /-/healthy; kill it and exit otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/-/healthy")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("exporter did not start")


def _start_exporter(
    workdir: Path, synchronous: str, bare: bool = False, pg_url: str = ""
) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    config = workdir / f"config-{synchronous}.yaml"
    config.write_text(
        "poll_interval: 60s\n"
        "accounts: [{name: push, source: push, templates: {discover: true}}]\n"
        + _receiver(workdir, synchronous, pg_url),
        encoding="utf-8",
    )
    command = [
        *(sys.executable, "-m", "exporter", "--config.file", str(config)),
        *("--web.listen-address", f"127.0.0.1:{port}", "--log.level", "warning"),
        *("--web.shutdown-delay", "0s"),
    ]
    if bare:
        command = [
            sys.executable,
            str(Path(__file__).with_name("bare_server.py")),
            f"127.0.0.1:{port}",
        ]
    with (workdir / f"exporter-{synchronous}.log").open("ab") as log:
        proc = subprocess.Popen(stderr=log, args=command)
    wait_healthy(proc, port, timeout=30)
    return proc, port


# The receiver refuses implausible times: reports say they were updated a minute before
# the benchmark started.
UPDATED = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))


def _request(mode: str, mid: str) -> tuple[str, bytes, dict[str, str]]:
    if mode == "single":
        updated = UPDATED.replace(":", "%3A")
        body = f"smsMsgId={mid}&status=DELIVRD&total=1&sequence=1&updateTime={updated}"
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        return "/push/status-report", body.encode(), form
    items = [
        {"smsMsgId": f"{mid}-{i}", "status": "DELIVRD", "updateTime": UPDATED} for i in range(50)
    ]
    body_json = json.dumps({"statusReportList": items}).encode()
    return "/push/status-reports", body_json, {"Content-Type": "application/json"}


class _Client:
    """A lean keep-alive HTTP/1.1 client: one socket, requests pre-encoded, only the
    status line and Content-Length read back. The load generator shares this machine's
    cores with the exporter; ``http.client`` (headers parsed by the email package) cost
    the generator more CPU per post than the server spent answering it."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._sock: socket.socket | None = None
        self._buffer = b""

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        """The answer's status code; OSError when the connection failed."""
        if self._sock is None:
            self._sock = socket.create_connection(("127.0.0.1", self._port), timeout=10)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._buffer = b""
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: bench\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        while b"\r\n\r\n" not in self._buffer:
            self._receive()
        head_bytes, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        lines = head_bytes.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self._buffer) < length:
            self._receive()
        self._buffer = self._buffer[length:]
        return status

    def _receive(self) -> None:
        assert self._sock is not None
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        self._buffer += chunk

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _worker(
    port: int,
    mode: str,
    worker: int,
    threads: int,
    seconds: float,
    rate: float,
    start_at: float,
    out: mp.Queue,
) -> None:
    """Closed loop (rate 0) or open loop at ``rate`` posts/s per thread.

    Open loop sends at Poisson arrivals (exponential gaps, seeded per thread): what many
    independent senders add up to, with its random clumps, and not every thread firing
    at the same instant, which would offer all connections' posts as one burst. It
    measures from each post's scheduled time, so a stalled server is charged for the
    posts it delayed (no coordinated omission).
    """
    import random
    import threading

    latencies: list[float] = []
    acked: list[str] = []
    errors = 0
    lock = threading.Lock()

    def loop(thread: int) -> None:
        nonlocal errors
        path, body, headers = _request(mode, f"warmup-{mode}-{worker}-{thread}")
        conn = _Client(port)
        for _attempt in range(50):  # many connects at once can overflow the accept backlog
            try:
                conn.post(path, body, headers)
                break
            except OSError:
                conn.close()
                time.sleep(0.05)
        mine: list[float] = []
        ok: list[str] = []
        bad = 0
        n = 0
        gaps = random.Random(worker * 1000 + thread)
        time.sleep(max(0.0, start_at - time.time()))
        begin = time.perf_counter()
        end = begin + seconds
        scheduled = begin
        while True:
            if rate:
                scheduled += gaps.expovariate(rate)
            else:
                scheduled = time.perf_counter()
            if scheduled >= end:
                break
            time.sleep(max(0.0, scheduled - time.perf_counter()))
            n += 1
            mid = f"{mode}-{worker}-{thread}-{n}"
            path, body, headers = _request(mode, mid)
            try:
                status = conn.post(path, body, headers)
            except (OSError, ValueError):
                conn.close()
                status = 0
            mine.append(time.perf_counter() - scheduled)
            if status != 200:
                bad += 1
            else:
                ok.append(mid)
        conn.close()
        with lock:
            latencies.extend(mine)
            acked.extend(ok)
            errors += bad

    pool = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put((latencies, errors, acked))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(
    mode: str,
    synchronous: str,
    rate: float,
    args: argparse.Namespace,
    workdir: Path,
    bare: bool = False,
    pg_url: str = "",
) -> dict[str, object]:
    proc, port = _start_exporter(workdir, synchronous, bare, pg_url)
    per_thread = rate / (args.processes * args.threads)
    start_at = time.time() + 1.0
    try:
        out: mp.Queue = mp.Queue()
        procs = [
            mp.Process(
                target=_worker,
                args=(port, mode, w, args.threads, args.seconds, per_thread, start_at, out),
            )
            for w in range(args.processes)
        ]
        for p in procs:
            p.start()
        results = [out.get() for _ in procs]
        for p in procs:
            p.join()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    exporter_log = (workdir / f"exporter-{synchronous}.log").read_text(errors="replace")
    if "Traceback" in exporter_log:
        print(exporter_log[-3000:], file=sys.stderr)
    latencies = [x for lat, _, _ in results for x in lat]
    errors = sum(e for _, e, _ in results)
    per_post = 1 if mode == "single" else 50
    acked = {
        mid if mode == "single" else f"{mid}-{i}"
        for _, _, ids in results
        for mid in ids
        for i in range(per_post)
    }
    missing = len(acked)
    if not bare:
        missing = len(acked - _stored_ids(workdir, synchronous, pg_url, mode))
    return {
        "mode": mode,
        "synchronous": "bare" if bare else synchronous,
        "load": f"{rate:.0f}/s" if rate else "max",
        "posts_per_s": len(latencies) / args.seconds,
        "reports_per_s": len(latencies) * per_post / args.seconds,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies) * 1000,
        "non_200": errors,
        "missing": "-" if bare else missing,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("single", "batch", "both"), default="both")
    parser.add_argument(
        "--synchronous",
        choices=("normal", "full", "postgres", "both", "all"),
        default="default",
        help="SQLite's synchronous, or the PostgreSQL store; default: normal and postgres",
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max", action="store_true", help="also run closed loop (saturation)")
    parser.add_argument(
        "--no-ratio",
        dest="ratio",
        action="store_false",
        help="skip the bare HTTP stack and the ratio to it",
    )
    parser.add_argument("--processes", type=int, default=2, help="load-generator processes")
    parser.add_argument(
        "--threads",
        type=int,
        default=32,
        help="connections per process (a sender pushing many messages at once keeps many open)",
    )
    parser.add_argument(
        "--single-rate", type=float, default=2000.0, help="offered single posts/s (0: max only)"
    )
    parser.add_argument(
        "--batch-rate", type=float, default=100.0, help="offered batch posts/s (0: max only)"
    )
    args = parser.parse_args(argv)
    modes = ("single", "batch") if args.mode == "both" else (args.mode,)
    syncs = {
        "both": ("normal", "full"),
        "all": ("normal", "full", "postgres"),
        "default": ("normal", "postgres"),
    }.get(args.synchronous, (args.synchronous,))
    print(
        f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f},"
        f" {args.processes}x{args.threads} keep-alive connections,"
        f" {args.seconds:.0f} s per run, SQLite {sqlite3.sqlite_version} WAL,"
        " PostgreSQL (fsync on) as sync=postgres"
    )
    header = f"{'mode':<7} {'sync':<7} {'offered':>8} {'posts/s':>9} {'reports/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'non-200':>8} {'acked, not stored':>18}"
    print(header)
    max_rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        server = None
        if "postgres" in syncs:
            server = stack.enter_context(PostgresServer.running(fsync=True))
        plan: list[tuple[str, str, float, bool]] = []
        for synchronous in syncs:
            for mode in modes:
                offered = args.single_rate if mode == "single" else args.batch_rate
                if offered:
                    plan.append((mode, synchronous, offered, False))
                if args.max or (mode == "single" and synchronous == "normal" and args.ratio):
                    plan.append((mode, synchronous, 0.0, False))
        if args.ratio and "single" in modes:
            plan.append(("single", "normal", 0.0, True))
        for mode, synchronous, rate, bare in plan:
            pg_url = server.fresh_schema() if server and synchronous == "postgres" else ""
            r = run(mode, synchronous, rate, args, Path(tmp), bare, pg_url)
            if rate == 0.0 and mode == "single":
                max_rates[str(r["synchronous"])] = float(r["reports_per_s"])  # type: ignore[arg-type]
            print(
                f"{r['mode']:<7} {r['synchronous']:<7} {r['load']:>8} {r['posts_per_s']:>9.0f} {r['reports_per_s']:>10.0f}"
                f" {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['max_ms']:>7.1f} {r['non_200']:>8} {r['missing']!s:>18}",
                flush=True,
            )
    if "bare" in max_rates and "normal" in max_rates:
        print(
            f"durable single reports at most {max_rates['normal']:.0f}/s, the bare HTTP stack"
            f" {max_rates['bare']:.0f}/s: ratio {max_rates['normal'] / max_rates['bare']:.2f}"
            " (target >= 0.5)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
