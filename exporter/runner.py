"""One account's runner: its poller, its details source (and HTTP client), its poll thread.

The exporter keeps one runner per configured account. A reload that keeps the account
keeps its runner (and so its engine state), handing the poller a new configuration and
source under the runner's lock, which also serialises polls. :class:`Sources` builds
each account's source: a signed HTTP client for an endpoint, or a view of the push store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from exporter.budget import Budget
from exporter.client import DetailsClient, RetryPolicy
from exporter.config import AccountConfig, AccountSource, Config
from exporter.details import OneQueryAtATime
from exporter.fetch import DetailsSource
from exporter.poller import Poller
from exporter.pushstore import AccountView, ReportStore
from exporter.sharding import Shard
from exporter.snapshot import AccountSnapshot
from exporter.stats import RequestStats


class Sources:
    """Builds each account's details source, one sending-details query at a time (the
    poller and ``/details`` share it): an HTTP client, or a view of the push store."""

    def __init__(
        self,
        *,
        http_factory: Callable[..., httpx.Client],
        retry: RetryPolicy | None,
        sleep: Callable[[float], object],
        push_store: ReportStore | None,
        push_accounts: tuple[str, ...],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http_factory = http_factory
        self._clock = clock
        self._retry = retry
        self._sleep = sleep
        self._push_store = push_store
        # One push account reads the whole store, as before accounts were stored.
        self._by_account = len(push_accounts) > 1
        self._views: dict[str, AccountView] = {}

    def build(
        self, account: AccountConfig, config: Config, stats: RequestStats | None, budget: Budget
    ) -> tuple[DetailsClient | None, httpx.Client | None, DetailsSource]:
        """The account's client (None for a push account), HTTP client and source."""
        if account.source == AccountSource.PUSH and self._push_store is not None:
            return None, None, OneQueryAtATime(self._push_view(account.name))
        http = self._http_factory(account, config.request_timeout)
        stats = stats or RequestStats(clock=self._clock)  # the poller's clock: see skew
        client = DetailsClient(
            account, http, stats=stats, retry=self._retry, budget=budget, sleep=self._sleep
        )
        return client, http, OneQueryAtATime(client)

    def _push_view(self, name: str) -> AccountView:
        """A push account's view of the store, kept across reloads (its request counters)."""
        assert self._push_store is not None
        view = self._views.get(name)
        if view is None:
            view = self._push_store.account_view(name if self._by_account else None)
            self._views[name] = view
        return view


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

    @classmethod
    def new(
        cls,
        account: AccountConfig,
        config: Config,
        sources: Sources,
        publish: Callable[[AccountSnapshot], None],
        *,
        clock: Callable[[], float],
        shard: Shard,
    ) -> AccountRunner:
        """A new account's runner: its budget, source, client and poller."""
        budget = Budget(config.request_budget)
        client, http, source = sources.build(account, config, None, budget)
        poller = Poller(account, config, source, clock=clock, shard=shard, budget=budget)
        return cls(poller, source, publish, client, http)

    def reconfigure(
        self, account: AccountConfig, config: Config, sources: Sources
    ) -> httpx.Client | None:
        """Apply a reloaded configuration once the poll in flight ended, keeping the
        engine's state and the request counters; the replaced HTTP client, to close."""
        with self.lock:
            stats = self.client.stats if self.client is not None else None
            retired = self.http
            budget = self.poller.budget
            self.client, self.http, self.source = sources.build(account, config, stats, budget)
            self.poller.reconfigure(account, config, self.source)
        return retired

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
