"""The exporter's routes: the landing page, ``/details``, ``/metrics``, health, readiness
and reload, with the receiver's push routes; and which paths skip basic auth.

Handlers read the running exporter through :class:`Site`, each time, because a reload
replaces the board and the details queries they answer from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from exporter.config import Config
from exporter.details import DetailsQueries
from exporter.details_page import details_html
from exporter.exposition import ExpositionCache
from exporter.pages import landing_page
from exporter.pushauth import unsigned_exposure
from exporter.pushstore import ReportStore
from exporter.receiver import Receiver
from exporter.routing import Request, Response, Router, text
from exporter.snapshot import SnapshotBoard

log = structlog.get_logger("msgsms_exporter")

HTML = "text/html; charset=utf-8"


class Site(Protocol):
    """What the routes read of the running exporter: its latest snapshots, its details
    queries, its configuration, whether shutdown began, and its reload."""

    board: SnapshotBoard
    details: DetailsQueries
    config: Config

    @property
    def draining(self) -> bool: ...

    def reload_from_file(self) -> list[str]: ...


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
        body = landing_page(self.site.board.snapshots(), now=self.clock())
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


def push_exposure(config: Config, host: str, basic_auth: bool) -> str | None:
    """Why the receiver may not serve on ``host``; warns when it is allowed unsigned."""
    rc = config.receiver
    problem = unsigned_exposure(rc, host, basic_auth) if rc is not None else None
    if problem is None or rc is None:
        return None
    if not rc.allow_unsigned:
        return problem
    log.warning(
        "push paths accept unsigned reports from anyone (receiver.allow_unsigned)", host=host
    )
    return None
