"""Huawei's template list as the platform serves it: every field of the SDK's model, filters, order.

``GET /v2/{project_id}/msgsms/templates`` answers ``{"results": [...], "total": n}``, newest
first by default; ``GET /v2/{project_id}/msgsms/templates/{id}`` answers one of them by its
primary key (the SDK's ``show_template``). Each result carries the fields of the official
SDK's ``SmsTemplateResp`` with values derived from the scenario (stable ids, so the same
scenario always lists the same templates). A bad filter is refused with ``MSGSMS.0002``
naming the parameter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from exporter.contract import BadParameter, integer, single
from exporter.simulator.scenario import Scenario
from exporter.simulator.template_specs import (
    COUNTRY_NAMES,
    FLOW_STATUSES,
    TEMPLATE_TYPES,
    TemplateSpec,
)

TEMPLATE_PAGE_MAX = 500
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
INVALID_PARAMETER = "MSGSMS.0002"
TEMPLATE_NOT_FOUND = "MSGSMS.0036"
_FIRST_CREATED = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
_REVIEW_TIME = timedelta(hours=2, minutes=14)
_CONTENT = {
    "VERIFY_CODE_TYPE": "Your verification code is ${NUM_6}. It expires in 5 minutes.",
    "NOTIFY_TYPE": "Hello ${TXT_20}, your request ${TXT_32} has been updated.",
    "PROMOTION_TYPE": "This weekend only: ${TXT_20} off. Reply TD to unsubscribe.",
}
_REVIEW = {"Adopted": "Approved.", "Reject": "The content does not meet the specifications."}


class InvalidTemplateQuery(BadParameter):
    """A template-list parameter Huawei refuses; the message names it."""

    error_code = INVALID_PARAMETER


class TemplateNotFound(BadParameter):
    """No template has that primary key (Huawei's words for it)."""

    error_code = TEMPLATE_NOT_FOUND

    def __init__(self) -> None:
        super().__init__("Message template is not found")


def _hex(*parts: str, size: int = 16) -> str:
    return hashlib.blake2b(":".join(parts).encode(), digest_size=size).hexdigest()


def _uuid(*parts: str) -> str:
    h = _hex(*parts)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def created_at(spec: TemplateSpec, index: int) -> datetime:
    """When the template was created: the scenario's, or three days after the one before."""
    if spec.create_time is not None:
        return datetime.strptime(spec.create_time, TIME_FORMAT).replace(tzinfo=UTC)
    return _FIRST_CREATED + timedelta(days=3 * index)


def template_content(spec: TemplateSpec) -> str:
    """The template's text with its ``${...}`` variables: the scenario's, or one by type."""
    return spec.content or _CONTENT[spec.template_type]


def template_to_wire(scenario: Scenario, spec: TemplateSpec, index: int) -> dict[str, Any]:
    """One result with every field of the SDK's SmsTemplateResp."""
    project = scenario.project_id
    created = created_at(spec, index)
    customer = _hex("customer", project)
    content = template_content(spec)
    countries = [int(c) for c in spec.countries[:3]] + [None, None, None]
    signed = spec.region == "cn"
    return {
        "id": _uuid("template", project, spec.template_id),
        "create_time": created.strftime(TIME_FORMAT),
        "update_time": (created + _REVIEW_TIME).strftime(TIME_FORMAT),
        "customer_id": customer,
        "tenant": {
            "customer_id": customer,
            "customer_name": "simulator",
            "enterprise_name": "Simulator Ltd.",
        },
        "template_name": spec.name,
        "template_id": spec.template_id,
        "template_type": spec.template_type,
        "app_name": spec.app_name,
        "app_key": _hex("app", project, spec.app_name),
        "sign_id": _uuid("sign", project, spec.sign_name) if signed else None,
        "template_content": content,
        "has_variable": "Yes" if "${" in content else "No",
        "template_desc": f"{spec.name}, sent by {spec.app_name}.",
        "review_desc": _REVIEW.get(spec.flow_status),
        "review_order": None,
        "flow_status": spec.flow_status,
        "universal_template": 0,
        "status": "Normal",
        "region": spec.region,
        "brackets": "CN" if signed else "GB",
        "site": "cn-north-4" if signed else "ap-southeast-1",
        "urge_status": None,
        "urge_time": None,
        "urge_desc": None,
        "send_country1": countries[0],
        "send_country2": countries[1],
        "send_country3": countries[2],
        "is_support_multiomp": False,
        "country_name": "~".join(COUNTRY_NAMES[c] for c in spec.countries[:3]),
    }


def _choice(params: Mapping[str, list[str]], name: str, allowed: tuple[str, ...]) -> str | None:
    value = single(params, name)
    if value is not None and value not in allowed:
        raise InvalidTemplateQuery(f"{name}: expected one of {', '.join(allowed)}")
    return value


def _time(params: Mapping[str, list[str]], name: str) -> datetime | None:
    value = single(params, name)
    if value is None:
        return None
    try:
        return datetime.strptime(value, TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise InvalidTemplateQuery(f"{name}: expected yyyy-MM-dd HH:mm:ss") from None


def _contains(value: str | None, wanted: str | None) -> bool:
    return wanted is None or (value is not None and wanted.lower() in value.lower())


def list_templates(
    scenario: Scenario,
    params: Mapping[str, list[str]],
    hidden: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Answer the template list; InvalidTemplateQuery names a refused parameter."""
    try:
        return _listed(scenario, params, hidden)
    except InvalidTemplateQuery:
        raise
    except BadParameter as exc:  # a repeated or malformed parameter: Huawei's one code
        raise InvalidTemplateQuery(str(exc)) from exc


def _listed(
    scenario: Scenario, params: Mapping[str, list[str]], hidden: frozenset[str]
) -> dict[str, Any]:
    limit = integer(params, "limit", 10, 1, TEMPLATE_PAGE_MAX)
    offset = integer(params, "offset", 0, 0, 10**9)
    template_type = _choice(params, "template_type", TEMPLATE_TYPES)
    flow_status = _choice(params, "flow_status", FLOW_STATUSES)
    region = _choice(params, "region", ("cn", "intl"))
    has_variable = _choice(params, "has_variable", ("Yes", "No"))
    _choice(params, "sort_key", ("create_time",))
    descending = _choice(params, "sort_dir", ("asc", "desc")) != "asc"
    start, end = _time(params, "start_time"), _time(params, "end_time")
    if start is not None and end is not None and end < start:
        raise InvalidTemplateQuery("end_time: must not be before start_time")
    exact = {name: single(params, name) for name in ("template_id", "app_key")}
    fuzzy = {name: single(params, name) for name in ("template_name", "app_name", "sign_name")}
    rows = []
    for index, spec in enumerate(scenario.templates):
        if spec.template_id in hidden:
            continue
        row = template_to_wire(scenario, spec, index)
        created = created_at(spec, index)
        sign_name = spec.sign_name if spec.region == "cn" else None
        if (
            all(wanted is None or row[name] == wanted for name, wanted in exact.items())
            and _contains(spec.name, fuzzy["template_name"])
            and _contains(spec.app_name, fuzzy["app_name"])
            and _contains(sign_name, fuzzy["sign_name"])
            and template_type in (None, spec.template_type)
            and flow_status in (None, spec.flow_status)
            and region in (None, spec.region)
            and has_variable in (None, row["has_variable"])
            and (start is None or created >= start)
            and (end is None or created <= end)
        ):
            rows.append((created, index, row))
    rows.sort(key=lambda r: (r[0], r[1]), reverse=descending)
    return {"results": [row for _, _, row in rows[offset : offset + limit]], "total": len(rows)}


def show_template(
    scenario: Scenario, key: str, hidden: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """``GET /v2/{project_id}/msgsms/templates/{id}``: the template whose primary key is
    ``key`` (its ``id``, not the ``template_id`` used when sending), or TemplateNotFound."""
    for index, spec in enumerate(scenario.templates):
        if (
            spec.template_id not in hidden
            and _uuid("template", scenario.project_id, spec.template_id) == key
        ):
            return template_to_wire(scenario, spec, index)
    raise TemplateNotFound
