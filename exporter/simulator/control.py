"""The control and truth endpoints (``/-/...``): the clock, truth, stats, incidents, faults.

No credentials: they are the operator's and the tests' handles on the simulated world,
answered beside the API. Bad input is a 400 ``SIM.BAD_REQUEST`` naming the field.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from exporter.errors import BadParameter
from exporter.simulator.clock import Clock, ManualClock
from exporter.simulator.faults import Faults, parse_fault_plan
from exporter.simulator.sendapi import SendApi
from exporter.simulator.server import Request, Response, error_response, json_response
from exporter.simulator.store import MessageStore
from exporter.timestamps import format_rfc3339, parse_rfc3339

MAX_CLOCK_STEP_SECONDS = 7 * 86400
TRUTH_VIEWS = ("console", "sender")
"""``/-/truth``'s views: what the sending details show, or every message sent (those held
for review as sending), as an application fed by the status-report push knows them."""
Params = dict[str, list[str]]
Handler = Callable[[Request, Params], Response]


class RequestCounts:
    """Requests served, by endpoint and status (``/-/stats``)."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()

    def add(self, endpoint: str, status: int) -> None:
        """Count one answer."""
        with self._lock:
            self._counts[(endpoint, status)] += 1

    def by_endpoint(self) -> dict[str, dict[str, int]]:
        """``{endpoint: {status: n}}``, sorted."""
        with self._lock:
            requests: dict[str, dict[str, int]] = {}
            for (endpoint, status), n in sorted(self._counts.items()):
                requests.setdefault(endpoint, {})[str(status)] = n
        return requests


def _body(request: Request) -> Any:
    try:
        return json.loads(request.body or b"{}")
    except ValueError as exc:
        raise BadParameter("body: not valid JSON") from exc


class Control:
    """The ``/-/`` endpoints over one simulator's store, clock, faults and sending API."""

    def __init__(
        self,
        store: MessageStore,
        clock: Clock,
        faults: Faults,
        sending: SendApi,
        counts: RequestCounts,
    ) -> None:
        self.store = store
        self.clock = clock
        self.faults = faults
        self.sending = sending
        self.counts = counts
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/-/healthy"): lambda r, p: Response(200, b"OK\n", "text/plain"),
            ("GET", "/-/clock"): self._get_clock,
            ("POST", "/-/clock"): self._post_clock,
            ("GET", "/-/truth"): self._truth,
            ("GET", "/-/stats"): self._stats,
            ("GET", "/-/incidents"): self._get_incidents,
            ("POST", "/-/incidents"): self._post_incident,
            ("GET", "/-/faults"): lambda r, p: json_response(200, self.faults.plan.to_wire()),
            ("POST", "/-/faults"): self._post_faults,
            ("DELETE", "/-/faults"): self._delete_faults,
        }
        """The handler of each (method, path)."""

    def _get_clock(self, request: Request, params: Params) -> Response:
        return json_response(
            200, {"now": format_rfc3339(self.clock.now()), "manual": self.clock.manual}
        )

    def _post_clock(self, request: Request, params: Params) -> Response:
        if not isinstance(self.clock, ManualClock):
            return error_response(409, "SIM.CLOCK", "the clock is real; start with --clock manual")
        try:
            body = _body(request)
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
            return error_response(400, "SIM.BAD_REQUEST", str(exc))
        now = self.clock.advance(float(step))
        # Generate here, so the cost of a big step is not paid by the next query.
        self.store.advance_to(round(now * 1000))
        return json_response(200, {"now": format_rfc3339(now)})

    def _truth(self, request: Request, params: Params) -> Response:
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
            view = (params.get("view") or ["console"])[0]
            if view not in TRUTH_VIEWS:
                raise BadParameter(f"view: expected one of {', '.join(TRUTH_VIEWS)}")
        except BadParameter as exc:
            return error_response(400, "SIM.BAD_REQUEST", str(exc))
        now = self.clock.now()
        start, end = bounds
        templates = self.store.truth(
            round(start * 1000), round(end * 1000), round(now * 1000), held=view == "sender"
        )
        return json_response(
            200,
            {
                "now": format_rfc3339(now),
                "start_time": format_rfc3339(start),
                "end_time": format_rfc3339(end),
                "templates": templates,
            },
        )

    def _stats(self, request: Request, params: Params) -> Response:
        requests = self.counts.by_endpoint()
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
        return json_response(200, body)

    def _get_incidents(self, request: Request, params: Params) -> Response:
        return json_response(200, {"incidents": [i.to_wire() for i in self.store.incidents]})

    def _post_incident(self, request: Request, params: Params) -> Response:
        try:
            incident = self.store.add_incident(_body(request), round(self.clock.now() * 1000))
        except (BadParameter, ValueError) as exc:
            return error_response(400, "SIM.BAD_REQUEST", str(exc))
        return json_response(201, incident.to_wire())

    def _post_faults(self, request: Request, params: Params) -> Response:
        try:
            plan = parse_fault_plan(_body(request))
        except (BadParameter, ValueError) as exc:
            return error_response(400, "SIM.BAD_REQUEST", str(exc))
        self.faults.set(plan)
        return json_response(200, plan.to_wire())

    def _delete_faults(self, request: Request, params: Params) -> Response:
        self.faults.set(type(self.faults.plan)())
        return json_response(200, self.faults.plan.to_wire())
