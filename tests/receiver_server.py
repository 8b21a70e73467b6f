"""The push receiver served on a free loopback port, over a store the test owns.

with serving_receiver(ReceiverConfig(store_path=store.path), store) as (server, receiver):
    port = server.address[1]
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from exporter.config import ReceiverConfig
from exporter.pushstore import ReportStore
from exporter.receiver import Receiver
from exporter.web import Router, WebServer


@contextmanager
def serving_receiver(
    config: ReceiverConfig, store: ReportStore
) -> Iterator[tuple[WebServer, Receiver]]:
    """The receiver's routes alone, its push paths open (no web auth), while the block runs."""
    receiver = Receiver(config, store)
    router = Router()
    receiver.add_routes(router)
    server = WebServer(router, "127.0.0.1", 0, open_paths=receiver.push_paths())
    server.start()
    try:
        yield server, receiver
    finally:
        server.stop()
