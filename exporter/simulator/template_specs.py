"""The scenario's templates: what each sends, where, and how Huawei would list it.

International (``intl``) templates are ``NOTIFY_TYPE`` only and never send to the
Chinese mainland; mainland (``cn``) templates send there only. Problems are reported
with their location, all together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exporter.simulator.scenario_reader import Reader, at

TEMPLATE_TYPES = ("VERIFY_CODE_TYPE", "PROMOTION_TYPE", "NOTIFY_TYPE")
FLOW_STATUSES = (
    "Adopted",
    "Reviewing",
    "Reject",
    "Disable",
    "Pending",
    "Adopted_inactive",
    "SignReviewing",
)
MAINLAND = "86"
"""The one country of ``cn`` templates; ``intl`` templates send everywhere else."""


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """One template and how it sends."""

    template_id: str
    name: str
    template_type: str
    region: str
    rate_per_hour: float
    failure_share: float
    failure_mix: dict[str, float]
    countries: tuple[str, ...]
    flow_status: str = "Adopted"
    review_hold_weight: float = 1.0
    app_name: str = "simulator-app"
    sign_name: str = "Simulator"
    content: str | None = None
    create_time: str | None = None
    """``yyyy-MM-dd HH:mm:ss``; None: derived from the template's place in the scenario."""


_TEMPLATE_KEYS = {
    "template_id",
    "name",
    "type",
    "region",
    "rate_per_hour",
    "failure_share",
    "failure_mix",
    "countries",
    "flow_status",
    "review_hold_weight",
    "app_name",
    "sign_name",
    "content",
    "create_time",
}
_GENERATED_KEYS = {"count", "total_rate_per_hour", "zipf_exponent", "failure_share", "countries"}


def parse_templates(r: Reader, top: Mapping[str, Any], mix: dict[str, float]) -> list[TemplateSpec]:
    """The scenario's templates, listed and generated; problems go to ``r``."""
    raw = top.get("templates", [])
    if not isinstance(raw, list):
        r.problems.append("templates: expected a list")
        raw = []
    out = [_template(r, item, f"templates[{i}]", mix) for i, item in enumerate(raw)]
    if "generated_templates" in top:
        out.extend(_generated(r, top["generated_templates"], mix))
    seen: set[str] = set()
    for i, spec in enumerate(out):
        if spec.template_id in seen:
            r.problems.append(f"templates[{i}].template_id: duplicate {spec.template_id!r}")
        seen.add(spec.template_id)
    if not out and not r.problems:
        r.problems.append("templates: expected at least one template")
    return out


def _countries(
    r: Reader, obj: Mapping[str, Any], where: str, region: str = "intl"
) -> tuple[str, ...]:
    default = [MAINLAND] if region == "cn" else ["44", "49", "33"]
    value = obj.get("countries", default)
    ok = isinstance(value, list) and value and all(isinstance(c, str) for c in value)
    if not ok or not all(c in COUNTRY_PLANS for c in value):
        known = ", ".join(sorted(COUNTRY_PLANS))
        r.problems.append(f"{at(where, 'countries')}: expected a list of country codes ({known})")
        return tuple(default)
    if region == "cn" and value != [MAINLAND]:
        r.problems.append(f"{at(where, 'countries')}: a cn template sends to {MAINLAND} only")
    if region == "intl" and MAINLAND in value:
        r.problems.append(f"{at(where, 'countries')}: an intl template cannot send to {MAINLAND}")
    return tuple(value)


def _created(value: str) -> bool:
    try:
        datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return False
    return True


def _template(r: Reader, obj: object, where: str, mix: dict[str, float]) -> TemplateSpec:
    t = r.mapping(obj, where, _TEMPLATE_KEYS)
    template_id = r.text(t, "template_id", where)
    template_type = r.choice(t, "type", where, "NOTIFY_TYPE", TEMPLATE_TYPES)
    # Huawei's international templates are NOTIFY_TYPE only; other types are mainland (cn).
    default_region = "intl" if template_type == "NOTIFY_TYPE" else "cn"
    region = r.text(t, "region", where, default_region, lambda s: s in ("cn", "intl"), "cn or intl")
    if region == "intl" and template_type != "NOTIFY_TYPE":
        r.problems.append(f"{at(where, 'type')}: an intl template is NOTIFY_TYPE only")
    content = t.get("content")
    return TemplateSpec(
        template_id=template_id,
        name=r.text(t, "name", where, template_id or "template"),
        template_type=template_type,
        region=region,
        rate_per_hour=r.number(t, "rate_per_hour", where, 0.0, 0.0, 1e8),
        failure_share=r.number(t, "failure_share", where, 0.02, 0.0, 1.0),
        failure_mix=r.mix(t["failure_mix"], at(where, "failure_mix"))
        if "failure_mix" in t
        else mix,
        countries=_countries(r, t, where, region),
        flow_status=r.choice(t, "flow_status", where, "Adopted", FLOW_STATUSES),
        review_hold_weight=r.number(t, "review_hold_weight", where, 1.0, 0.0, 1e6),
        app_name=r.text(t, "app_name", where, "simulator-app"),
        sign_name=r.text(t, "sign_name", where, "Simulator"),
        content=None if content is None else r.text(t, "content", where),
        create_time=r.text(t, "create_time", where, check=_created, expected="yyyy-MM-dd HH:mm:ss")
        if "create_time" in t
        else None,
    )


def _generated(r: Reader, obj: object, mix: dict[str, float]) -> list[TemplateSpec]:
    where = "generated_templates"
    g = r.mapping(obj, where, _GENERATED_KEYS)
    count = int(r.number(g, "count", where, 50, 1, 10000))
    total = r.number(g, "total_rate_per_hour", where, 1e6, 0.0, 1e9)
    exponent = r.number(g, "zipf_exponent", where, 1.0, 0.0, 10.0)
    failure = r.number(g, "failure_share", where, 0.02, 0.0, 1.0)
    countries = _countries(r, g, where)
    weights = [1.0 / (rank**exponent) for rank in range(1, count + 1)]
    norm = sum(weights)
    return [  # international senders: NOTIFY_TYPE is the only type there
        TemplateSpec(
            template_id=f"9e{rank:030x}",
            name=f"Generated template {rank}",
            template_type="NOTIFY_TYPE",
            region="intl",
            rate_per_hour=total * w / norm,
            failure_share=failure,
            failure_mix=mix,
            countries=countries,
        )
        for rank, w in enumerate(weights, start=1)
    ]


# Country code → (national number length, allowed first digits): realistic mobile ranges.
COUNTRY_PLANS: dict[str, tuple[int, str]] = {
    "1": (10, "2345689"),
    "33": (9, "67"),
    "44": (10, "7"),
    "49": (11, "1"),
    "65": (8, "89"),
    "86": (11, "1"),
    "91": (10, "6789"),
    "234": (10, "789"),
}
COUNTRY_NAMES: dict[str, str] = {
    "1": "United States",
    "33": "France",
    "44": "United Kingdom",
    "49": "Germany",
    "65": "Singapore",
    "86": "Chinese mainland",
    "91": "India",
    "234": "Nigeria",
}
