"""The push stores side by side, SQLite and PostgreSQL, at 1M messages an hour.

For each store, in one run:

1. One hour of history (1M messages at the default rate, every one reported) is loaded
   straight into the store's tables, as rows cloned from messages written through the
   store's own write path (sending 1M through the receiver would take most of an hour).
2. The exporter's own poller reads the store, as the push source does, until its window
   is complete: what a replica started at 1M/h pays once ("first polls").
3. Live minutes: each simulated minute's registrations and reports (5-60 s later, 2 %
   failed, 3 % 20 minutes late) go through the store's write path, then one poll.
4. Two more hours of older history are loaded (outside the window: the store triples),
   and the same live minutes again. A poll that re-scanned the store would cost three
   times as much; one that reads what changed costs the same: the ratio is printed.
5. The store size per million messages, and the time to prune an hour after the
   retention. Every poll's window is checked against what was written.

PostgreSQL is Debian's, started for the run in a temporary directory with fsync on (as in
production; its loaded history vacuumed and analyzed, as autovacuum would have); SQLite
runs with synchronous=normal.

    python bench/push_store.py                      # 1,000,000 messages/hour, both stores
    python bench/push_store.py --rate 200000        # quicker
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from postgres_server import PostgresServer  # noqa: E402

from exporter.config import AccountConfig, AccountSource, Config, TemplateSelection  # noqa: E402
from exporter.pgstore import PostgresStore  # noqa: E402
from exporter.poller import Poller  # noqa: E402
from exporter.pushstore import ReportStore, SendRegistration, StatusReport  # noqa: E402
from exporter.snapshot import AccountSnapshot  # noqa: E402
from exporter.sqlitestore import PushStore  # noqa: E402
from exporter.timestamps import parse_rfc3339  # noqa: E402

START = parse_rfc3339("2026-11-26T10:00:00Z")
HOUR = 3600.0
OLDER = START - HOUR - 600
"""Where the older history ends: ten minutes before the first window's start (an hour and
the settle delay before START). Rows loaded straight into the tables carry the receive
times of their reports, in the past; minutes a poll has already read must not gain such
rows, or the poller rightly keeps what it read (a store only ever receives rows now)."""
CHUNK = 5000
BUDGET = 20_000


MOBILE = "4402000000"
TEMPLATES = [f"TPL_{i:02d}" for i in range(20)]


class Traffic:
    """Messages sent each minute, their reports, and what a window must then hold."""

    def __init__(self, rate: float, seed: int = 7) -> None:
        self.per_minute = round(rate / 60)
        self.random = random.Random(seed)
        self.due: list[tuple[float, StatusReport]] = []
        self.sent: Counter[int] = Counter()
        self.sending: Counter[int] = Counter()
        """Registered, no report written yet, by send minute."""
        self._minute: dict[str, int] = {}
        self._count = 0

    def _message(self, at: float) -> tuple[str, str, str, float]:
        """A new message sent at ``at``: id, template, final status, report time."""
        mid = f"{self._count:09d}-{self.random.getrandbits(32):08x}"
        self._count += 1
        self.sent[int(at // 60)] += 1
        late = self.random.random() < 0.03
        delay = 1200 + self.random.random() * 600 if late else 5 + self.random.random() * 55
        status = "UNDELIV" if self.random.random() < 0.02 else "DELIVRD"
        return mid, self.random.choice(TEMPLATES), status, at + delay

    def history(self, start: float, end: float) -> Iterator[tuple[str, str, float, str, float]]:
        """Messages sent in [start, end), already reported: id, template, sent, status, at."""
        for minute in range(int(start // 60), int(end // 60)):
            for i in range(self.per_minute):
                at = minute * 60 + 60 * i / self.per_minute
                mid, template, status, reported = self._message(at)
                yield mid, template, at, status, reported

    def minute(self, start: float) -> list[SendRegistration]:
        """The registrations of the minute from ``start``; their reports come due later."""
        sends = []
        for i in range(self.per_minute):
            at = start + 60 * i / self.per_minute
            mid, template, status, reported = self._message(at)
            sends.append(SendRegistration(mid, template, at, MOBILE))
            self.due.append((reported, StatusReport(mid, status, update_time=reported)))
            self._minute[mid] = int(at // 60)
            self.sending[int(at // 60)] += 1
        return sends

    def reports_until(self, now: float) -> list[StatusReport]:
        ready = [r for t, r in self.due if t <= now]
        self.due = [(t, r) for t, r in self.due if t > now]
        for report in ready:
            self.sending[self._minute.pop(report.message_id)] -= 1
        return ready

    def truth(self, start: float, end: float) -> dict[str, int]:
        """Messages sent in [start, end) (whole minutes), and those without a report."""
        minutes = range(int(start // 60), int(end // 60))
        return {
            "sent": sum(self.sent[m] for m in minutes),
            "sending": sum(self.sending[m] for m in minutes),
        }


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class Loader:
    """Bulk rows for one store, cloned from a delivered and a failed message it wrote."""

    def __init__(self, store: ReportStore, connect: Callable[[], Any], prefix: str) -> None:
        self.connect, self.prefix = connect, prefix
        at = START - 6 * HOUR  # outside every window; deleted once cloned
        store.register([SendRegistration(f"shape-{t}", t, at, MOBILE) for t in TEMPLATES])
        shapes = {"DELIVRD": f"shape-{TEMPLATES[0]}", "UNDELIV": f"shape-{TEMPLATES[1]}"}
        store.add_reports([StatusReport(m, s, update_time=at + 10) for s, m in shapes.items()])
        self.shapes: dict[str, dict[str, dict[str, Any]]] = {}
        with closing(connect()) as conn:
            for status, mid in shapes.items():
                self.shapes[status] = {
                    table: self._row(conn, table, mid) for table in ("messages", "segments")
                }
            for table in ("segments", "messages"):  # the templates stay registered
                conn.execute(f"DELETE FROM {prefix}{table} WHERE message_id LIKE 'shape-%'")
            conn.commit()

    def _row(self, conn: Any, table: str, message_id: str) -> dict[str, Any]:
        mark = "?" if isinstance(conn, sqlite3.Connection) else "%s"
        sql = f"SELECT * FROM {self.prefix}{table} WHERE message_id = {mark}"
        cursor = conn.execute(sql, (message_id,))
        names = [d[0] for d in cursor.description]
        return dict(zip(names, cursor.fetchone(), strict=True))

    def load(self, traffic: Traffic, start: float, end: float) -> int:
        """Messages sent in [start, end), all reported, inserted in send-time order."""
        rows: dict[str, list[tuple[Any, ...]]] = {"messages": [], "segments": []}
        for mid, template, sent, status, reported in traffic.history(start, end):
            shape = self.shapes[status]
            ms, report_ms = round(sent * 1000), round(reported * 1000)
            message = {**shape["messages"], "message_id": mid, "template_id": template}
            message.update(send_ms=ms, receive_ms=report_ms)
            segment = {**shape["segments"], "message_id": mid, "update_ms": report_ms}
            segment["received_ms"] = report_ms + 1000
            rows["messages"].append(tuple(message.values()))
            rows["segments"].append(tuple(segment.values()))
        with closing(self.connect()) as conn:
            for table, values in rows.items():
                self._insert(conn, table, list(self.shapes["DELIVRD"][table]), values)
            conn.commit()
            if not isinstance(conn, sqlite3.Connection):
                conn.autocommit = True
                for table in rows:
                    conn.execute(f"VACUUM ANALYZE {self.prefix}{table}")
        return len(rows["messages"])

    def _insert(
        self, conn: Any, table: str, columns: list[str], rows: list[tuple[Any, ...]]
    ) -> None:
        names = ", ".join(columns)
        if isinstance(conn, sqlite3.Connection):
            marks = ", ".join("?" * len(columns))
            conn.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
            return
        with conn.cursor().copy(f"COPY {self.prefix}{table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def _chunks(items: list[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Run:
    """One store: its clock, traffic, poller, and what each poll cost."""

    def __init__(self, store: ReportStore, clock: Clock, traffic: Traffic) -> None:
        self.store, self.clock, self.traffic = store, clock, traffic
        account = AccountConfig(
            name="push",
            endpoint="",
            project_id="",
            templates=TemplateSelection(discover=True),
            source=AccountSource.PUSH,
        )
        # The default request_budget (2,000 a poll) cannot read a 15-minute chunk at 1M/h
        # (2,500 pages): the window would never complete. A local store is not Huawei's
        # rate-limited API; the push account's budget is raised (see README).
        config = Config(accounts=(account,), top_status_codes=100, request_budget=BUDGET)
        self.poller = Poller(account, config, store, clock=clock)
        self.fetched = 0
        self.checked = self.polls = 0
        """Polls whose complete window was checked against what was written."""

    def poll(self) -> tuple[float, int, int, AccountSnapshot]:
        """One poll: seconds, queries, records read; and the window checked."""
        before = self.store.stats.request_count
        started = time.perf_counter()
        self.polls += 1
        snap = self.poller.poll()
        elapsed = time.perf_counter() - started
        records, self.fetched = snap.records_fetched - self.fetched, snap.records_fetched
        window = snap.windows[0]
        if window.complete:
            got = Counter({"sent": 0, "sending": 0})
            for t in window.templates:
                got.update(sent=t.total, sending=t.sending)
            want = self.traffic.truth(window.start, window.end)
            assert dict(got) == want, f"window {dict(got)} != written {want}"
            self.checked += 1
        return elapsed, self.store.stats.request_count - before, records, snap

    def first_polls(self) -> tuple[float, int, int]:
        """Poll (the clock still) until the window is complete: seconds, polls, queries."""
        seconds, queries, polls = 0.0, 0, 0
        while True:
            elapsed, asked, _, snap = self.poll()
            seconds, queries, polls = seconds + elapsed, queries + asked, polls + 1
            if snap.windows[0].complete:
                return seconds, polls, queries

    def live(self, minutes: int) -> list[tuple[float, int, int]]:
        """Each minute's writes through the store's write path, then a poll."""
        out = []
        for _ in range(minutes):
            for chunk in _chunks(self.traffic.minute(self.clock.now)):
                self.store.register(chunk)
            for chunk in _chunks(self.traffic.reports_until(self.clock.now + 60)):
                self.store.add_reports(chunk)
            self.clock.now += 60
            elapsed, queries, records, _ = self.poll()
            out.append((elapsed, queries, records))
        return out


def run_store(
    name: str, opener: Callable[[Clock], tuple[ReportStore, Loader]], rate: float, minutes: int
) -> dict[str, str]:
    clock, traffic = Clock(), Traffic(rate)
    store, loader = opener(clock)
    with closing(store):
        started = time.perf_counter()
        loaded = loader.load(traffic, START - HOUR, START)
        load_1h = time.perf_counter() - started
        _progress(name, f"1 h loaded in {load_1h:.0f} s")
        run = Run(store, clock, traffic)
        first_s, first_polls, first_queries = run.first_polls()
        _progress(name, f"window complete after {first_polls} polls, {first_s:.0f} s")
        hour1 = run.live(minutes)
        stored1 = store.message_count()
        _progress(name, "live minutes with 1 h stored done")
        loaded += loader.load(traffic, OLDER - 2 * HOUR, OLDER)
        _progress(name, "2 older hours loaded")
        hour3 = run.live(minutes)
        _progress(name, "live minutes with 3 h stored done")
        stored3 = store.message_count()
        store.prune()  # measure the size as the store does, after its minute's pruning
        size = store.size_bytes
        # The oldest hour passes the retention: one pruning deletes it.
        clock.now = OLDER - HOUR + store_retention(store) + 1
        pruned_before = store.pruned
        started = time.perf_counter()
        store.prune()
        prune_seconds = time.perf_counter() - started
        pruned = store.pruned - pruned_before
    t1, t3 = (statistics.fmean(e for e, _, _ in polls) for polls in (hour1, hour3))
    q1, q3 = (statistics.fmean(q for _, q, _ in polls) for polls in (hour1, hour3))
    r1, r3 = (statistics.fmean(r for _, _, r in polls) for polls in (hour1, hour3))
    return {
        "store": name,
        "history loaded (1 h, then 2 h older)": f"{loaded:,} ({load_1h:.0f} s for 1 h)",
        "first polls, whole window: s / polls / queries": (
            f"{first_s:.0f} / {first_polls} / {first_queries:,}"
        ),
        "messages stored: live hour 1 / hour 3": f"{stored1:,} / {stored3:,}",
        "poll ms, hour 1 / hour 3 stored": f"{1000 * t1:.0f} / {1000 * t3:.0f}",
        "poll queries, hour 1 / hour 3": f"{q1:.0f} / {q3:.0f}",
        "poll records read, hour 1 / hour 3": f"{r1:,.0f} / {r3:,.0f}",
        "store size ratio hour 3 / hour 1": f"{stored3 / stored1:.2f}x",
        "poll time ratio hour 3 / hour 1": f"{t3 / t1:.2f}x",
        "store size per 1M messages": f"{size / stored3 * 1_000_000 / 2**20:,.0f} MiB",
        "prune 1 h of messages": f"{pruned:,} in {prune_seconds:.1f} s",
        "polls whose window equals the writes": f"{run.checked} of {run.polls}",
    }


def _progress(store: str, what: str) -> None:
    print(f"# {store}: {what}", file=sys.stderr, flush=True)


def store_retention(store: ReportStore) -> float:
    retention: float = store.retention  # type: ignore[attr-defined]
    return retention


@contextmanager
def stores() -> Iterator[list[tuple[str, Callable[[Clock], tuple[ReportStore, Loader]]]]]:
    with tempfile.TemporaryDirectory() as tmp, PostgresServer.running(fsync=True) as server:
        path, url = Path(tmp) / "push.db", server.fresh_schema()

        def sqlite(clock: Clock) -> tuple[ReportStore, Loader]:
            store = PushStore(path, clock=clock)
            return store, Loader(store, lambda: sqlite3.connect(path, timeout=60), "")

        def postgres(clock: Clock) -> tuple[ReportStore, Loader]:
            store = PostgresStore(url, clock=clock)
            return store, Loader(store, lambda: psycopg.connect(url), "msgsms_")

        yield [("SQLite (WAL, normal)", sqlite), ("PostgreSQL 15 (fsync on)", postgres)]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1_000_000, help="messages per hour")
    parser.add_argument("--minutes", type=int, default=3, help="live minutes per phase")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(
        f"# {os.cpu_count()} CPUs (shared), {args.rate:,.0f} messages/hour, "
        f"{args.minutes} live minutes with 1 h and with 3 h stored, a poll every minute"
    )
    results = []
    with stores() as chosen:
        for name, opener in chosen:
            results.append(run_store(name, opener, args.rate, args.minutes))
            print(f"# {name} done", flush=True)
    width = max(len(k) for k in results[0])
    print(f"{'':<{width}}  " + "  ".join(f"{r['store']:>26}" for r in results))
    for key in results[0]:
        if key != "store":
            print(f"{key:<{width}}  " + "  ".join(f"{r[key]:>26}" for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
