"""The sending-details contract's query parameters and answer, as pure functions.

``GET /api/v1/send-details`` is served by the simulator (from its generated traffic)
and, when the receiver is configured with ``details_api: true``, by the exporter (from
its push store). Both read parameters with :func:`parse_details_query` and answer with
:func:`page_to_wire`, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporter.errors import BadParameter
from exporter.records import (
    DETAILS_PATH,
    MOBILE_PATTERN,
    DetailsPage,
    DetailsQuery,
    SendResult,
    record_to_wire,
)
from exporter.timestamps import parse_rfc3339

__all__ = [
    "DETAILS_PATH",
    "BadParameter",
    "QueryLimits",
    "error_code_for",
    "error_to_wire",
    "page_to_wire",
    "parse_details_query",
]

DETAILS_PARAMS = frozenset(
    {"template_id", "mobile", "send_result", "start_time", "end_time", "offset", "limit"}
)


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """The console's limits on a sending-details query."""

    max_span_seconds: float = 24 * 3600
    lookback_seconds: float = 60 * 86400
    max_limit: int = 100


# One code per violated rule, as the console tells them apart (documented in openapi.yaml).
BAD_PARAMETER = BadParameter.error_code
BAD_TIME = "MSGSMS.0410"
BAD_TIME_ORDER = "MSGSMS.0411"
SPAN_TOO_LONG = "MSGSMS.0412"
BEYOND_LOOKBACK = "MSGSMS.0413"
BAD_PAGE = "MSGSMS.0414"
BAD_MOBILE = "MSGSMS.0415"
BAD_SEND_RESULT = "MSGSMS.0416"


def human_duration(seconds: float) -> str:
    """``86400`` → ``24 hours``, ``5184000`` → ``60 days``, ``90`` → ``90 seconds``."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0 and (unit != "day" or seconds > size):
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"


def shown_name(name: str) -> str:
    """A parameter's name as an error names it: bounded (URLs reach 64 KiB), never blank."""
    if not name:
        return "(a parameter without a name)"
    return name if len(name) <= 40 else f"{name[:40]}..."


def single(params: Mapping[str, list[str]], name: str) -> str | None:
    """The parameter's one value (None when absent); BadParameter when repeated."""
    values = params.get(name)
    if values is None:
        return None
    if len(values) != 1:
        raise BadParameter(f"{name}: give it once")
    return values[0]


def whole_number(text: str, high: int) -> int | None:
    """``text`` as a number in [0, high] when it is ASCII digits, else None.

    Other scripts' digits (``²``, ``٣``) and thousands of digits (which ``int`` refuses
    past 4300) are not numbers here: they are refused, never a crash.
    """
    if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > len(str(high)):
        return None
    value = int(text)
    return value if value <= high else None


def integer(params: Mapping[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    """An integer parameter within [low, high]."""
    text = single(params, name)
    if text is None:
        return default
    value = whole_number(text, high)
    if value is None or value < low:
        raise BadParameter(f"{name}: expected an integer in [{low}, {high}]", BAD_PAGE)
    return value


def _time(params: Mapping[str, list[str]], name: str) -> float:
    text = single(params, name)
    if text is None:
        raise BadParameter(f"{name}: required (RFC 3339, e.g. 2026-11-26T10:00:00Z)", BAD_TIME)
    try:
        return parse_rfc3339(text)
    except ValueError:
        # Not the parser's words: they may name Python internals (timedelta, isoformat).
        raise BadParameter(
            f"{name}: not an RFC 3339 time (e.g. 2026-11-26T10:00:00Z): {text[:40]!r}", BAD_TIME
        ) from None


def parse_details_query(
    params: Mapping[str, list[str]], now: float, limits: QueryLimits
) -> DetailsQuery:
    """The query the parameters ask for; BadParameter names the first offending one."""
    unknown = sorted(set(params) - DETAILS_PARAMS)
    if unknown:
        raise BadParameter(f"{shown_name(unknown[0])}: unknown parameter")
    start, end = _time(params, "start_time"), _time(params, "end_time")
    if end <= start:
        raise BadParameter("end_time: must be after start_time", BAD_TIME_ORDER)
    if end - start > limits.max_span_seconds:
        span = human_duration(limits.max_span_seconds)
        raise BadParameter(f"end_time: the query spans more than {span}", SPAN_TOO_LONG)
    if start < now - limits.lookback_seconds:
        back = human_duration(limits.lookback_seconds)
        raise BadParameter(f"start_time: older than {back} before now", BEYOND_LOOKBACK)
    offset = integer(params, "offset", 0, 0, 10**9)
    limit = integer(params, "limit", 10, 1, limits.max_limit)
    mobile = single(params, "mobile")
    if mobile is not None and not MOBILE_PATTERN.fullmatch(mobile):
        raise BadParameter("mobile: expected digits with the country code, no '+'", BAD_MOBILE)
    result = single(params, "send_result")
    if result is not None and result not in {r.value for r in SendResult}:
        raise BadParameter("send_result: expected success, failed or sending", BAD_SEND_RESULT)
    template_id = single(params, "template_id")
    if template_id is not None and not template_id:
        raise BadParameter("template_id: must not be empty")
    if template_id is not None and not template_id.isprintable():
        # A NUL reached PostgreSQL as a store error (503, counted against the store).
        raise BadParameter("template_id: must not hold control characters")
    return DetailsQuery(
        start,
        end,
        template_id,
        mobile=mobile,
        send_result=None if result is None else SendResult(result),
        offset=offset,
        limit=limit,
    )


def page_to_wire(query: DetailsQuery, page: DetailsPage) -> dict[str, Any]:
    """The contract's JSON answer for one page."""
    return {
        "total": page.total,
        "offset": query.offset,
        "limit": query.limit,
        "records": [record_to_wire(r) for r in page.records],
    }


_GATEWAY_CODES = {401: "APIG.0301", 404: "APIG.0101"}
"""Refusals the gateway makes before the service sees the request (openapi.yaml)."""


def error_code_for(status: int) -> str:
    """The contract's code for a refusal known only by its status: ``APIG.0101`` (404,
    unknown API), ``APIG.0301`` (401), else ``MSGSMS.0<status>`` (``MSGSMS.0405``...)."""
    return _GATEWAY_CODES.get(status, f"MSGSMS.{status:04d}")


def error_to_wire(code: str, message: str) -> dict[str, str]:
    """The contract's JSON error body."""
    return {"error_code": code, "error_msg": message}
