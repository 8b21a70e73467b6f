"""The status-report receiver: HTTP in, the push domain, HTTP out.

Huawei's single (form) and batch (JSON) reports, and the operator's send registrations.
This module only translates: :mod:`exporter.pushwork` does each path's work (with
:mod:`exporter.pushauth` deciding who may push, :mod:`exporter.pushparse` parsing and
:mod:`exporter.pushattribution` naming account and template), the store commits, and
:mod:`exporter.pushstats` counts; :mod:`exporter.detailsapi` serves the stored details.
Every route goes through one wrapper that turns a refusal into a JSON answer and a count
by reason, and times the answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from exporter.config import ACCOUNT_PLACEHOLDER, ReceiverConfig
from exporter.contract import DETAILS_PATH, QueryLimits
from exporter.detailsapi import DetailsApi, contract_problem, contract_refusal
from exporter.errors import PushRejected, StoreUnavailable
from exporter.pushauth import BasicCheck
from exporter.pushstats import PushCollector, ReceiverStats
from exporter.pushstore import ReportStore, WriteResult
from exporter.pushtemplates import TemplateLimit
from exporter.pushwork import PushWork, Work, Write, problem
from exporter.stats import RequestStats
from exporter.web import DeferredRoute, Reply, Request, Response, Router, blocking

log = structlog.get_logger("msgsms_exporter.receiver")


def _push_refusal(status: int, message: str) -> Response:
    """The router's and the server's refusals on a push path, as the receiver's own."""
    reasons = {401: "unauthorized", 405: "method_not_allowed", 503: "auth_overloaded"}
    reason = reasons.get(status, "internal_error")
    return problem(PushRejected(reason, message, status))


def _with_slash(path: str) -> tuple[str, str]:
    """A push path and its twin with or without a trailing ``/``: a callback URL typed
    either way reaches the receiver (Huawei pushes once; a 404 would lose the report)."""
    twin = path.rstrip("/") if path.endswith("/") else path + "/"
    return (path, twin)


