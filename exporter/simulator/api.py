"""The sending-details endpoint's parameters and answer, as a pure function of the store.

``GET /api/v1/send-details`` (the project's contract); Huawei's real template list,
``GET /v2/{project_id}/msgsms/templates``, is answered by :mod:`catalog`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exporter.contract import BadParameter, QueryLimits, page_to_wire, parse_details_query
from exporter.records import DetailsPage
from exporter.simulator.catalog import list_templates
from exporter.simulator.queries import Filters
from exporter.simulator.store import MessageStore

__all__ = ["BadParameter", "QueryLimits", "list_templates", "send_details"]


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
