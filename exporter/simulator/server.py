"""HTTP: routing, the gateway checks, fault injection, and the control and truth endpoints."""

from __future__ import annotations

import json
import re
import socket
import struct
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import structlog

from exporter.contract import whole_number
from exporter.errors import AuthError
from exporter.records import DETAILS_PATH
from exporter.simulator.api import BadParameter, QueryLimits, list_templates, send_details
from exporter.simulator.catalog import InvalidTemplateQuery, show_template
from exporter.simulator.clock import Clock, ManualClock
from exporter.simulator.faults import (
    RECORD_FAULTS,
    FaultDraw,
    FaultKind,
    Faults,
    corrupt_body,
    malform,
    parse_fault_plan,
    shift_offset,
)
from exporter.simulator.gate import Credentials, InFlight, RateLimiter, authenticate
from exporter.simulator.sendapi import SendApi
from exporter.simulator.sending import SEND_PATH
from exporter.simulator.store import MessageStore
from exporter.timestamps import format_rfc3339, parse_rfc3339

OPENAPI_PATH = "/api/v1/openapi.yaml"
MAX_CLOCK_STEP_SECONDS = 7 * 86400
MAX_BODY_BYTES = 1 << 20
"""Bodies are small control documents (and signed requests): a larger one is 413."""
_TEMPLATES = re.compile(r"^/v2/(?P<project>[^/]+)/msgsms/templates(?:/(?P<key>[^/]+))?/?$")
log = structlog.get_logger("msgsms-simulator")


@dataclass(slots=True)
class Response:
    """An HTTP answer."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False
    """Close the connection without answering (the connection-reset fault)."""
    gateway: bool = False
    """An ``APIG.*`` refusal: its body also names the request, as Huawei's gateway does."""


def _json(status: int, obj: Any, **headers: str) -> Response:
    return Response(status, json.dumps(obj).encode(), headers=dict(headers))


def _error(status: int, code: str, message: str, **headers: str) -> Response:
    response = _json(status, {"error_code": code, "error_msg": message}, **headers)
    response.gateway = code.startswith("APIG.")
    return response


