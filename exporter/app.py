"""Wiring: one poller per account, the snapshot board, the collector and the web server."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterable

import httpx
import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from exporter.budget import Budget
from exporter.client import DetailsClient, RetryPolicy, build_http_client
from exporter.collector import DeliveryCollector
from exporter.config import AccountConfig, AccountSource, Config, load_config
from exporter.contract import QueryLimits
from exporter.details import DetailsQueries, OneQueryAtATime
from exporter.details_page import details_html
from exporter.errors import ConfigError
from exporter.fetch import DetailsSource
from exporter.pages import landing_page
from exporter.poller import Poller
from exporter.pushauth import unsigned_exposure
from exporter.pushstore import AccountView, ReportStore, open_store
from exporter.receiver import Receiver
from exporter.runner import AccountRunner
from exporter.sharding import UNSHARDED, Shard
from exporter.snapshot import AccountSnapshot, Generation, SnapshotBoard
from exporter.stats import RequestStats
from exporter.web import (
    HEALTH_PATHS,
    Authenticator,
    ExpositionCache,
    Request,
    Response,
    Router,
    WebServer,
    authorized,
    text,
)
from exporter.webconfig import WebConfig, load_web_config
from exporter.webstats import HttpCollector, HttpStats

log = structlog.get_logger("msgsms_exporter")


class ReloadCollector:
    """``msgsms_config_last_reload_successful`` and its success timestamp.

    msgsms_config_last_reload_successful 1
    msgsms_config_last_reload_success_timestamp_seconds 1.7641512e+09
    """

    def __init__(self, started: float, generation: Generation) -> None:
        self.successful = True
        self.success_at = started
        self._generation = generation

    def record(self, successful: bool, at: float) -> None:
        """Note a reload's outcome (``at``: when, for a success)."""
        self.successful = successful
        if successful:
            self.success_at = at
        self._generation.bump()

    def describe(self) -> Iterable[GaugeMetricFamily]:
        """Same families as collect()."""
        return self.collect()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """The outcome of the last configuration reload (start-up counts as one)."""
        yield GaugeMetricFamily(
            "msgsms_config_last_reload_successful",
            "1 when the last configuration reload succeeded.",
            value=1 if self.successful else 0,
        )
        yield GaugeMetricFamily(
            "msgsms_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully.",
            value=self.success_at,
        )


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
        self._retry = retry
        self._shard = shard
        self._http_factory = http_factory
        self._clock = clock
        self._reload_lock = threading.Lock()
        self.generation = Generation()
        self.board = SnapshotBoard([a.name for a in config.accounts], self.generation)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(DeliveryCollector(lambda: self.board.snapshots()))
        self.reloads = ReloadCollector(time.time(), self.generation)
        self.registry.register(self.reloads)
        self.push_store: ReportStore | None = None
        self.receiver: Receiver | None = None
        self._push_views: dict[str, AccountView] = {}
        self._auth: Authenticator | None = None
        """The web config's users, as last started or reloaded (registrations may use them)."""
        self._host: str | None = None
        # The HTTP layer's and the receiver's counters, which every request may change,
        # are the live part of the exposition: in each scrape, at most 100 ms old.
        self.http_stats = HttpStats()
        live = CollectorRegistry(auto_describe=True)
        live.register(HttpCollector(self.http_stats))
        if config.receiver is not None:
            rc = config.receiver
            self.push_store = open_store(rc, clock=clock)
            limits = QueryLimits(max_span_seconds=config.max_query_span)
            self.receiver = Receiver(
                rc,
                self.push_store,
                clock=clock,
                limits=limits,
                accounts=push_accounts(config),
                basic_auth=self._basic_ok,
                pinned_templates=tuple(
                    t
                    for a in config.accounts
                    if a.source == AccountSource.PUSH
                    for t in a.templates.ids
                ),
            )
            live.register(self.receiver.collector())
        # Polls and reloads change the polled part (each bumps the generation).
        self.exposition = ExpositionCache(self.registry, lambda: self.generation.value, live)
        self._runners = [self._runner(account, config) for account in config.accounts]
        self.details = self._details_queries()
        for poller in self.pollers:
            self.board.publish(poller.last)
        self._web: WebServer | None = None
        self._started = False
        self._draining = threading.Event()
        self.config_file: str | None = None
        """Where ``POST /-/reload`` and SIGHUP read the configuration from."""
        self.web_config_file: str | None = None
        """The ``--web.config.file`` read again on reload (users, certificate, key)."""
        warn_if_unverified(config)

    @property
    def pollers(self) -> list[Poller]:
        """One poller per configured account, in configuration order."""
        return [runner.poller for runner in self._runners]

    def _runner(self, account: AccountConfig, config: Config) -> AccountRunner:
        """A new account's runner: its budget, source, client and poller."""
        budget = Budget(config.request_budget)
        client, http, source = self._source(account, config, None, budget)
        poller = Poller(
            account, config, source, clock=self._clock, shard=self._shard, budget=budget
        )
        return AccountRunner(poller, source, self._publish, client, http)

    def _publish(self, snapshot: AccountSnapshot) -> None:
        self.board.publish(snapshot)
        self.exposition.refresh()  # here, so no scrape waits for the rendering

    def _source(
        self, account: AccountConfig, config: Config, stats: RequestStats | None, budget: Budget
    ) -> tuple[DetailsClient | None, httpx.Client | None, DetailsSource]:
        # One sending-details query at a time per account: the poller and /details share it.
        if account.source == AccountSource.PUSH and self.push_store is not None:
            return None, None, OneQueryAtATime(self._push_view(account.name))
        http = self._http_factory(account, config.request_timeout)
        client = DetailsClient(
            account,
            http,
            stats=stats,
            retry=self._retry,
            budget=budget,
            sleep=self._retry_sleep,
        )
        return client, http, OneQueryAtATime(client)

    def _push_view(self, name: str) -> AccountView:
        """A push account's view of the store, kept across reloads (its request counters)."""
        assert self.push_store is not None
        view = self._push_views.get(name)
        if view is None:
            # One push account reads the whole store, as before accounts were stored.
            several = len(push_accounts(self.config)) > 1
            view = self.push_store.account_view(name if several else None)
            self._push_views[name] = view
        return view

    def _details_queries(self) -> DetailsQueries:
        return DetailsQueries(
            {runner.name: runner.source for runner in self._runners},
            max_span=self.config.max_query_span,
            clock=self._clock,
        )

    def poll_once(self) -> bool:
        """Poll every account once in this thread; True when all polls succeeded."""
        ok = True
        for runner in list(self._runners):
            ok = runner.poll() and ok
        return ok

    def reload(self, config: Config) -> None:
        """Apply a new configuration; accounts that keep their name keep their state.

        Counters, tallies and request statistics of a kept account carry over; a new
        account starts fresh; a removed one stops. ConfigError when the change needs a
        restart (the receiver section).
        """
        if config.receiver != self.config.receiver:
            raise ConfigError(["receiver: changing the receiver needs a restart"])
        if push_accounts(config) != push_accounts(self.config):
            raise ConfigError(["accounts: changing the push accounts needs a restart"])
        with self._reload_lock:
            kept = {runner.name: runner for runner in self._runners}
            runners: list[AccountRunner] = []
            retired: list[httpx.Client] = []
            for account in config.accounts:
                runner = kept.pop(account.name, None)
                if runner is None:
                    runners.append(self._runner(account, config))
                    continue
                with runner.lock:  # waits for the account's poll in flight
                    stats = runner.client.stats if runner.client is not None else None
                    budget = runner.poller.budget
                    client, http, source = self._source(account, config, stats, budget)
                    runner.poller.reconfigure(account, config, source)
                    if runner.http is not None:
                        retired.append(runner.http)
                    runner.client, runner.http, runner.source = client, http, source
                runners.append(runner)
            for gone in kept.values():
                with gone.lock:  # waits for its poll in flight before its client closes
                    gone.stop.set()
                if gone.http is not None:
                    retired.append(gone.http)
            self.config = config
            self._runners = runners
            board = SnapshotBoard([a.name for a in config.accounts], self.generation)
            for runner in runners:
                board.publish(runner.poller.last)
            self.board = board
            self.reloads.record(True, time.time())
            self.exposition.refresh()
            self.details = self._details_queries()
            if self._started:
                for runner in runners:
                    if runner.thread is None:
                        runner.start(self._stop)
            for http in retired:
                http.close()
        warn_if_unverified(config)
        log.info("configuration reloaded", accounts=[a.name for a in config.accounts])

    def reload_failed(self) -> None:
        """Record a rejected reload: the running configuration stays."""
        self.reloads.record(False, time.time())

    def reload_from_file(self) -> list[str]:
        """Reload ``config_file``; the problems found (none when it was applied)."""
        if self.config_file is None:
            return ["no configuration file to reload"]
        problems: list[str] = []
        config: Config | None = None
        try:
            config = load_config(self.config_file)
        except ConfigError as error:
            problems += error.problems
        access = self._web_access(problems)
        if config is not None and self._host is not None:
            # New users, or none: pushes must stay authenticated (or allowed unsigned).
            users = access[1] if access is not None else self._auth
            problem = self._push_exposure(config, self._host, users is not None)
            problems += [problem] if problem else []
        if not problems and config is not None:
            try:
                self.reload(config)
            except ConfigError as error:
                problems += error.problems
        if problems:
            self.reload_failed()
            log.error("configuration reload rejected", problems=problems)
            return problems
        if access is not None and self._web is not None:
            tls, auth = access
            self._web.update(tls=tls, auth=auth)
            self._auth = auth
            log.info("web configuration reloaded", tls=tls is not None, basic_auth=auth is not None)
        return []

    def _web_access(
        self, problems: list[str]
    ) -> tuple[ssl.SSLContext | None, Authenticator | None] | None:
        """The reloaded web config's TLS context and users (None: nothing to reload)."""
        path = self.web_config_file
        if path is None or self._web is None:
            return None
        try:
            web = load_web_config(path)
            tls = web.tls.context() if web.tls is not None else None
        except ConfigError as error:
            problems += error.problems
            return None
        except (OSError, ValueError) as error:  # ssl.SSLError: a key that does not match
            problems.append(f"{path}: tls_server_config: {error}")
            return None
        if (tls is not None) != self._web.tls_on:
            problems.append(f"{path}: turning TLS on or off needs a restart")
            return None
        return tls, web.auth()

    def _reload_route(self, _request: Request) -> Response:
        problems = self.reload_from_file()
        if problems:
            return text(400, "\n".join(["configuration rejected; the old one stays:", *problems]))
        return text(200, "configuration reloaded")

    def exposition_text(self) -> bytes:
        """The current exposition, as ``/metrics`` serves it uncompressed."""
        return self.exposition.body()

    def router(self) -> Router:
        """The exporter's routes."""
        router = Router()
        router.add("/", self._landing)
        router.add("/details", self._details)
        router.add("/metrics", self.exposition.route, fast=self.exposition.fast_route)
        healthy = lambda _r: text(200, "OK")  # noqa: E731 - answered on the event loop
        router.add("/-/healthy", healthy, fast=healthy)
        router.add("/-/ready", self._ready, fast=self._ready)
        router.add("/-/reload", self._reload_route, methods=("POST",))
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
        if self._draining.is_set():
            return text(503, "shutting down")
        if self.push_store is not None and not self.push_store.available():
            return text(503, "the push store is unavailable: pushes are refused")
        if self.board.ready:
            return text(200, "ready")
        return text(503, "waiting for the first successful poll")

    def start(
        self,
        host: str,
        port: int,
        *,
        web: WebConfig = WebConfig(),  # noqa: B008 - frozen, never mutated
        health_open: bool = False,
    ) -> tuple[str, int]:
        """Start the pollers and the web server; return the bound address.

        ``web`` adds TLS and basic auth; ``health_open`` leaves ``/-/healthy`` and
        ``/-/ready`` without auth (for kubelet probes).
        """
        auth = web.auth()
        problem = self._push_exposure(self.config, host, auth is not None)
        if problem:
            raise ConfigError([problem])
        self._auth, self._host = auth, host
        self._web = WebServer(
            self.router(),
            host,
            port,
            tls=web.tls.context() if web.tls is not None else None,
            auth=auth,
            open_paths=(*(HEALTH_PATHS if health_open else ()), *self._push_paths_open()),
            stats=self.http_stats,
        )
        self._web.start()
        self._started = True
        for runner in self._runners:
            runner.start(self._stop)
        return self._web.address

    def _push_paths_open(self) -> tuple[str, ...]:
        """Push paths skip basic auth when pushes are signed (Huawei cannot send a
        password); registration paths also with a registration token. The receiver then
        checks the signature, the token or the basic auth itself."""
        rc = self.config.receiver
        if rc is None or self.receiver is None:
            return ()
        if rc.signing_keys:
            return self.receiver.push_paths()
        return self.receiver.registration_paths() if rc.registration_token else ()

    def _basic_ok(self, header: str) -> bool:
        """True when ``header`` names a user of the current web config."""
        return self._auth is not None and authorized(self._auth, header)

    def _push_exposure(self, config: Config, host: str, basic_auth: bool) -> str | None:
        """Why the receiver may not serve on ``host``; warns when it is allowed unsigned."""
        rc = config.receiver
        problem = unsigned_exposure(rc, host, basic_auth) if rc is not None else None
        if problem is None or rc is None:
            return None
        if not rc.allow_unsigned:
            return problem
        log.warning(
            "push paths accept unsigned reports from anyone (receiver.allow_unsigned)",
            host=host,
        )
        return None

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def drain(self) -> None:
        """Start shutting down: ``/-/ready`` answers 503, pushes are still acknowledged.

        Load balancers take the replica out of rotation on the 503 (or on the endpoint's
        removal) while it goes on serving; answers close their connections from now on.
        """
        self._draining.set()
        if self._web is not None:
            self._web.drain()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, let requests in flight finish (``timeout`` at most), stop polling."""
        self._draining.set()
        self._stop.set()
        if self._web is not None:
            self._web.stop(grace=timeout)
        for runner in self._runners:
            runner.stop.set()  # all at once: each finishes its poll in flight meanwhile
        for runner in self._runners:
            runner.halt(timeout)
        if self.push_store is not None:
            self.push_store.close()


def push_accounts(config: Config) -> tuple[str, ...]:
    """The names of the accounts fed by the receiver, in configuration order."""
    return tuple(a.name for a in config.accounts if a.source == AccountSource.PUSH)


def warn_if_unverified(config: Config) -> None:
    """Log a warning for every account that turned upstream TLS verification off, and
    for a PostgreSQL store reached over the network without a verified certificate."""
    store_url = config.receiver.store_url if config.receiver else None
    if store_url is not None:
        from exporter.pgstore import unverified_host  # the optional extra, used here only

        host = unverified_host(store_url.value)
        if host is not None:
            log.warning("push store TLS is not verified: set sslmode=verify-full", host=host)
    for account in config.accounts:
        if not account.tls_verify:
            log.warning(
                "upstream TLS verification is off",
                account=account.name,
                endpoint=account.endpoint,
            )
