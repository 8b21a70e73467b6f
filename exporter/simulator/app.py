"""The simulator's HTTP app: routing, the gateway's checks, fault injection, the answers.

``SimulatorApp.handle`` is the whole server minus sockets (:mod:`server`): the API
requests go through the gateway's checks (:mod:`gate`) and the fault plan
(:mod:`faults`) to the sending-details contract (:mod:`api`), the template list
(:mod:`catalog`) and the sending API (:mod:`sendapi`); the ``/-/`` endpoints are
:mod:`control`'s.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from importlib import resources
from urllib.parse import parse_qs, unquote, urlsplit

import structlog

from exporter.contract import whole_number
from exporter.errors import AuthError
from exporter.records import DETAILS_PATH
from exporter.simulator.api import BadParameter, QueryLimits, list_templates, send_details
from exporter.simulator.catalog import InvalidTemplateQuery, show_template
from exporter.simulator.clock import Clock
from exporter.simulator.control import Control, RequestCounts
from exporter.simulator.faults import (
    RECORD_FAULTS,
    FaultDraw,
    FaultKind,
    Faults,
    corrupt_body,
    malform,
    shift_offset,
)
from exporter.simulator.gate import Credentials, InFlight, RateLimiter, authenticate
from exporter.simulator.sendapi import SendApi
from exporter.simulator.sending import SEND_PATH
from exporter.simulator.server import Request, Response, error_response, json_response
from exporter.simulator.store import MessageStore

OPENAPI_PATH = "/api/v1/openapi.yaml"
_TEMPLATES = re.compile(r"^/v2/(?P<project>[^/]+)/msgsms/templates(?:/(?P<key>[^/]+))?/?$")
log = structlog.get_logger("msgsms-simulator")


class SimulatorApp:
    """Everything a request needs; ``handle`` is the whole server minus sockets."""

    def __init__(
        self,
        store: MessageStore,
        clock: Clock,
        credentials: Credentials,
        limits: QueryLimits,
        rate_limit: float,
        seed: int,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.clock = clock
        self.credentials = credentials
        self.limits = limits
        self.faults = Faults(seed)
        self.limiter = RateLimiter(rate_limit, monotonic)
        self.in_flight = InFlight()
        self.stats = RequestCounts()
        self._sleep = sleep
        self._openapi = resources.files("exporter").joinpath("openapi.yaml").read_bytes()
        self.sending = SendApi(
            store,
            clock,
            credentials,
            self.limiter,
            lambda: frozenset(self.faults.deleted_templates()),
        )
        self.control = Control(store, clock, self.faults, self.sending, self.stats)

    def handle(self, request: Request) -> Response:
        """Route one request and count it."""
        parts = urlsplit(request.raw_path)
        params = parse_qs(parts.query, keep_blank_values=True)
        try:
            endpoint, response = self._route(request, parts.path, params)
        except Exception:  # a simulator bug: answer 500 and keep serving
            log.exception("request failed", path=parts.path)
            endpoint, response = (
                "other",
                error_response(500, "MSGSMS.0500", "internal simulator error"),
            )
        self.stats.add(endpoint, response.status)
        # Like Huawei's gateway, every answer names the request for support tickets, and
        # the gateway's own refusals name it in their body too ({..., "request_id": ...}).
        request_id = response.headers.setdefault("X-Request-Id", uuid.uuid4().hex)
        if response.gateway:
            response.body = json.dumps(
                {**json.loads(response.body), "request_id": request_id}
            ).encode()
        log.debug("request", endpoint=endpoint, status=response.status)
        return response

    def _route(
        self, request: Request, path: str, params: dict[str, list[str]]
    ) -> tuple[str, Response]:
        # HEAD is GET without the body (RFC 9110); the signature still covers "HEAD".
        method = "GET" if request.method == "HEAD" else request.method
        if path == DETAILS_PATH and method == "GET":
            return "send-details", self._api(request, "send-details", params)
        match = _TEMPLATES.match(path)
        if match is not None and method == "GET":
            if match.group("project") != self.store.scenario.project_id:
                return "templates", json_response(
                    404,
                    {
                        "error_code": "MSGSMS.0404",
                        "error_msg": "The project does not exist.",
                        "error_detail": f"project_id {match.group('project')!r} is unknown",
                    },
                )
            return "templates", self._api(request, "templates", params, match.group("key"))
        if path == OPENAPI_PATH and method == "GET":
            return "openapi", Response(200, self._openapi, "application/yaml")
        if path == SEND_PATH and method == "POST":
            return "send", self._send(request)
        control = self.control.routes
        handler = control.get((method, path))
        if handler is not None:
            return path.removeprefix("/-/"), handler(request, params)
        allowed = sorted({m for m, p in control if p == path})
        if path in (DETAILS_PATH, OPENAPI_PATH) or match is not None:
            allowed = ["GET"]
        if path == SEND_PATH:
            allowed = ["POST"]
        if allowed:
            return "other", error_response(
                405,
                "MSGSMS.0405",
                f"method {method} not allowed on {path}; use {', '.join(allowed)}",
                Allow=", ".join(allowed + (["HEAD"] if "GET" in allowed else [])),
            )
        return "other", error_response(
            404,
            "APIG.0101",
            "The API does not exist or has not been published in the environment.",
        )

    # -- API endpoints ----------------------------------------------------------

    def _api(
        self,
        request: Request,
        endpoint: str,
        params: dict[str, list[str]],
        template_key: str | None = None,
    ) -> Response:
        """An API request through the gateway's checks; ``template_key``: one template's id."""
        offset = whole_number((params.get("offset") or ["0"])[0], 10**9) or 0
        fault = self.faults.draw(endpoint, offset)
        kind = fault.rule.fault if fault.rule is not None else None
        skew = fault.rule.seconds if fault.rule and kind is FaultKind.CLOCK_SKEW else 0.0
        response = self._gateway(request, endpoint, params, template_key, fault, skew)
        response.clock_offset = skew  # a gateway whose clock is off dates its answers so
        return response

    def _gateway(
        self,
        request: Request,
        endpoint: str,
        params: dict[str, list[str]],
        template_key: str | None,
        fault: FaultDraw,
        skew: float,
    ) -> Response:
        kind = fault.rule.fault if fault.rule is not None else None
        if kind is FaultKind.RESET:
            return Response(0, reset=True)
        host = request.headers.get("Host") or request.headers.get("host") or "127.0.0.1"
        try:
            principal = authenticate(
                request.method,
                f"http://{host}{request.raw_path}",
                request.headers,
                request.body,
                self.credentials,
                sim_now=self.clock.now(),
                wall_now=time.time(),
                manual_clock=self.clock.manual,
                skew_seconds=skew,
            )
        except AuthError as exc:
            return error_response(401, exc.error_code, str(exc))
        if kind is FaultKind.EXPIRED_TOKEN and principal == "token":
            return error_response(401, "APIG.0307", "The token expires.")
        if not self.limiter.allow(principal):
            return error_response(
                429, "APIG.0308", "The request is throttled.", **{"Retry-After": "1"}
            )
        if fault.rule is not None and kind is FaultKind.BUSY:
            return self._busy(fault.rule.retry_after_header())
        account = self.credentials.account  # AK/SK and token: the same user
        if endpoint == "send-details" and not self.in_flight.acquire(account):
            return self._busy({"Retry-After": "1"})
        try:
            return self._serve_api(endpoint, params, fault, template_key)
        finally:
            if endpoint == "send-details":
                self.in_flight.release(account)

    def _send(self, request: Request) -> Response:
        """Huawei's batchSendSms (:mod:`sendapi`)."""
        host = request.headers.get("Host") or request.headers.get("host") or "127.0.0.1"
        url = f"http://{host}{request.raw_path}"
        status, body = self.sending.handle(url, request.headers, request.body)
        response = json_response(status, body)
        response.gateway = str(body.get("error_code", "")).startswith("APIG.")
        if status == 429:
            response.headers["Retry-After"] = "1"
        return response

    @staticmethod
    def _busy(headers: dict[str, str]) -> Response:
        return error_response(
            429,
            "MSGSMS.0429",
            "A query is already running for this account; wait for its result.",
            **headers,
        )

    def _serve_api(
        self,
        endpoint: str,
        params: dict[str, list[str]],
        fault: FaultDraw,
        template_key: str | None = None,
    ) -> Response:
        rule = fault.rule
        if fault.latency_seconds:
            self._sleep(fault.latency_seconds)
        if rule is not None and rule.fault is FaultKind.SLOW:
            self._sleep(rule.seconds)
        if fault.error_status is not None:
            extra = {"Retry-After": "1"} if fault.error_status in (429, 503) else {}
            return error_response(
                fault.error_status,
                "APIG.0308" if fault.error_status == 429 else f"MSGSMS.{fault.error_status:04d}",
                "Injected fault.",
                **extra,
            )
        if rule is not None and rule.fault is FaultKind.STATUS:
            code = "APIG.0308" if rule.status == 429 else f"MSGSMS.{rule.status:04d}"
            return error_response(rule.status, code, "Injected fault.", **rule.retry_after_header())
        deleted = self.faults.deleted_templates()
        try:
            if endpoint == "send-details":
                template_id = (params.get("template_id") or [""])[0]
                if deleted.get(template_id, False):
                    return error_response(404, "MSGSMS.0404", "The template does not exist.")
                query = shift_offset(params, rule)
                body = send_details(self.store, query, self.clock.now(), self.limits)
            elif template_key is not None:
                hidden = frozenset(deleted)
                body = show_template(self.store.scenario, unquote(template_key), hidden)
            else:
                body = list_templates(self.store.scenario, params, frozenset(deleted))
        except InvalidTemplateQuery as exc:
            return json_response(
                400,
                {
                    "error_code": exc.error_code,
                    "error_msg": "Invalid Parameter.",
                    "error_detail": str(exc),
                },
            )
        except BadParameter as exc:  # TemplateNotFound too: Huawei answers it 400
            return error_response(400, exc.error_code, str(exc))
        if fault.malformed is not None:
            return Response(200, malform(body, fault.malformed))
        broken = None if rule is None else corrupt_body(body, rule)
        if broken is not None:
            return Response(200, broken)
        if rule is not None and rule.fault in RECORD_FAULTS:
            self.faults.refund(rule)  # an empty page: the next page gets the fault
        return json_response(200, body)
