"""The exporter's HTTP server answering pushes without storing them: two denominators.

``push_throughput.py`` divides the durable receiver's maximum by what these serve:

- bare (the default): the same server (event loop, parser, push routes started on the
  loop and answered through their reply) with routes that answer 200 at once, so the
  ratio shows what parsing, validating and durably storing a report costs;
- ``--receiver``: the real receiver (signature gate, parsing, validation, attribution,
  counters, the group commit's writer thread and its callbacks) over a store that merges
  each group in memory and writes nothing, so the remaining gap is SQLite's.

    python bench/bare_server.py 127.0.0.1:9999
    python bench/bare_server.py 127.0.0.1:9999 --receiver /tmp/unused.db
"""

from __future__ import annotations

import signal
import sys
import threading

from exporter.config import ReceiverConfig
from exporter.pushmerge import merge_writes
from exporter.pushstore import WriteJob
from exporter.receiver import Receiver
from exporter.sqlitestore import PushStore
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


def main(argv: list[str]) -> int:
    host, port = parse_listen_address(argv[0])
    router = Router()
    store: PushStore | None = None
    if argv[1:2] == ["--receiver"]:
        store = MergeOnlyStore(argv[2])
        Receiver(ReceiverConfig(store_path=store.path), store).add_routes(router)
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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
