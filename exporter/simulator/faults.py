"""Fault injection on the API endpoints: what a real upstream does on a bad day.

A plan (``POST /-/faults``) has the first version's shares (error statuses, latency,
malformed bodies) plus ordered ``rules``. Each request takes the first rule whose
endpoint matches, whose ``share`` draw hits and whose ``count`` is not used up:

    {"rules": [{"fault": "status", "status": 503, "count": 3},
               {"fault": "status", "status": 429, "retry_after": null, "count": 1},
               {"fault": "reset", "share": 0.05},
               {"fault": "template_deleted", "template_id": "SMS_001"}]}

Fault kinds: ``status`` (any 4xx/5xx, ``retry_after`` seconds or null for none),
``reset`` (close the socket without answering), ``slow`` (sleep ``seconds`` first),
``truncated`` (cut JSON), ``wrong_page_types`` (``total`` as a string),
``wrong_types`` / ``missing_fields`` / ``unknown_send_result`` / ``unknown_status_code``
(one record broken), ``duplicate_records`` (a page starts ``shift`` records early),
``shift_records`` (a record appears before the page: total grows, records move on),
``total_behind`` (``total`` counts ``shift`` records fewer than there are: a count taken
before the newest records landed),
``template_deleted`` (gone from the list; details answer 404 when ``not_found``),
``clock_skew`` (the gateway's clock is ``seconds`` off, its ``Date`` too: APIG.0303
beyond 15 minutes), ``expired_token``
(APIG.0307), ``busy`` (the one-query-at-a-time 429). Faults are drawn from their own
generator, so they never disturb the traffic.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from exporter.contract import whole_number

API_ENDPOINTS = ("send-details", "templates")
_LEGACY_FIELDS = {"error_share", "latency_seconds", "malformed_share", "endpoints"}
_DEFAULT_RETRY_AFTER = -1.0
"""``retry_after`` not given: ``Retry-After: 1`` on 429 and 503, as the first plan did."""


class FaultKind(StrEnum):
    """What a rule does to a request."""

    STATUS = "status"
    RESET = "reset"
    SLOW = "slow"
    TRUNCATED = "truncated"
    WRONG_PAGE_TYPES = "wrong_page_types"
    WRONG_TYPES = "wrong_types"
    MISSING_FIELDS = "missing_fields"
    UNKNOWN_SEND_RESULT = "unknown_send_result"
    UNKNOWN_STATUS_CODE = "unknown_status_code"
    DUPLICATE_RECORDS = "duplicate_records"
    SHIFT_RECORDS = "shift_records"
    TOTAL_BEHIND = "total_behind"
    TEMPLATE_DELETED = "template_deleted"
    CLOCK_SKEW = "clock_skew"
    EXPIRED_TOKEN = "expired_token"  # noqa: S105 - a fault name, not a secret
    BUSY = "busy"


_LATER_PAGES = (FaultKind.DUPLICATE_RECORDS, FaultKind.SHIFT_RECORDS)
"""Faults that only make sense on a page after the first."""
RECORD_FAULTS = (
    FaultKind.WRONG_TYPES,
    FaultKind.MISSING_FIELDS,
    FaultKind.UNKNOWN_SEND_RESULT,
    FaultKind.UNKNOWN_STATUS_CODE,
)
"""Faults that break one record of a page."""
_RULE_FIELDS = {
    "fault",
    "share",
    "count",
    "endpoints",
    "status",
    "retry_after",
    "seconds",
    "shift",
    "template_id",
    "not_found",
}


@dataclass(frozen=True, slots=True)
class FaultRule:
    """One kind of fault, on a share of matching requests, at most ``count`` times."""

    fault: FaultKind
    share: float = 1.0
    count: int | None = None
    endpoints: tuple[str, ...] = API_ENDPOINTS
    status: int = 503
    retry_after: float | None = _DEFAULT_RETRY_AFTER
    seconds: float = 0.0
    shift: int = 1
    template_id: str = ""
    not_found: bool = True

    def to_wire(self) -> dict[str, Any]:
        """The rule as the control API shows it."""
        out: dict[str, Any] = {
            "fault": self.fault.value,
            "share": self.share,
            "count": self.count,
            "endpoints": list(self.endpoints),
        }
        if self.fault is FaultKind.STATUS:
            out["status"] = self.status
        if self.fault in (FaultKind.STATUS, FaultKind.BUSY):
            out["retry_after"] = None if self.retry_after is None else self.retry_after
        if self.fault in (FaultKind.SLOW, FaultKind.CLOCK_SKEW):
            out["seconds"] = self.seconds
        if self.fault in (
            FaultKind.DUPLICATE_RECORDS,
            FaultKind.SHIFT_RECORDS,
            FaultKind.TOTAL_BEHIND,
        ):
            out["shift"] = self.shift
        if self.fault is FaultKind.TEMPLATE_DELETED:
            out["template_id"] = self.template_id
            out["not_found"] = self.not_found
        return out

    def retry_after_header(self) -> dict[str, str]:
        """The ``Retry-After`` header this rule's answer carries, if any."""
        if self.retry_after == _DEFAULT_RETRY_AFTER:
            status = 429 if self.fault is FaultKind.BUSY else self.status
            return {"Retry-After": "1"} if status in (429, 503) else {}
        if self.retry_after is None:
            return {}
        return {"Retry-After": f"{self.retry_after:g}"}


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What to inject, on which endpoints."""

    error_share: dict[int, float] = field(default_factory=dict)
    latency_seconds: float = 0.0
    malformed_share: float = 0.0
    endpoints: tuple[str, ...] = API_ENDPOINTS
    rules: tuple[FaultRule, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        """The plan as the control API shows it."""
        return {
            "error_share": {str(k): v for k, v in sorted(self.error_share.items())},
            "latency_seconds": self.latency_seconds,
            "malformed_share": self.malformed_share,
            "endpoints": list(self.endpoints),
            "rules": [r.to_wire() for r in self.rules],
        }


@dataclass(frozen=True, slots=True)
class FaultDraw:
    """The faults one request gets."""

    latency_seconds: float = 0.0
    error_status: int | None = None
    malformed: str | None = None
    rule: FaultRule | None = None


def _share(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{where}: expected a number in [0, 1]")
    return float(value)


def _seconds(value: object, where: str, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high:
        raise ValueError(f"{where}: expected a number in [0, {high:g}]")
    return float(value)


def _endpoints(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(e in API_ENDPOINTS for e in value):
        raise ValueError(f"{where}: expected a list of {', '.join(API_ENDPOINTS)}")
    return tuple(value)


def _rule(raw: object, where: str) -> FaultRule:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected an object")
    unknown = sorted(set(raw) - _RULE_FIELDS)
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown field")
    try:
        kind = FaultKind(str(raw.get("fault")))
    except ValueError:
        raise ValueError(f"{where}.fault: expected one of {', '.join(FaultKind)}") from None
    count = raw.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"{where}.count: expected a positive integer or null")
    status = raw.get("status", 503)
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"{where}.status: expected an HTTP status 400..599")
    retry_after: float | None = _DEFAULT_RETRY_AFTER
    if "retry_after" in raw:
        value = raw["retry_after"]
        retry_after = None if value is None else _seconds(value, f"{where}.retry_after", 86400)
    shift = raw.get("shift", 1)
    if isinstance(shift, bool) or not isinstance(shift, int) or not 1 <= shift <= 100:
        raise ValueError(f"{where}.shift: expected an integer in [1, 100]")
    template_id = raw.get("template_id", "")
    if not isinstance(template_id, str) or (kind is FaultKind.TEMPLATE_DELETED and not template_id):
        raise ValueError(f"{where}.template_id: expected a template id")
    not_found = raw.get("not_found", True)
    if not isinstance(not_found, bool):
        raise ValueError(f"{where}.not_found: expected true or false")
    default_seconds = 1800.0 if kind is FaultKind.CLOCK_SKEW else 0.0
    return FaultRule(
        fault=kind,
        share=_share(raw.get("share", 1.0), f"{where}.share"),
        count=count,
        endpoints=_endpoints(raw.get("endpoints", list(API_ENDPOINTS)), f"{where}.endpoints"),
        status=status,
        retry_after=retry_after,
        seconds=_seconds(raw.get("seconds", default_seconds), f"{where}.seconds", 86400),
        shift=shift,
        template_id=template_id,
        not_found=not_found,
    )


def parse_fault_plan(body: object) -> FaultPlan:
    """Validate a POST /-/faults body; ValueError names the bad field."""
    if not isinstance(body, Mapping):
        raise ValueError("body: expected a JSON object")
    unknown = sorted(set(body) - _LEGACY_FIELDS - {"rules"})
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field")
    raw = body.get("error_share", {})
    if not isinstance(raw, Mapping):
        raise ValueError("error_share: expected an object of HTTP status to share")
    errors: dict[int, float] = {}
    for key, value in raw.items():
        if not str(key).isdigit() or not 400 <= int(key) <= 599:
            raise ValueError(f"error_share.{key}: expected an HTTP status 400..599")
        errors[int(key)] = _share(value, f"error_share.{key}")
    if sum(errors.values()) > 1:
        raise ValueError("error_share: shares must add up to at most 1")
    latency = _seconds(body.get("latency_seconds", 0.0), "latency_seconds", 60)
    rules = body.get("rules", [])
    if not isinstance(rules, list):
        raise ValueError("rules: expected a list of fault rules")
    return FaultPlan(
        error_share=errors,
        latency_seconds=latency,
        malformed_share=_share(body.get("malformed_share", 0.0), "malformed_share"),
        endpoints=_endpoints(body.get("endpoints", list(API_ENDPOINTS)), "endpoints"),
        rules=tuple(_rule(r, f"rules[{i}]") for i, r in enumerate(rules)),
    )


class Faults:
    """The current plan, what is left of each rule's count, and the generator."""

    def __init__(self, seed: int) -> None:
        self.plan = FaultPlan()
        self._left: list[int | None] = []
        self._rng = random.Random(seed ^ 0x5EED_FA17)
        self._lock = threading.Lock()

    def set(self, plan: FaultPlan) -> None:
        """Replace the plan."""
        with self._lock:
            self.plan = plan
            self._left = [r.count for r in plan.rules]

    def deleted_templates(self) -> dict[str, bool]:
        """Templates deleted upstream → whether their details answer 404."""
        with self._lock:
            return {
                r.template_id: r.not_found
                for r in self.plan.rules
                if r.fault is FaultKind.TEMPLATE_DELETED
            }

    def refund(self, rule: FaultRule) -> None:
        """Give a counted rule its use back (it found nothing to break)."""
        with self._lock:
            for index, candidate in enumerate(self.plan.rules):
                left = self._left[index]
                if candidate is rule and left is not None:
                    self._left[index] = left + 1
                    return

    def _take_rule(self, endpoint: str, offset: int) -> FaultRule | None:
        for index, rule in enumerate(self.plan.rules):
            if rule.fault is FaultKind.TEMPLATE_DELETED or endpoint not in rule.endpoints:
                continue
            if rule.fault in _LATER_PAGES and offset == 0:
                continue
            left = self._left[index]
            if left is not None and left <= 0:
                continue
            if rule.share < 1 and self._rng.random() >= rule.share:
                continue
            if left is not None:
                self._left[index] = left - 1
            return rule
        return None

    def draw(self, endpoint: str, offset: int = 0) -> FaultDraw:
        """The faults for one request to ``endpoint`` (``offset``: its page's offset)."""
        with self._lock:
            plan = self.plan
            rule = self._take_rule(endpoint, offset)
            if endpoint not in plan.endpoints:
                return FaultDraw(rule=rule)
            u = self._rng.random()
            status = None
            for code, share in sorted(plan.error_share.items()):
                if u < share:
                    status = code
                    break
                u -= share
            malformed = None
            if status is None and self._rng.random() < plan.malformed_share:
                malformed = self._rng.choice(("truncated", "wrong_types"))
            return FaultDraw(plan.latency_seconds, status, malformed, rule)


