"""Operator-injected incidents: a failure burst or a carrier delay, from now for a while."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporter.simulator.traffic import (
    CATEGORY_CODES,
    CODES,
    EXPIRED,
    Block,
    expire_overdue,
    rng_for,
)
from exporter.status_codes import DELIVERED_CODE, is_platform_code
from exporter.timestamps import format_rfc3339

_KEYS = {
    "template_id",
    "status_code",
    "category",
    "failure_share",
    "carrier_delay_seconds",
    "duration_seconds",
}


@dataclass(frozen=True, slots=True)
class Incident:
    """Messages of a template (or all) sent in [start, end) fail more or report late."""

    incident_id: int
    template_id: str | None
    start_ms: int
    end_ms: int
    codes: tuple[str, ...]
    weights: tuple[float, ...]
    failure_share: float
    carrier_delay_ms: int

    def to_wire(self) -> dict[str, Any]:
        """The incident as the control API shows it."""
        return {
            "id": self.incident_id,
            "template_id": self.template_id,
            "start_time": format_rfc3339(self.start_ms / 1000),
            "end_time": format_rfc3339(self.end_ms / 1000),
            "status_codes": list(self.codes),
            "failure_share": self.failure_share,
            "carrier_delay_seconds": self.carrier_delay_ms / 1000,
        }


def _number(body: Mapping[str, Any], key: str, low: float, high: float) -> float:
    value = body.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{key}: expected a number in [{low:g}, {high:g}]")
    return float(value)


def parse_incident(body: object, incident_id: int, now_ms: int, template_ids: set[str]) -> Incident:
    """Validate a POST /-/incidents body; ValueError names the bad field."""
    if not isinstance(body, Mapping):
        raise ValueError("body: expected a JSON object")
    unknown = sorted(set(body) - _KEYS)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field")
    template_id = body.get("template_id")
    if template_id is not None and (
        not isinstance(template_id, str) or template_id not in template_ids
    ):
        raise ValueError("template_id: not a template of the scenario")
    duration = _number(body, "duration_seconds", 0.001, 30 * 86400)
    share = _number(body, "failure_share", 0.0, 1.0)
    delay = _number(body, "carrier_delay_seconds", 0.0, 72 * 3600)
    code, category = body.get("status_code"), body.get("category")
    if share > 0:
        if isinstance(code, str) and code.strip() and category is None:
            cleaned = code.strip().upper()
            if cleaned == DELIVERED_CODE:
                raise ValueError("status_code: an incident needs a failure code")
            codes: tuple[tuple[str, float], ...] = ((cleaned, 1.0),)
        elif isinstance(category, str) and category in CATEGORY_CODES and code is None:
            codes = CATEGORY_CODES[category]
        else:
            known = ", ".join(CATEGORY_CODES)
            raise ValueError(f"status_code or category: give exactly one (categories: {known})")
    elif delay <= 0:
        raise ValueError("failure_share or carrier_delay_seconds: expected one of them > 0")
    else:
        codes = ()
    return Incident(
        incident_id=incident_id,
        template_id=template_id,
        start_ms=now_ms,
        end_ms=now_ms + round(duration * 1000),
        codes=tuple(c for c, _ in codes),
        weights=tuple(w for _, w in codes),
        failure_share=share,
        carrier_delay_ms=round(delay) * 1000,
    )


def apply_incident(block: Block, incident: Incident, template_id: str, seed: int) -> bool:
    """Rewrite the block's messages sent during the incident; True when any changed."""
    if incident.template_id not in (None, template_id):
        return False
    rng = rng_for(seed, "incident", incident.incident_id, template_id, block.chunk)
    interned = [CODES.intern(c) for c in incident.codes]
    changed = False
    for i, send in enumerate(block.send_ms):
        if not incident.start_ms <= send < incident.end_ms:
            continue
        if interned and rng.random() < incident.failure_share:
            k = rng.choices(range(len(interned)), weights=incident.weights)[0]
            block.codes[i] = interned[k]
            quick = is_platform_code(incident.codes[k])
            delay = rng.random() * 1.5 if quick else 1 + rng.random() * 20
            block.report_ms[i] = send + 1000 * max(1, round(delay))
            changed = True
        if incident.carrier_delay_ms and block.codes[i] != EXPIRED:
            block.report_ms[i] += incident.carrier_delay_ms
            expire_overdue(block, i)
            changed = True
    return changed
