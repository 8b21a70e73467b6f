"""Wiring: one poller per account, the snapshot board, the collector and the web server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import structlog
from prometheus_client import CollectorRegistry, generate_latest

from exporter.client import DetailsClient, RetryPolicy, build_http_client
from exporter.collector import DeliveryCollector
from exporter.config import Config
from exporter.details import DetailsQueries, OneQueryAtATime
from exporter.details_page import details_html
from exporter.pages import landing_page
from exporter.poller import Poller
from exporter.pushstore import PushStore
from exporter.receiver import Receiver
from exporter.sharding import UNSHARDED, Shard
from exporter.snapshot import SnapshotBoard
from exporter.web import ExpositionCache, Request, Response, Router, WebServer, text

log = structlog.get_logger("msgsms_exporter")


class Exporter:
    """The running exporter: background pollers publishing to a board the web layer reads."""

    def __init__(
        self,
        config: Config,
        *,
        shard: Shard = UNSHARDED,
        clock: Callable[[], float] = time.time,
        http_factory: Callable[..., httpx.Client] = build_http_client,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.config = config
        self._stop = threading.Event()
        # Waits between retries end early when the exporter stops.
        self._retry_sleep = sleep or self._stop.wait
        self.board = SnapshotBoard([a.name for a in config.accounts])
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(DeliveryCollector(self.board.snapshots))
        self.exposition = ExpositionCache(self.registry, self.board)
        self.push_store: PushStore | None = None
        self.receiver: Receiver | None = None
        if config.receiver is not None:
            rc = config.receiver
            self.push_store = PushStore(
                rc.store_path, retention=rc.retention, synchronous=rc.synchronous, clock=clock
            )
            self.receiver = Receiver(rc, self.push_store, clock=clock)
            self.registry.register(self.receiver.collector())
        self._http: list[httpx.Client] = []
        self._clients: list[DetailsClient | None] = []
        sources: list[OneQueryAtATime] = []
        # One sending-details query at a time per account: the poller and /details share it.
        for account in config.accounts:
            if account.source == "push" and self.push_store is not None:
                self._clients.append(None)
                sources.append(OneQueryAtATime(self.push_store))
                continue
            http = http_factory(account, config.request_timeout)
            self._http.append(http)
            client = DetailsClient(
                account,
                http,
                retry=retry,
                request_budget=config.request_budget,
                sleep=self._retry_sleep,
            )
            self._clients.append(client)
            sources.append(OneQueryAtATime(client))
        self.pollers = [
            Poller(account, config, source, clock=clock, shard=shard)
            for account, source in zip(config.accounts, sources, strict=True)
        ]
        self._clock = clock
        self.details = DetailsQueries(
            {a.name: s for a, s in zip(config.accounts, sources, strict=True)},
            max_span=config.max_query_span,
            clock=clock,
        )
        for poller in self.pollers:
            self.board.publish(poller.last)
        self._threads: list[threading.Thread] = []
        self._web: WebServer | None = None

    def poll_once(self) -> bool:
        """Poll every account once in this thread; True when all polls succeeded."""
        ok = True
        for index in range(len(self.pollers)):
            ok = self._poll(index) and ok
        return ok

    def _poll(self, index: int) -> bool:
        """One poll of one account, with a fresh request budget, published."""
        client = self._clients[index]
        if client is not None:
            client.begin_poll()
        snapshot = self.pollers[index].poll()
        self.board.publish(snapshot)
        return snapshot.up

    def _run(self, index: int) -> None:
        """Poll one account every interval until the exporter stops."""
        while not self._stop.is_set():
            began = time.monotonic()
            self._poll(index)
            interval = self.pollers[index].config.poll_interval
            self._stop.wait(max(0.0, interval - (time.monotonic() - began)))

    def exposition_text(self) -> bytes:
        """The current exposition, freshly rendered."""
        return generate_latest(self.registry)

    def router(self) -> Router:
        """The exporter's routes."""
        router = Router()
        router.add("/", self._landing)
        router.add("/details", self._details)
        router.add("/metrics", self.exposition.route)
        router.add("/-/healthy", lambda _r: text(200, "OK"))
        router.add("/-/ready", self._ready)
        if self.receiver is not None:
            self.receiver.add_routes(router)
        return router

    def _landing(self, _request: Request) -> Response:
        body = landing_page(self.board.snapshots(), now=self._clock()).encode()
        return Response(200, body, "text/html; charset=utf-8")

    def _details(self, request: Request) -> Response:
        outcome = self.details.run({k: v[0] for k, v in request.query.items() if v})
        return Response(outcome.status, details_html(outcome).encode(), "text/html; charset=utf-8")

    def _ready(self, _request: Request) -> Response:
        if self.board.ready:
            return text(200, "ready")
        return text(503, "waiting for the first successful poll")

    def start(self, host: str, port: int) -> tuple[str, int]:
        """Start the pollers and the web server; return the bound address."""
        self._web = WebServer(self.router(), host, port)
        self._web.start()
        for index, poller in enumerate(self.pollers):
            thread = threading.Thread(
                target=self._run,
                args=(index,),
                name=f"poller-{poller.account.name}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self._web.address

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling and serving; in-flight requests are abandoned after ``timeout``."""
        self._stop.set()
        if self._web is not None:
            self._web.stop()
        for thread in self._threads:
            thread.join(timeout)
        for http in self._http:
            http.close()
        if self.push_store is not None:
            self.push_store.close()
