"""The exporter's HTTP server answering 200 to every push without parsing or storing it.

The denominator of ``push_throughput.py``'s ratio: the same server (event loop, parser,
push routes started on the loop and answered through their reply) with routes that
answer at once, so the ratio shows what parsing, validating and durably storing a
report costs on this machine.

    python bench/bare_server.py 127.0.0.1:9999
"""

from __future__ import annotations

import signal
import sys
import threading

from exporter.web import Reply, Request, Response, Router, WebServer, parse_listen_address, text

_OK = Response(200, b"", "text/plain")


def _ok(_request: Request, reply: Reply) -> None:
    reply(_OK)


def main(argv: list[str]) -> int:
    host, port = parse_listen_address(argv[0])
    router = Router()
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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
