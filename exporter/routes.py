"""The exporter's routes: the landing page, ``/details``, ``/metrics``, health, readiness
and reload, with the receiver's push routes; which paths skip basic auth; and whether
pushes and the record-level pages may be served on the listen address.

Handlers read the running exporter through :class:`Site`, each time, because a reload
replaces the board and the details queries they answer from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from exporter.config import Config
from exporter.contract import DETAILS_PATH
from exporter.details import DetailsQueries
from exporter.details_page import details_html
from exporter.exposition import ExpositionCache
from exporter.pages import landing_page
from exporter.pushauth import is_loopback, unsigned_exposure
from exporter.pushstore import ReportStore
from exporter.receiver import Receiver
from exporter.routing import Request, Response, Router, text
from exporter.snapshot import SnapshotBoard

log = structlog.get_logger("msgsms_exporter")

HTML = "text/html; charset=utf-8"
DETAILS_PATHS = ("/details", DETAILS_PATH)
"""The record-level pages: each record's masked number, message id, template and times."""


class Site(Protocol):
    """What the routes read of the running exporter: its latest snapshots, its details
    queries, its configuration, whether shutdown began, and its reload."""

    board: SnapshotBoard
    details: DetailsQueries
    config: Config

    @property
    def draining(self) -> bool: ...

    def reload_from_file(self) -> list[str]: ...

    def details_withheld_note(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Routes:
    """The exporter's page and operational handlers, gathered into one router."""

    site: Site
    exposition: ExpositionCache
    receiver: Receiver | None
    push_store: ReportStore | None
    clock: Callable[[], float]

    def router(self) -> Router:
        """Every route the exporter serves."""
        router = Router()
        router.add("/", self._landing)
        router.add("/details", self._details)
        router.add("/metrics", self.exposition.route, fast=self.exposition.fast_route)
        healthy = lambda _r: text(200, "OK")  # noqa: E731 - answered on the event loop
        router.add("/-/healthy", healthy, fast=healthy)
        router.add("/-/ready", self._ready, fast=self._ready_on_loop)
        router.add("/-/reload", self._reload, methods=("POST",))
        if self.receiver is not None:
            self.receiver.add_routes(router)
        return router

    def _landing(self, _request: Request) -> Response:
        note = self.site.details_withheld_note()
        body = landing_page(self.site.board.snapshots(), now=self.clock(), details_withheld=note)
        return Response(200, body.encode(), HTML)

    def _details(self, request: Request) -> Response:
        outcome = self.site.details.run({k: v[0] for k, v in request.query.items() if v})
        return Response(outcome.status, details_html(outcome).encode(), HTML)

    def _ready_on_loop(self, request: Request) -> Response | None:
        """Readiness on the event loop when it needs no store check; else None: the
        check runs in a worker thread. A PostgreSQL store's check waits up to a second
        for an answer, and a database that does not answer (a failover, a partition) had
        every check hold the loop, so every scrape and push, for that second."""
        if self.push_store is None or self.site.draining:
            return self._ready(request)
        return None

    def _ready(self, _request: Request) -> Response:
        if self.site.draining:
            return text(503, "shutting down")
        if self.push_store is not None and not self.push_store.available():
            return text(503, "the push store is unavailable: pushes are refused")
        # A push account's poll only reads the store: its pushes need no poll, so waiting
        # for one would have a load balancer refuse them (a whole poll interval after the
        # store came back, when it was down at start).
        if self.site.board.polled(exempt=self.site.config.push_accounts):
            return text(200, "ready")
        return text(503, "waiting for the first successful poll")

    def _reload(self, _request: Request) -> Response:
        problems = self.site.reload_from_file()
        if problems:
            return text(400, "\n".join(["configuration rejected; the old one stays:", *problems]))
        return text(200, "configuration reloaded")

    def push_paths_open(self, config: Config) -> tuple[str, ...]:
        """Push paths skip basic auth when pushes are signed (Huawei cannot send a
        password); registration paths also with a registration token. The receiver then
        checks the signature, the token or the basic auth itself."""
        rc = config.receiver
        if rc is None or self.receiver is None:
            return ()
        if rc.signing_keys:
            return self.receiver.push_paths()
        return self.receiver.registration_paths() if rc.registration_token else ()


def push_exposure(config: Config, host: str, basic_auth: bool, *, warn: bool = True) -> str | None:
    """Why the receiver may not serve on ``host``; warns when it is allowed unsigned."""
    rc = config.receiver
    problem = unsigned_exposure(rc, host, basic_auth) if rc is not None else None
    if problem is None or rc is None:
        return None
    if not rc.allow_unsigned:
        return problem
    if warn:
        log.warning(
            "push paths accept unsigned reports from anyone (receiver.allow_unsigned)", host=host
        )
    return None


LOOPBACK_FIX = (
    "listen on loopback only (--web.listen-address 127.0.0.1:PORT; other hosts through a proxy"
    " that authenticates)"
)
"""The fix that needs no credentials: the first a newcomer trying the exporter on the
machine they sit at wants, since ``:9170`` (the default) is every interface."""


def withheld_details(host: str, basic_auth: bool, details_open: bool) -> tuple[str, ...]:
    """The record-level page not to serve on ``host``: ``/details`` when anyone reaching
    it could read it (off loopback without basic auth) and the operator did not opt in
    (``--web.details-unauthenticated``); it is answered 403 naming the fix. (The details
    API is refused at start and reload instead: see :func:`details_exposure`.)"""
    if basic_auth or details_open or is_loopback(host):
        return ()
    return ("/details",)


def details_withheld_message(host: str) -> str:
    """What the withheld ``/details`` answers (403), naming the fixes."""
    return (
        f"the sending-details page shows message records and is not served without"
        f" credentials on {host or '0.0.0.0'}: set basic_auth_users in --web.config.file, or"
        f" {LOOPBACK_FIX}, or pass --web.details-unauthenticated to serve it to anyone who"
        " reaches the port"
    )


def details_exposure(
    config: Config, host: str, basic_auth: bool, details_open: bool, *, warn: bool = True
) -> str | None:
    """Why ``receiver.details_api`` may not be served on ``host``; warns when the
    record-level pages are served to anyone reaching it (``--web.details-unauthenticated``).

    The page ``/details`` is only withheld (it is always there, and /metrics must not stop
    for it); the API, which the configuration asked for, refuses the start.
    """
    if is_loopback(host) or (basic_auth and not details_open):
        return None
    if details_open:
        if warn:
            log.warning(
                "the sending-details pages serve message records to anyone"
                " (--web.details-unauthenticated)",
                host=host,
            )
        return None
    rc = config.receiver
    if rc is None or not rc.details_api:
        return None
    return (
        f"receiver.details_api: {DETAILS_PATH} on {host or '0.0.0.0'} would serve message"
        f" records to anyone: set basic_auth_users in --web.config.file, or {LOOPBACK_FIX},"
        " or pass --web.details-unauthenticated to serve them to anyone"
    )
