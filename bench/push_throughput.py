"""Push receiver throughput: single reports/s and batch posts/s, with ack latency.

Starts the real exporter (``python -m exporter``) with a push receiver and an SQLite
store in a temporary directory, then drives it from worker processes, each with a pool
of keep-alive HTTP connections: open loop at the offered rate (Poisson arrivals, each
post sent on an idle connection of the pool), and closed loop with ``--max``. Every
acknowledged report must be in the store after the exporter stops (checked by id).

The same run measures the bare HTTP stack: ``bench/bare_server.py``, the same server
answering 200 without parsing or storing, closed loop, and prints the durable
receiver's maximum single-report rate as a ratio to it (machines of one kind differ twice
in absolute rates; the ratio does not). It also measures the receiver without its store
(``bare_server.py --receiver``: the real routes, parsing and group commit over a store
that writes nothing), which splits the gap into the receiver's own work and SQLite's; and the leanest durable
receiver the stack allows (``bare_server.py --floor``: this receiver's validation, one
row a report, one commit a loop turn, nothing else), the most any pure-Python receiver
on this stack can reach.

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


def _stored_ids(workdir: Path, synchronous: str, pg_url: str, mode: str, db: str = "") -> set[str]:
    if synchronous == "postgres":
        with psycopg.connect(pg_url) as pg:
            rows = pg.execute(
                "SELECT message_id FROM msgsms_segments WHERE message_id LIKE %s", (f"{mode}-%",)
            ).fetchall()
        return {row[0] for row in rows}
    with closing(sqlite3.connect(workdir / (db or f"push-{synchronous}.db"))) as conn:
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
    workdir: Path, synchronous: str, server: str = "exporter", pg_url: str = ""
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
    if server != "exporter":
        command = [
            sys.executable,
            str(Path(__file__).with_name("bare_server.py")),
            f"127.0.0.1:{port}",
        ]
        if server == "receiver":
            command += ["--receiver", str(workdir / "merge-only.db")]
        if server == "floor":
            command += ["--floor", str(workdir / "floor.db")]
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


def _encode(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    start = f"POST {path} HTTP/1.1\r\nHost: bench\r\n{head}Content-Length: {len(body)}\r\n\r\n"
    return start.encode() + body


def _status_and_length(head: bytes) -> tuple[int, int]:
    """An answer's status code and Content-Length, from its head."""
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return int(lines[0].split(b" ", 2)[1]), length


