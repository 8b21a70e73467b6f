"""The two API endpoints' parameters and answers, as pure functions of the store.

``GET /api/v1/send-details`` (the project's contract) and
``GET /v2/{project_id}/msgsms/templates`` (Huawei's real template list).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporter.records import MOBILE_PATTERN, SendResult, record_to_wire
from exporter.simulator.scenario import TEMPLATE_TYPES, Scenario
from exporter.simulator.store import Filters, MessageStore
from exporter.templates import SmsTemplate, template_to_wire
from exporter.timestamps import parse_rfc3339

DETAILS_PARAMS = {
    "template_id",
    "mobile",
    "send_result",
    "start_time",
    "end_time",
    "offset",
    "limit",
}
TEMPLATE_PAGE_MAX = 500
TEMPLATE_CREATED = "2026-01-05 09:30:00"


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """The console's limits on a sending-details query."""

    max_span_seconds: float = 24 * 3600
    lookback_seconds: float = 60 * 86400
    max_limit: int = 100


class BadParameter(Exception):
    """A query parameter is missing or invalid; the message names it."""


def _single(params: Mapping[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    if values is None:
        return None
    if len(values) != 1:
        raise BadParameter(f"{name}: give it once")
    return values[0]


def _int(params: Mapping[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    text = _single(params, name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise BadParameter(f"{name}: expected an integer in [{low}, {high}]")
    return int(text)


def _time(params: Mapping[str, list[str]], name: str) -> float:
    text = _single(params, name)
    if text is None:
        raise BadParameter(f"{name}: required (RFC 3339, e.g. 2026-11-26T10:00:00Z)")
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        raise BadParameter(f"{name}: {exc}") from exc


def send_details(
    store: MessageStore,
    params: Mapping[str, list[str]],
    now: float,
    limits: QueryLimits,
) -> dict[str, Any]:
    """Answer a sending-details query; BadParameter names the offending parameter."""
    unknown = sorted(set(params) - DETAILS_PARAMS)
    if unknown:
        raise BadParameter(f"{unknown[0]}: unknown parameter")
    start, end = _time(params, "start_time"), _time(params, "end_time")
    if end <= start:
        raise BadParameter("end_time: must be after start_time")
    if end - start > limits.max_span_seconds:
        raise BadParameter(
            f"end_time: the query spans more than {limits.max_span_seconds:g} seconds"
        )
    if start < now - limits.lookback_seconds:
        raise BadParameter(f"start_time: older than {limits.lookback_seconds:g} seconds before now")
    offset = _int(params, "offset", 0, 0, 10**9)
    limit = _int(params, "limit", 10, 1, limits.max_limit)
    mobile = _single(params, "mobile")
    if mobile is not None and not MOBILE_PATTERN.match(mobile):
        raise BadParameter("mobile: expected digits with the country code, no '+'")
    result = _single(params, "send_result")
    if result is not None and result not in {r.value for r in SendResult}:
        raise BadParameter("send_result: expected success, failed or sending")
    template_id = _single(params, "template_id")
    if template_id is not None and not template_id:
        raise BadParameter("template_id: must not be empty")
    filters = Filters(
        start_ms=round(start * 1000),
        end_ms=round(end * 1000),
        template_id=template_id,
        mobile=None if mobile is None else int(mobile),
        send_result=None if result is None else SendResult(result),
    )
    total, records = store.query(filters, offset, limit, round(now * 1000))
    return {
        "total": total,
        "offset": offset,
        "limit": limit,
        "records": [record_to_wire(r) for r in records],
    }


def list_templates(
    scenario: Scenario,
    params: Mapping[str, list[str]],
    hidden: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Answer the template list with Huawei's shape and paging; ``hidden`` were deleted."""
    limit = _int(params, "limit", 10, 1, TEMPLATE_PAGE_MAX)
    offset = _int(params, "offset", 0, 0, 10**9)
    template_type = _single(params, "template_type")
    if template_type is not None and template_type not in TEMPLATE_TYPES:
        raise BadParameter(f"template_type: expected one of {', '.join(TEMPLATE_TYPES)}")
    template_id = _single(params, "template_id")
    name = _single(params, "template_name")
    flow_status = _single(params, "flow_status")
    region = _single(params, "region")
    matching = [
        (pk, spec)
        for pk, spec in enumerate(scenario.templates, start=1)
        if spec.template_id not in hidden
        and (template_id is None or spec.template_id == template_id)
        and (name is None or name in spec.name)
        and (template_type is None or spec.template_type == template_type)
        and (flow_status is None or spec.flow_status == flow_status)
        and (region is None or spec.region == region)
    ]
    results = []
    for pk, spec in matching[offset : offset + limit]:
        template = SmsTemplate(
            template_id=spec.template_id,
            template_name=spec.name,
            template_type=spec.template_type,
            flow_status=spec.flow_status,
            region=spec.region,
        )
        results.append(
            {
                **template_to_wire(template, pk),
                "status": "Normal",
                "app_name": "simulator-app",
                "create_time": TEMPLATE_CREATED,
                "update_time": TEMPLATE_CREATED,
            }
        )
    return {"results": results, "total": len(matching)}
