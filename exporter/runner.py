"""One account's runner: its poller, its details source (and HTTP client), its poll thread.

The exporter keeps one runner per configured account. A reload that keeps the account
keeps its runner (and so its engine state), handing the poller a new configuration and
source under the runner's lock, which also serialises polls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from exporter.client import DetailsClient
from exporter.fetch import DetailsSource
from exporter.poller import Poller
from exporter.snapshot import AccountSnapshot


@dataclass(slots=True)
class AccountRunner:
    """One account's poller, its upstream client and its poll thread."""

    poller: Poller
    source: DetailsSource
    publish: Callable[[AccountSnapshot], None]
    client: DetailsClient | None = None
    http: httpx.Client | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        """The account's name."""
        return self.poller.account.name

    def poll(self) -> bool:
        """One poll, published; True when it succeeded."""
        with self.lock:
            if self.stop.is_set():  # removed by a reload while waiting: its client is closed
                return False
            snapshot = self.poller.poll()
        if not self.stop.is_set():
            self.publish(snapshot)
        return snapshot.up

    def start(self, exporter_stop: threading.Event) -> None:
        """Poll every interval in a thread of its own until this runner or the exporter stops."""
        self.thread = threading.Thread(
            target=self._run, args=(exporter_stop,), name=f"poller-{self.name}", daemon=True
        )
        self.thread.start()

    def _run(self, exporter_stop: threading.Event) -> None:
        while not (exporter_stop.is_set() or self.stop.is_set()):
            began = time.monotonic()
            self.poll()
            interval = self.poller.config.poll_interval
            self.stop.wait(max(0.0, interval - (time.monotonic() - began)))

    def halt(self, timeout: float) -> None:
        """Stop polling, wait up to ``timeout`` for a poll in flight, close the client."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout)
        if self.http is not None:
            self.http.close()
