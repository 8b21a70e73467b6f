"""The two API endpoints' parameters and answers, as pure functions of the store.

``GET /api/v1/send-details`` (the project's contract) and
``GET /v2/{project_id}/msgsms/templates`` (Huawei's real template list).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exporter.contract import (
    BadParameter,
    QueryLimits,
    integer,
    page_to_wire,
    parse_details_query,
    single,
)
from exporter.records import DetailsPage
from exporter.simulator.scenario import TEMPLATE_TYPES, Scenario
from exporter.simulator.store import Filters, MessageStore
from exporter.templates import SmsTemplate, template_to_wire

__all__ = ["BadParameter", "QueryLimits", "list_templates", "send_details"]

TEMPLATE_PAGE_MAX = 500
TEMPLATE_CREATED = "2026-01-05 09:30:00"


def send_details(
    store: MessageStore,
    params: Mapping[str, list[str]],
    now: float,
    limits: QueryLimits,
) -> dict[str, Any]:
    """Answer a sending-details query; BadParameter names the offending parameter."""
    query = parse_details_query(params, now, limits)
    filters = Filters(
        start_ms=round(query.start_time * 1000),
        end_ms=round(query.end_time * 1000),
        template_id=query.template_id,
        mobile=None if query.mobile is None else int(query.mobile),
        send_result=query.send_result,
    )
    total, records = store.query(filters, query.offset, query.limit, round(now * 1000))
    return page_to_wire(query, DetailsPage(total, records))


def list_templates(
    scenario: Scenario,
    params: Mapping[str, list[str]],
    hidden: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Answer the template list with Huawei's shape and paging; ``hidden`` were deleted."""
    limit = integer(params, "limit", 10, 1, TEMPLATE_PAGE_MAX)
    offset = integer(params, "offset", 0, 0, 10**9)
    template_type = single(params, "template_type")
    if template_type is not None and template_type not in TEMPLATE_TYPES:
        raise BadParameter(f"template_type: expected one of {', '.join(TEMPLATE_TYPES)}")
    template_id = single(params, "template_id")
    name = single(params, "template_name")
    flow_status = single(params, "flow_status")
    region = single(params, "region")
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