class Receiver:
    """The push routes: check, parse, attribute, store, count; never raises to the server."""

    def __init__(
        self,
        config: ReceiverConfig,
        store: ReportStore,
        *,
        clock: Callable[[], float] = time.time,
        limits: QueryLimits = QueryLimits(),  # noqa: B008 - frozen, never mutated
        accounts: tuple[str, ...] = (),
        basic_auth: BasicCheck | None = None,
        pinned_templates: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.store = store
        self.stats = ReceiverStats()
        self.templates = TemplateLimit(
            config.max_templates,
            lambda: [t.template_id for t in store.list_templates(stats=RequestStats())],
            pinned=pinned_templates,
            clock=clock,
        )
        self._clock = clock
        self._details = DetailsApi(store, clock, limits)
        self._accounts = accounts
        self._work = PushWork(
            config,
            store,
            self.stats,
            accounts=accounts,
            templates=self.templates,
            basic_auth=basic_auth,
            clock=clock,
        )
        started = clock()
        for name in accounts or ("",):
            for kind in ("report", "registration"):
                self.stats.last_push[(name, kind)] = started

    def rekey(self, config: ReceiverConfig) -> None:
        """Take a reload's push credentials (signing keys, their accounts, the token):
        requests that arrive from now on are checked with them."""
        self.config = config
        self._work.rekey(config)

    # -- routes -----------------------------------------------------------------------

    def _route(
        self,
        endpoint: str,
        work: Work,
        account: str | None = None,
        render: Callable[[PushRejected], Response] = problem,
    ) -> DeferredRoute:
        """The one wrapper: a refusal becomes ``render(reason)`` and a count, never a raise.

        The work checks and parses, then hands its write to the store's group commit; the
        answer is built on the commit's thread once the write is committed (or refused).
        Started on the event loop, no thread waits for the disk.
        """

        def start(request: Request, reply: Reply) -> None:
            started = time.perf_counter()

            def answer(response: Response) -> None:
                self.stats.request(endpoint, response.status, time.perf_counter() - started)
                reply(response)

            try:
                step = work(request, account)
                if isinstance(step, Response):
                    answer(step)
                    return
                write_started = time.perf_counter()

                def written(result: WriteResult | None, failure: StoreUnavailable | None) -> None:
                    try:
                        self._wrote(step, time.perf_counter() - write_started, failure)
                        if result is None:
                            raise failure or StoreUnavailable("not stored")
                        answer(step.then(result))
                    except Exception as exc:
                        answer(self._refusal(exc, render, endpoint))

                try:
                    step.start(written)
                except StoreUnavailable as exc:  # closed: refused at once, counted the same
                    written(None, exc)
            except Exception as exc:
                answer(self._refusal(exc, render, endpoint))

        return start

    def _refusal(
        self, exc: Exception, render: Callable[[PushRejected], Response], endpoint: str
    ) -> Response:
        """A refusal's answer, counted by reason; a bug is logged and answered 500."""
        if isinstance(exc, StoreUnavailable):
            exc = PushRejected("store_unavailable", f"not stored, try again: {exc}", 503)
        elif not isinstance(exc, PushRejected):
            log.error("push request failed", endpoint=endpoint, exc_info=exc)
            exc = PushRejected("internal_error", "internal error; see the exporter's log", 500)
        self.stats.reject([exc.reason])
        return render(exc)

    def _wrote(self, write: Write, seconds: float, failure: StoreUnavailable | None) -> None:
        """Time a store write, count it as a store error when it failed."""
        self.stats.write(write.operation, seconds, failed=failure is not None)
        if failure is None:
            kind = "report" if write.operation == "reports" else "registration"
            with self.stats.lock:
                self.stats.last_push[(write.account, kind)] = self._clock()

    def _push_routes(self) -> list[tuple[str, DeferredRoute]]:
        """Each push path with its route; a path with ``{account}`` once per account."""
        routes: list[tuple[str, DeferredRoute]] = []
        for endpoint, path, work in (
            ("single", self.config.single_path, self._work.single),
            ("batch", self.config.batch_path, self._work.batch),
            ("sends", self.config.sends_path, self._work.sends),
        ):
            if ACCOUNT_PLACEHOLDER not in path:
                route = self._route(endpoint, work)
                routes += [(served, route) for served in _with_slash(path)]
                continue
            for name in self._accounts:
                route = self._route(endpoint, work, name)
                served = path.replace(ACCOUNT_PLACEHOLDER, name)
                routes += [(served, route) for served in _with_slash(served)]
        return routes

    def push_paths(self) -> tuple[str, ...]:
        """Every path a push or registration is accepted at."""
        return tuple(path for path, _ in self._push_routes())

    def registration_paths(self) -> tuple[str, ...]:
        """The paths of send registrations (they have credentials of their own)."""
        path = self.config.sends_path
        names = self._accounts if ACCOUNT_PLACEHOLDER in path else ("",)
        return tuple(
            served
            for name in names
            for served in _with_slash(path.replace(ACCOUNT_PLACEHOLDER, name))
        )

    def add_routes(self, router: Router) -> None:
        """Serve the single, batch and registration paths (POST), and the stored
        sending details (GET, the project's contract) when ``details_api`` is on."""
        registrations = set(self.registration_paths())
        router.speak(_push_refusal, paths=self.push_paths())
        for path, route in self._push_routes():
            if path in registrations:
                # A registration's basic auth may take a slow password hash: not on the loop.
                router.add(path, blocking(route), methods=("POST",))
            else:
                router.add_deferred(path, route, methods=("POST",))
        if self.config.details_api:
            details = self._route("details", self._details.answer, None, contract_problem)
            router.add(DETAILS_PATH, blocking(details))
            router.speak(contract_refusal, under="/api/")

    def collector(self) -> PushCollector:
        """The collector of this receiver's counters."""
        return PushCollector(self.stats, self.store)