def malform(body: dict[str, Any], how: str) -> bytes:
    """A broken rendering of ``body``: cut-off JSON, or fields of the wrong type."""
    if how == "truncated":
        text = json.dumps(body).encode()
        return text[: max(1, len(text) // 2)]
    broken = dict(body)
    if "total" in broken:
        broken["total"] = str(broken["total"])
    for key in ("records", "results"):
        items = broken.get(key)
        if isinstance(items, list) and items:
            first = dict(items[0])
            for name in ("send_time", "segments", "template_id"):
                if name in first:
                    first[name] = [first[name]]
            broken[key] = [first, *items[1:]]
    return json.dumps(broken).encode()


def _break_first_record(body: dict[str, Any], kind: FaultKind) -> dict[str, Any]:
    records = body.get("records")
    if not isinstance(records, list) or not records:
        return body
    first = dict(records[0])
    if kind is FaultKind.WRONG_TYPES:
        first["send_time"] = 1764151200
    elif kind is FaultKind.MISSING_FIELDS:
        first.pop("send_result", None)
    elif kind is FaultKind.UNKNOWN_SEND_RESULT:
        first["send_result"] = "queued"
    elif kind is FaultKind.UNKNOWN_STATUS_CODE:
        first.update(send_result="failed", status_code="ZZ:9999", receive_time=None)
    return {**body, "records": [first, *records[1:]]}


def corrupt_body(body: dict[str, Any], rule: FaultRule) -> bytes | None:
    """The rule's broken rendering of a good answer, or None when it leaves bodies alone.

    Faults on records need a record: on an empty page they return None.
    """
    kind = rule.fault
    if kind in RECORD_FAULTS and not body.get("records"):
        return None
    if kind is FaultKind.TRUNCATED:
        return malform(body, "truncated")
    if kind is FaultKind.WRONG_PAGE_TYPES:
        total = body.get("total")
        return json.dumps({**body, "total": str(total)}).encode()
    if kind in RECORD_FAULTS:
        return json.dumps(_break_first_record(body, kind)).encode()
    if kind is FaultKind.SHIFT_RECORDS and "total" in body:
        # A record was inserted before this page: the total grows by ``shift``.
        return json.dumps({**body, "total": body["total"] + rule.shift}).encode()
    if kind is FaultKind.TOTAL_BEHIND and "total" in body:
        return json.dumps({**body, "total": max(0, body["total"] - rule.shift)}).encode()
    return None


def shift_offset(params: dict[str, list[str]], rule: FaultRule | None) -> dict[str, list[str]]:
    """Query parameters as a drifting upstream reads them: the page starts ``shift`` early.

    Both a duplicate at a page boundary and an insertion before the page put records the
    client has already seen at the top of the next page.
    """
    if rule is None or rule.fault not in (FaultKind.DUPLICATE_RECORDS, FaultKind.SHIFT_RECORDS):
        return params
    values = params.get("offset", ["0"])
    offset = whole_number(values[0], 10**9) if len(values) == 1 else None
    if offset is None:
        return params
    return {**params, "offset": [str(max(0, offset - rule.shift))]}
