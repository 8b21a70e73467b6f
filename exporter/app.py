"""Wiring: one poller per account, the snapshot board, the collector and the web server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import structlog
from prometheus_client import CollectorRegistry

from exporter.client import RetryPolicy, build_http_client
from exporter.collector import DeliveryCollector
from exporter.config import AccountConfig, AccountSource, Config
from exporter.configfile import load_config
from exporter.contract import QueryLimits
from exporter.details import DetailsQueries
from exporter.errors import ConfigError
from exporter.poller import Poller
from exporter.pushstore import ReportStore, open_store
from exporter.receiver import Receiver
from exporter.receiverconfig import reload_problem
from exporter.reloads import ReloadCollector, reload_web_access
from exporter.routes import (
    DETAILS_PATHS,
    Routes,
    details_exposure,
    details_withheld_message,
    push_exposure,
    withheld_details,
)
from exporter.runner import AccountRunner, Sources
from exporter.sharding import UNSHARDED, Shard
from exporter.snapshot import AccountSnapshot, Generation, SnapshotBoard
from exporter.web import (
    HEALTH_PATHS,
    Authenticator,
    ExpositionCache,
    Router,
    WebServer,
    known_to_be_authorized,
)
from exporter.webconfig import WebConfig
from exporter.webstats import HttpCollector, HttpStats

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
        retry_sleep = sleep or self._stop.wait
        self._shard = shard
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
        self._auth: Authenticator | None = None
        """The web config's users, as last started or reloaded (registrations may use them)."""
        self._host: str | None = None
        self._details_open = False
        """``--web.details-unauthenticated``: the record-level pages need no credentials."""
        self.details_open_by_demo = False
        """``--demo`` opened the record pages (its records are made up): no warning."""
        self.demo = False
        """Started by ``--demo``, whose receiver takes unsigned pushes by its own design:
        the warning naming ``receiver.allow_unsigned``, a setting nobody wrote, is the
        demo's own (``cli``)."""
        self._details_withheld = False
        """Whether ``/details`` is answered 403 now (as last started or reloaded)."""
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
                accounts=config.push_accounts,
                basic_auth=self._basic_ok,
                pinned_templates=_configured_push_templates(config),
            )
            live.register(self.receiver.collector())
        # Polls and reloads change the polled part (each bumps the generation).
        self.exposition = ExpositionCache(self.registry, lambda: self.generation.value, live)
        self._sources = Sources(
            http_factory=http_factory,
            retry=retry,
            sleep=retry_sleep,
            push_store=self.push_store,
            push_accounts=config.push_accounts,
            clock=clock,
        )
        self._runners = [self._runner(account, config) for account in config.accounts]
        self.details = self._details_queries()
        self.routes = Routes(self, self.exposition, self.receiver, self.push_store, clock)
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
        return AccountRunner.new(
            account, config, self._sources, self._publish, clock=self._clock, shard=self._shard
        )

    def _publish(self, snapshot: AccountSnapshot) -> None:
        self.board.publish(snapshot)
        self.exposition.refresh()  # here, so no scrape waits for the rendering

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
        account starts fresh; a removed one stops. The receiver takes new push credentials;
        ConfigError when the change needs a restart (the rest of the receiver section).
        """
        problem = reload_problem(self.config.receiver, config.receiver)
        if problem is not None:
            raise ConfigError([problem])
        if config.push_accounts != self.config.push_accounts:
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
                old_http = runner.reconfigure(account, config, self._sources)
                retired += [old_http] if old_http is not None else []
                runners.append(runner)
            for gone in kept.values():
                with gone.lock:  # waits for its poll in flight before its client closes
                    gone.stop.set()
                if gone.http is not None:
                    retired.append(gone.http)
            self.config = config
            self._runners = runners
            if self.receiver is not None and config.receiver is not None:
                self.receiver.rekey(config.receiver)
                self.receiver.templates.pin(_configured_push_templates(config))
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
        access = None
        if self.web_config_file is not None and self._web is not None:
            access = reload_web_access(self.web_config_file, self._web.tls_on, problems)
        if config is not None and self._host is not None:
            # New users, or none: pushes must stay authenticated (or allowed unsigned), and
            # the details API too (or opted in); the warnings of an opt-in come again.
            users = access[1] if access is not None else self._auth
            for problem in (
                push_exposure(config, self._host, users is not None, warn=not self.demo),
                details_exposure(
                    config,
                    self._host,
                    users is not None,
                    self._details_open,
                    warn=not self.details_open_by_demo,
                ),
            ):
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
        if access is not None and self._web is not None and self._host is not None:
            tls, auth = access
            withheld = self._withheld(self._host, auth is not None)
            self._web.update(tls=tls, auth=auth, withheld=withheld)
            self._auth = auth
            log.info("web configuration reloaded", tls=tls is not None, basic_auth=auth is not None)
        return []

    def exposition_text(self) -> bytes:
        """The current exposition, as ``/metrics`` serves it uncompressed."""
        return self.exposition.body()

    def router(self) -> Router:
        """The exporter's routes."""
        return self.routes.router()

    @property
    def draining(self) -> bool:
        """True once shutdown began: ``/-/ready`` answers 503."""
        return self._draining.is_set()

    def start(
        self,
        host: str,
        port: int,
        *,
        web: WebConfig = WebConfig(),  # noqa: B008 - frozen, never mutated
        health_open: bool = False,
        details_open: bool = False,
    ) -> tuple[str, int]:
        """Start the pollers and the web server; return the bound address.

        ``web`` adds TLS and basic auth; ``health_open`` leaves ``/-/healthy`` and
        ``/-/ready`` without auth (for kubelet probes); ``details_open`` serves the
        record-level pages without credentials, also off loopback (else they are withheld
        there unless basic auth guards them).
        """
        auth = web.auth()
        problems = [
            problem
            for problem in (
                push_exposure(self.config, host, auth is not None, warn=not self.demo),
                details_exposure(
                    self.config,
                    host,
                    auth is not None,
                    details_open,
                    warn=not self.details_open_by_demo,
                ),
            )
            if problem
        ]
        if problems:
            raise ConfigError(problems)
        self._auth, self._host, self._details_open = auth, host, details_open
        health = HEALTH_PATHS if health_open else ()
        details = DETAILS_PATHS if details_open else ()
        self._web = WebServer(
            self.router(),
            host,
            port,
            tls=web.tls.context() if web.tls is not None else None,
            auth=auth,
            open_paths=(*health, *details, *self.routes.push_paths_open(self.config)),
            stats=self.http_stats,
            withheld=self._withheld(host, auth is not None),
            withheld_message=details_withheld_message(host),
        )
        self._web.start()
        self._started = True
        for runner in self._runners:
            runner.start(self._stop)
        return self._web.address

    def _withheld(self, host: str, basic_auth: bool) -> tuple[str, ...]:
        """The record-level pages to refuse (403); logged when there are any."""
        withheld = withheld_details(host, basic_auth, self._details_open)
        self._details_withheld = bool(withheld)
        if withheld:
            log.info(
                "sending-details pages withheld: no basic auth off loopback"
                " (set basic_auth_users, listen on 127.0.0.1, or pass"
                " --web.details-unauthenticated)",
                host=host,
                paths=list(withheld),
            )
        return withheld

    def details_withheld_note(self) -> str | None:
        """Why ``/details`` answers 403 here and the fixes, while it does; else None."""
        if not self._details_withheld or self._host is None:
            return None
        return details_withheld_message(self._host)

    def _basic_ok(self, header: str) -> bool:
        """True when ``header`` names a user of the current web config: as the web server
        verified it before the route (never a bcrypt check in the route's thread)."""
        return self._auth is not None and known_to_be_authorized(self._auth, header)

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


def _configured_push_templates(config: Config) -> tuple[str, ...]:
    """The template ids push accounts name: the receiver always admits them."""
    return tuple(
        t for a in config.accounts if a.source == AccountSource.PUSH for t in a.templates.ids
    )