@dataclass(slots=True)
class Request:
    """What the handler read off the wire."""

    method: str
    raw_path: str
    headers: Mapping[str, str]
    body: bytes


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
        self.stats: Counter[tuple[str, int]] = Counter()
        self._stats_lock = threading.Lock()
        self._sleep = sleep
        self._openapi = resources.files("exporter").joinpath("openapi.yaml").read_bytes()
        self.sending = SendApi(
            store,
            clock,
            credentials,
            self.limiter,
            lambda: frozenset(self.faults.deleted_templates()),
        )

    def now_ms(self) -> int:
        """The simulated instant in epoch milliseconds."""
        return round(self.clock.now() * 1000)

    def handle(self, request: Request) -> Response:
        """Route one request and count it."""
        parts = urlsplit(request.raw_path)
        params = parse_qs(parts.query, keep_blank_values=True)
        try:
            endpoint, response = self._route(request, parts.path, params)
        except Exception:  # a simulator bug: answer 500 and keep serving
            log.exception("request failed", path=parts.path)
            endpoint, response = "other", _error(500, "MSGSMS.0500", "internal simulator error")
        with self._stats_lock:
            self.stats[(endpoint, response.status)] += 1
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
                return "templates", _json(
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
        control: dict[tuple[str, str], Callable[[Request, dict[str, list[str]]], Response]] = {
            ("GET", "/-/healthy"): lambda r, p: Response(200, b"OK\n", "text/plain"),
            ("GET", "/-/clock"): self._get_clock,
            ("POST", "/-/clock"): self._post_clock,
            ("GET", "/-/truth"): self._truth,
            ("GET", "/-/stats"): self._stats,
            ("GET", "/-/incidents"): self._get_incidents,
            ("POST", "/-/incidents"): self._post_incident,
            ("GET", "/-/faults"): lambda r, p: _json(200, self.faults.plan.to_wire()),
            ("POST", "/-/faults"): self._post_faults,
            ("DELETE", "/-/faults"): self._delete_faults,
        }
        handler = control.get((method, path))
        if handler is not None:
            return path.removeprefix("/-/"), handler(request, params)
        allowed = sorted({m for m, p in control if p == path})
        if path in (DETAILS_PATH, OPENAPI_PATH) or match is not None:
            allowed = ["GET"]
        if path == SEND_PATH:
            allowed = ["POST"]
        if allowed:
            return "other", _error(
                405,
                "MSGSMS.0405",
                f"method {method} not allowed on {path}; use {', '.join(allowed)}",
                Allow=", ".join(allowed + (["HEAD"] if "GET" in allowed else [])),
            )
        return "other", _error(
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
            return _error(401, exc.error_code, str(exc))
        if kind is FaultKind.EXPIRED_TOKEN and principal == "token":
            return _error(401, "APIG.0307", "The token expires.")
        if not self.limiter.allow(principal):
            return _error(429, "APIG.0308", "The request is throttled.", **{"Retry-After": "1"})
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
        response = _json(status, body)
        response.gateway = str(body.get("error_code", "")).startswith("APIG.")
        if status == 429:
            response.headers["Retry-After"] = "1"
        return response

    @staticmethod
    def _busy(headers: dict[str, str]) -> Response:
        return _error(
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
            return _error(
                fault.error_status,
                "APIG.0308" if fault.error_status == 429 else f"MSGSMS.{fault.error_status:04d}",
                "Injected fault.",
                **extra,
            )
        if rule is not None and rule.fault is FaultKind.STATUS:
            code = "APIG.0308" if rule.status == 429 else f"MSGSMS.{rule.status:04d}"
            return _error(rule.status, code, "Injected fault.", **rule.retry_after_header())
        deleted = self.faults.deleted_templates()
        try:
            if endpoint == "send-details":
                template_id = (params.get("template_id") or [""])[0]
                if deleted.get(template_id, False):
                    return _error(404, "MSGSMS.0404", "The template does not exist.")
                query = shift_offset(params, rule)
                body = send_details(self.store, query, self.clock.now(), self.limits)
            elif template_key is not None:
                hidden = frozenset(deleted)
                body = show_template(self.store.scenario, unquote(template_key), hidden)
            else:
                body = list_templates(self.store.scenario, params, frozenset(deleted))
        except InvalidTemplateQuery as exc:
            return _json(
                400,
                {
                    "error_code": exc.error_code,
                    "error_msg": "Invalid Parameter.",
                    "error_detail": str(exc),
                },
            )
        except BadParameter as exc:  # TemplateNotFound too: Huawei answers it 400
            return _error(400, exc.error_code, str(exc))
        if fault.malformed is not None:
            return Response(200, malform(body, fault.malformed))
        broken = None if rule is None else corrupt_body(body, rule)
        if broken is not None:
            return Response(200, broken)
        if rule is not None and rule.fault in RECORD_FAULTS:
            self.faults.refund(rule)  # an empty page: the next page gets the fault
        return _json(200, body)

    # -- control and truth ------------------------------------------------------

    @staticmethod
    def _body(request: Request) -> Any:
        try:
            return json.loads(request.body or b"{}")
        except ValueError as exc:
            raise BadParameter("body: not valid JSON") from exc

    def _get_clock(self, request: Request, params: dict[str, list[str]]) -> Response:
        return _json(200, {"now": format_rfc3339(self.clock.now()), "manual": self.clock.manual})

    def _post_clock(self, request: Request, params: dict[str, list[str]]) -> Response:
        if not isinstance(self.clock, ManualClock):
            return _error(409, "SIM.CLOCK", "the clock is real; start with --clock manual")
        try:
            body = self._body(request)
            step = body.get("advance_seconds") if isinstance(body, dict) else None
            # NaN fails both comparisons; a step past a week would generate for minutes.
            if (
                isinstance(step, bool)
                or not isinstance(step, int | float)
                or not 0 <= step <= MAX_CLOCK_STEP_SECONDS
            ):
                raise BadParameter(
                    f"advance_seconds: expected a number in [0, {MAX_CLOCK_STEP_SECONDS}]"
                    " (at most 7 days a step)"
                )
        except BadParameter as exc:
            return _error(400, "SIM.BAD_REQUEST", str(exc))
        now = self.clock.advance(float(step))
        # Generate here, so the cost of a big step is not paid by the next query.
        self.store.advance_to(round(now * 1000))
        return _json(200, {"now": format_rfc3339(now)})

    def _truth(self, request: Request, params: dict[str, list[str]]) -> Response:
        try:
            bounds = []
            for name in ("start_time", "end_time"):
                values = params.get(name)
                if not values:
                    raise BadParameter(f"{name}: required (RFC 3339)")
                try:
                    bounds.append(parse_rfc3339(values[0]))
                except ValueError as exc:
                    raise BadParameter(f"{name}: {exc}") from exc
        except BadParameter as exc:
            return _error(400, "SIM.BAD_REQUEST", str(exc))
        now = self.clock.now()
        start, end = bounds
        templates = self.store.truth(round(start * 1000), round(end * 1000), round(now * 1000))
        return _json(
            200,
            {
                "now": format_rfc3339(now),
                "start_time": format_rfc3339(start),
                "end_time": format_rfc3339(end),
                "templates": templates,
            },
        )

    def _stats(self, request: Request, params: dict[str, list[str]]) -> Response:
        with self._stats_lock:
            requests: dict[str, dict[str, int]] = {}
            for (endpoint, status), n in sorted(self.stats.items()):
                requests.setdefault(endpoint, {})[str(status)] = n
        kept = self.store.footprint()
        body: dict[str, Any] = {
            "requests": requests,
            "messages_generated": self.store.generated,
            # What memory grows with; the store drops minutes past its retention.
            "kept": {
                "since": format_rfc3339(kept.first_minute_ms / 1000),
                "messages": kept.messages,
                "blocks": kept.blocks,
                "send_requests": kept.requests,
            },
        }
        callbacks = self.sending.callbacks
        if callbacks is not None:
            body["status_callbacks"] = {
                "pending": callbacks.pending,
                "posted": callbacks.posted(),
            }
        return _json(200, body)

    def _get_incidents(self, request: Request, params: dict[str, list[str]]) -> Response:
        return _json(200, {"incidents": [i.to_wire() for i in self.store.incidents]})

    def _post_incident(self, request: Request, params: dict[str, list[str]]) -> Response:
        try:
            incident = self.store.add_incident(self._body(request), self.now_ms())
        except (BadParameter, ValueError) as exc:
            return _error(400, "SIM.BAD_REQUEST", str(exc))
        return _json(201, incident.to_wire())

    def _post_faults(self, request: Request, params: dict[str, list[str]]) -> Response:
        try:
            plan = parse_fault_plan(self._body(request))
        except (BadParameter, ValueError) as exc:
            return _error(400, "SIM.BAD_REQUEST", str(exc))
        self.faults.set(plan)
        return _json(200, plan.to_wire())

    def _delete_faults(self, request: Request, params: dict[str, list[str]]) -> Response:
        self.faults.set(type(self.faults.plan)())
        return _json(200, self.faults.plan.to_wire())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without TCP_NODELAY, Nagle and the client's delayed ACK hold each response ~40 ms.
    disable_nagle_algorithm = True
    server: SimulatorServer

    def _read_body(self) -> bytes | None:
        """The request's body, or None once a framing error has been answered."""
        if "Transfer-Encoding" in self.headers:
            self.send_error(411, "Transfer-Encoding: not supported; send Content-Length")
            return None
        lengths = self.headers.get_all("Content-Length") or []
        if len(set(lengths)) > 1:
            self.send_error(400, "Content-Length: give it once")
            return None
        if not lengths:
            return b""
        # ASCII digits only: int() would take "1_0", "-1" (read to EOF) and "٣".
        text = lengths[0].strip()
        if not (text.isascii() and text.isdigit()):
            self.send_error(400, "Content-Length: expected a number of bytes")
            return None
        if len(text) > 9 or int(text) > MAX_BODY_BYTES:
            self.send_error(413, f"Content-Length: at most {MAX_BODY_BYTES} bytes")
            return None
        return self.rfile.read(int(text))

    def _serve(self) -> None:
        body = self._read_body()
        if body is None:
            return
        request = Request(self.command, self.path, dict(self.headers.items()), body)
        response = self.server.app.handle(request)
        if response.reset:
            # SO_LINGER 0: closing sends a TCP RST instead of a FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Framing errors (a request line over 64 KiB, a bad header) as a gateway error body."""
        request_id = uuid.uuid4().hex
        body = json.dumps(
            {
                "error_code": "APIG.0201",
                "error_msg": message or self.responses[code][0],
                "request_id": request_id,
            }
        ).encode()
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Request-Id", request_id)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are logged by the app through structlog."""


class SimulatorServer(ThreadingHTTPServer):
    """A threading HTTP server bound to one SimulatorApp."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: SimulatorApp) -> None:
        self.app = app
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client gone mid-answer is a log line, not a traceback on stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.info("connection lost", error=type(error).__name__)
        else:
            log.exception("connection failed")
