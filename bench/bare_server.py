"""The exporter's HTTP server answering pushes without storing them: two denominators.

``push_throughput.py`` divides the durable receiver's maximum by what these serve:

- bare (the default): the same server (event loop, parser, push routes started on the
  loop and answered through their reply) with routes that answer 200 at once, so the
  ratio shows what parsing, validating and durably storing a report costs;
- ``--receiver``: the real receiver (signature gate, parsing, validation, attribution,
  counters, the group commit's writer thread and its callbacks) over a store that merges
  each group in memory and writes nothing, so the remaining gap is SQLite's;
- ``--floor``: the leanest durable receiver this stack allows, a bound rather than a
  design: the receiver's own form parser and validation (what a report must pass before
  it is acknowledged), one row a report in one SQLite table (WAL, ``synchronous=NORMAL``,
  the store's own checkpoint thread), one commit a turn of the event loop, on the loop
  (no thread to hand over to), and the answers after it. It has none of the receiver's
  other work: no signature, no counters, no duplicate or precedence rules (a later
  report overwrites), no attribution, no template limit. Whatever the real receiver does
  on top only costs more, so this row's ratio to the bare stack is the most a
  pure-Python receiver on this HTTP stack can reach.

    python bench/bare_server.py 127.0.0.1:9999
    python bench/bare_server.py 127.0.0.1:9999 --receiver /tmp/unused.db
    python bench/bare_server.py 127.0.0.1:9999 --floor /tmp/floor.db
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import threading
import time

from exporter.config import ReceiverConfig
from exporter.errors import PushRejected
from exporter.pushmerge import merge_writes
from exporter.pushparse import parse_single
from exporter.pushstore import WriteJob
from exporter.receiver import Receiver
from exporter.sqlitestore import PushStore
from exporter.sqlitewriter import Checkpointer
from exporter.web import Reply, Request, Response, Router, WebServer, parse_listen_address, text

_OK = Response(200, b"", "text/plain")


def _ok(_request: Request, reply: Reply) -> None:
    reply(_OK)


class MergeOnlyStore(PushStore):
    """The SQLite store's writer thread and group commit, minus SQL: each group is merged
    as if none of its messages were stored yet (the benchmark's ids are all new)."""

    def _commit_group(self, jobs: list[WriteJob]) -> None:
        merged = merge_writes(jobs, {}, {}, round(self._clock() * 1000))
        for job, result in zip(jobs, merged.results, strict=True):
            job.result = result
        self.commits += 1


class FloorStore:
    """The floor's route and its store: validate, queue the row, commit once a loop turn."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS segments (message_id TEXT PRIMARY KEY,"
            " status TEXT NOT NULL, update_time REAL)"
        )
        self.checkpoints = Checkpointer(path, "normal")
        self._rows: list[tuple[str, str, float | None]] = []
        self._replies: list[Reply] = []

    def route(self, request: Request, reply: Reply) -> None:
        try:
            report = parse_single(request.body, time.time())
        except PushRejected as exc:
            reply(Response(400, str(exc).encode(), "text/plain"))
            return
        if not self._rows:
            asyncio.get_running_loop().call_soon(self._commit)
        self._rows.append((report.message_id, report.status, report.update_time))
        self._replies.append(reply)

    def _commit(self) -> None:
        rows, replies = self._rows, self._replies
        self._rows, self._replies = [], []
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO segments VALUES (?, ?, ?)", rows)
        self._db.execute("COMMIT")
        self.checkpoints.wrote()
        for reply in replies:
            reply(_OK)

    def close(self) -> None:
        self.checkpoints.close()
        self._db.close()


def main(argv: list[str]) -> int:
    host, port = parse_listen_address(argv[0])
    router = Router()
    store: PushStore | None = None
    floor: FloorStore | None = None
    if argv[1:2] == ["--receiver"]:
        store = MergeOnlyStore(argv[2])
        Receiver(ReceiverConfig(store_path=store.path), store).add_routes(router)
    elif argv[1:2] == ["--floor"]:
        floor = FloorStore(argv[2])
        router.add_deferred("/push/status-report", floor.route, methods=("POST",))
    else:
        for path in ("/push/status-report", "/push/status-reports"):
            router.add_deferred(path, _ok, methods=("POST",))
    router.add("/-/healthy", lambda _r: text(200, "OK"))
    server = WebServer(router, host, port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    while not stop.wait(0.05):
        pass
    server.stop()
    if store is not None:
        store.close()
    if floor is not None:
        floor.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
