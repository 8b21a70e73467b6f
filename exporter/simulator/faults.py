"""Fault injection on the API endpoints: error statuses, latency, malformed bodies.

Faults are drawn from their own generator, so they never disturb the traffic.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

API_ENDPOINTS = ("send-details", "templates")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What to inject, on which endpoints."""

    error_share: dict[int, float] = field(default_factory=dict)
    latency_seconds: float = 0.0
    malformed_share: float = 0.0
    endpoints: tuple[str, ...] = API_ENDPOINTS

    def to_wire(self) -> dict[str, Any]:
        """The plan as the control API shows it."""
        return {
            "error_share": {str(k): v for k, v in sorted(self.error_share.items())},
            "latency_seconds": self.latency_seconds,
            "malformed_share": self.malformed_share,
            "endpoints": list(self.endpoints),
        }


@dataclass(frozen=True, slots=True)
class FaultDraw:
    """The faults one request gets."""

    latency_seconds: float = 0.0
    error_status: int | None = None
    malformed: str | None = None


def _share(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{where}: expected a number in [0, 1]")
    return float(value)


def parse_fault_plan(body: object) -> FaultPlan:
    """Validate a POST /-/faults body; ValueError names the bad field."""
    if not isinstance(body, Mapping):
        raise ValueError("body: expected a JSON object")
    unknown = sorted(set(body) - {"error_share", "latency_seconds", "malformed_share", "endpoints"})
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
    latency = body.get("latency_seconds", 0.0)
    if isinstance(latency, bool) or not isinstance(latency, int | float) or not 0 <= latency <= 60:
        raise ValueError("latency_seconds: expected a number in [0, 60]")
    endpoints = body.get("endpoints", list(API_ENDPOINTS))
    if not isinstance(endpoints, list) or not all(e in API_ENDPOINTS for e in endpoints):
        raise ValueError(f"endpoints: expected a list of {', '.join(API_ENDPOINTS)}")
    return FaultPlan(
        error_share=errors,
        latency_seconds=float(latency),
        malformed_share=_share(body.get("malformed_share", 0.0), "malformed_share"),
        endpoints=tuple(endpoints),
    )


class Faults:
    """The current plan and the generator its draws come from."""

    def __init__(self, seed: int) -> None:
        self.plan = FaultPlan()
        self._rng = random.Random(seed ^ 0x5EED_FA17)
        self._lock = threading.Lock()

    def set(self, plan: FaultPlan) -> None:
        """Replace the plan."""
        with self._lock:
            self.plan = plan

    def draw(self, endpoint: str) -> FaultDraw:
        """The faults for one request to ``endpoint``."""
        with self._lock:
            plan = self.plan
            if endpoint not in plan.endpoints:
                return FaultDraw()
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
            return FaultDraw(plan.latency_seconds, status, malformed)


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