class _Client:
    """A lean blocking keep-alive HTTP/1.1 client (a connection's warm-up post): one
    socket, only the status line and Content-Length read back. ``http.client`` parses
    headers with the email package, which cost more CPU than the server's answer."""

    def __init__(self, port: int) -> None:
        self._port = port
        self.sock: socket.socket | None = None
        self._buffer = b""

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        """The answer's status code; OSError when the connection failed."""
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self._port), timeout=10)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._buffer = b""
        self.sock.sendall(_encode(path, body, headers))
        while b"\r\n\r\n" not in self._buffer:
            self._receive()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        status, length = _status_and_length(head)
        while len(self._buffer) < length:
            self._receive()
        self._buffer = self._buffer[length:]
        return status

    def _receive(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        self._buffer += chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _worker(
    port: int,
    mode: str,
    worker: int,
    connections: int,
    seconds: float,
    rate: float,
    start_at: float,
    out: mp.Queue,
) -> None:
    """Closed loop (rate 0) or open loop at ``rate`` posts/s from this process.

    Open loop: posts arrive as a Poisson process (exponential gaps, seeded per process),
    what many independent senders add up to, with its random clumps. Each goes out at
    once on an idle connection of the process's keep-alive pool, as a sender's HTTP
    client pool sends it; when all of them wait for answers it queues for the first one
    free. Latency is measured from the post's scheduled time, so a stalled server is
    charged for every post it delayed (no coordinated omission). Closed loop: each
    connection sends its next post as soon as the last one is answered.

    One thread drives the pool with ``selectors``. A thread per connection cost the
    generator more CPU than the server, and with each connection serial, a post that
    came while its own connection waited was charged for its neighbour's answer too.
    """
    import random
    import selectors

    pool = [_Connection(port, mode, worker, index) for index in range(connections)]
    for conn in pool:
        conn.warm_up()
    selector = selectors.DefaultSelector()
    for conn in pool:
        selector.register(conn.sock, selectors.EVENT_READ, conn)
    idle = list(pool)
    arrivals: list[float] = []
    time.sleep(max(0.0, start_at - time.time()))
    begin = time.perf_counter()
    end = begin + seconds
    if rate:
        gaps = random.Random(worker)
        at = begin + gaps.expovariate(rate)
        while at < end:
            arrivals.append(at)
            at += gaps.expovariate(rate)
        arrivals.reverse()  # popped from the end, earliest first
    while True:
        now = time.perf_counter()
        if rate:
            while idle and arrivals and arrivals[-1] <= now:
                idle.pop().send(arrivals.pop())
        elif now < end:
            while idle:
                idle.pop().send(now)
        for conn in pool:
            if conn.broken and conn.sock.fileno() >= 0:  # it leaves the pool
                selector.unregister(conn.sock)
                conn.sock.close()
        if all(c.broken for c in pool):
            unsent = len(arrivals)  # refused: no connection is left to send them on
            break
        if not any(c.in_flight for c in pool) and (not rate or not arrivals):
            unsent = 0
            break
        timeout = None
        if rate and idle and arrivals:
            timeout = max(0.0, arrivals[-1] - now)
        for key, _ in selector.select(timeout):
            conn = key.data
            if conn.receive(time.perf_counter()):
                idle.append(conn)
            elif conn.broken and conn in idle:  # the server closed it between posts
                idle.remove(conn)
    for conn in pool:
        conn.sock.close()
    latencies = [x for c in pool for x in c.latencies]
    acked = [x for c in pool for x in c.acked]
    out.put((latencies, unsent + sum(c.errors for c in pool), acked))


class _Connection:
    """One keep-alive connection of the generator's pool, and its post in flight."""

    def __init__(self, port: int, mode: str, worker: int, index: int) -> None:
        self._mode = mode
        self._prefix = f"{mode}-{worker}-{index}"
        self._client = _Client(port)
        self.sock: socket.socket  # the warm-up post's connection, kept
        self.latencies: list[float] = []
        self.acked: list[str] = []
        self.errors = 0
        self.broken = False
        self._in_flight: tuple[float, str] | None = None
        self._n = 0
        self._buffer = b""

    def warm_up(self) -> None:
        """Connect and post once (many connects at once can overflow the accept backlog)."""
        path, body, headers = _request(self._mode, f"warmup-{self._prefix}")
        for _attempt in range(50):
            try:
                self._client.post(path, body, headers)
                break
            except OSError:
                self._client.close()
                time.sleep(0.05)
        assert self._client.sock is not None, "could not connect"
        self.sock = self._client.sock

    def send(self, scheduled: float) -> None:
        """Post the next report (the socket's buffer takes a post whole)."""
        self._n += 1
        mid = f"{self._prefix}-{self._n}"
        path, body, headers = _request(self._mode, mid)
        self._in_flight = (scheduled, mid)
        try:
            self.sock.sendall(_encode(path, body, headers))
        except OSError:
            self.broken = True
            self._finish(time.perf_counter(), ok=False)

    @property
    def in_flight(self) -> bool:
        """True while a post waits for its answer."""
        return self._in_flight is not None

    def receive(self, now: float) -> bool:
        """Read what came; True once the answer in flight is complete."""
        try:
            chunk = self.sock.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            self.broken = True
            if self._in_flight is not None:
                self._finish(now, ok=False)
            return False
        self._buffer += chunk
        head, found, rest = self._buffer.partition(b"\r\n\r\n")
        if not found:
            return False
        status, length = _status_and_length(head)
        if len(rest) < length:
            return False
        self._buffer = rest[length:]
        self._finish(now, ok=status == 200)
        return True

    def _finish(self, now: float, *, ok: bool) -> None:
        assert self._in_flight is not None
        scheduled, mid = self._in_flight
        self._in_flight = None
        self.latencies.append(now - scheduled)
        if ok:
            self.acked.append(mid)
        else:
            self.errors += 1


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(
    mode: str,
    synchronous: str,
    rate: float,
    args: argparse.Namespace,
    workdir: Path,
    server: str = "exporter",
    pg_url: str = "",
) -> dict[str, object]:
    """One row: ``server`` is the exporter, the bare stack or the receiver without store."""
    proc, port = _start_exporter(workdir, synchronous, server, pg_url)
    per_process = rate / args.processes
    start_at = time.time() + 1.0
    try:
        out: mp.Queue = mp.Queue()
        procs = [
            mp.Process(
                target=_worker,
                args=(port, mode, w, args.connections, args.seconds, per_process, start_at, out),
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
    missing: int | str = "-"
    if server == "exporter":
        missing = len(acked - _stored_ids(workdir, synchronous, pg_url, mode))
    elif server == "floor":
        missing = len(acked - _stored_ids(workdir, synchronous, pg_url, mode, "floor.db"))
    return {
        "mode": mode,
        "synchronous": {"bare": "bare", "receiver": "nostore", "floor": "floor"}.get(
            server, synchronous
        ),
        "load": f"{rate:.0f}/s" if rate else "max",
        "posts_per_s": len(latencies) / args.seconds,
        "reports_per_s": len(latencies) * per_post / args.seconds,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies) * 1000,
        "non_200": errors,
        "missing": missing,
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
        "--connections",
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
        f" {args.processes}x{args.connections} keep-alive connections,"
        f" {args.seconds:.0f} s per run, SQLite {sqlite3.sqlite_version} WAL,"
        " PostgreSQL (fsync on) as sync=postgres, os.sync() before each run"
    )
    header = f"{'mode':<7} {'sync':<7} {'offered':>8} {'posts/s':>9} {'reports/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'non-200':>8} {'acked, not stored':>18}"
    print(header)
    max_rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        server = None
        if "postgres" in syncs:
            server = stack.enter_context(PostgresServer.running(fsync=True))
        plan: list[tuple[str, str, float, str]] = []
        for synchronous in syncs:
            for mode in modes:
                offered = args.single_rate if mode == "single" else args.batch_rate
                if offered:
                    plan.append((mode, synchronous, offered, "exporter"))
                if args.max or (mode == "single" and synchronous == "normal" and args.ratio):
                    plan.append((mode, synchronous, 0.0, "exporter"))
        if args.ratio and "single" in modes:
            plan.append(("single", "normal", 0.0, "receiver"))
            plan.append(("single", "normal", 0.0, "floor"))
            plan.append(("single", "normal", 0.0, "bare"))
        for mode, synchronous, rate, kind in plan:
            pg_url = server.fresh_schema() if server and synchronous == "postgres" else ""
            # The last run's dirty pages (an SQLite store is hundreds of MB) are written
            # now, not by the kernel's writeback in the middle of the next run's fsyncs.
            os.sync()
            r = run(mode, synchronous, rate, args, Path(tmp), kind, pg_url)
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
    if "bare" in max_rates and "nostore" in max_rates:
        print(
            f"the receiver without its store at most {max_rates['nostore']:.0f}/s:"
            f" ratio {max_rates['nostore'] / max_rates['bare']:.2f} to the bare stack"
            " (the ceiling of any store behind this receiver)"
        )
    if "bare" in max_rates and "floor" in max_rates:
        print(
            f"the leanest durable receiver (this receiver's validation, one row, one commit"
            f" a loop turn) at most {max_rates['floor']:.0f}/s:"
            f" ratio {max_rates['floor'] / max_rates['bare']:.2f} to the bare stack"
            " (what is left for counting, duplicates and attribution in Python)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
