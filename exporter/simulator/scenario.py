"""The scenario file: templates, send rates, daily shape and delivery behaviour.

Parsed once into frozen dataclasses; every problem is reported together with its
location (``templates[2].rate_per_hour: expected a number >= 0``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from exporter.config import parse_yaml
from exporter.errors import ConfigError
from exporter.status_codes import StatusCategory

PACKAGED_SCENARIOS = ("default", "load")
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
DEFAULT_PROJECT_ID = "0123456789abcdef0123456789abcdef"
FAILURE_CATEGORIES = tuple(c.value for c in StatusCategory if c is not StatusCategory.DELIVERED)
DEFAULT_FAILURE_MIX: dict[str, float] = {
    "invalid_number": 0.35,
    "carrier_rejected": 0.15,
    "blacklisted": 0.15,
    "rate_limited": 0.1,
    "expired": 0.1,
    "content_blocked": 0.05,
    "platform_config": 0.05,
    "unknown": 0.05,
}


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


@dataclass(frozen=True, slots=True)
class ReviewHolds:
    """Manual-review holds: batches of one template's messages kept invisible a while."""

    per_hour: float = 3.0
    min_seconds: float = 120.0
    max_seconds: float = 600.0
    rejected_share: float = 0.2
    """Holds that end in a review rejection: every held message fails with SC:0001."""


@dataclass(frozen=True, slots=True)
class LateReports:
    """The tail: a share of reports that come hours late (a phone off), delivered or not.

    Delays are log-uniform in [min_seconds, max_seconds]; ``failed_share`` of these
    messages end in a carrier failure (the validity period ran out), the rest DELIVRD.
    """

    share: float = 0.003
    failed_share: float = 0.3
    min_seconds: float = 3600.0
    max_seconds: float = 48 * 3600.0


@dataclass(frozen=True, slots=True)
class DelayModel:
    """Lognormal delivery delay: median seconds, spread, and a cap."""

    median_seconds: float = 4.0
    sigma: float = 1.1
    max_seconds: float = 1800.0


@dataclass(frozen=True, slots=True)
class Scenario:
    """Everything the traffic generator needs."""

    templates: tuple[TemplateSpec, ...]
    project_id: str = DEFAULT_PROJECT_ID
    rate_multiplier: float = 1.0
    daily_shape: tuple[float, ...] = (1.0,) * 24
    delay: DelayModel = field(default_factory=DelayModel)
    never_reported_share: float = 0.001
    segment_weights: tuple[float, float, float] = (0.85, 0.12, 0.03)
    review_holds: ReviewHolds = field(default_factory=ReviewHolds)
    late_reports: LateReports = field(default_factory=LateReports)

    def scaled(self, factor: float) -> Scenario:
        """The same scenario with every send rate multiplied by ``factor``."""
        return replace(self, rate_multiplier=self.rate_multiplier * factor)


class _Reader:
    """Collects located problems while reading a mapping."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def mapping(self, obj: object, where: str, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(obj, Mapping):
            self.problems.append(f"{where}: expected a mapping")
            return {}
        for key in obj:
            if key not in allowed:
                self.problems.append(f"{_at(where, str(key))}: unknown key")
        return obj

    def number(
        self, obj: Mapping[str, Any], key: str, where: str, default: float, low: float, high: float
    ) -> float:
        value = obj.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            self.problems.append(f"{_at(where, key)}: expected a number in [{low:g}, {high:g}]")
            return default
        return float(value)

    def text(
        self,
        obj: Mapping[str, Any],
        key: str,
        where: str,
        default: str | None = None,
        check: Callable[[str], bool] = bool,
        expected: str = "a non-empty string",
    ) -> str:
        value = obj.get(key, default)
        if not isinstance(value, str) or not check(value):
            self.problems.append(f"{_at(where, key)}: expected {expected}")
            return default or ""
        return value

    def mix(self, obj: object, where: str) -> dict[str, float]:
        mix = self.mapping(obj, where, set(FAILURE_CATEGORIES))
        out: dict[str, float] = {}
        for key in mix:
            if key in FAILURE_CATEGORIES:
                out[str(key)] = self.number(mix, str(key), where, 0.0, 0.0, 1e9)
        if mix and not any(out.values()):
            self.problems.append(f"{where}: expected at least one positive weight")
        return out


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


_TOP_KEYS = {
    "project_id",
    "rate_multiplier",
    "daily_shape",
    "delivery_delay",
    "never_reported_share",
    "segment_weights",
    "review_holds",
    "late_reports",
    "failure_mix",
    "templates",
    "generated_templates",
}
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


def parse_scenario(data: object) -> Scenario:
    """Build a Scenario from parsed YAML; ConfigError lists every located problem."""
    r = _Reader()
    top = r.mapping(data, "", _TOP_KEYS)
    mix = r.mix(top.get("failure_mix", DEFAULT_FAILURE_MIX), "failure_mix")
    templates = _templates(r, top, mix)
    shape = top.get("daily_shape", [1.0] * 24)
    if (
        not isinstance(shape, list)
        or len(shape) != 24
        or not all(isinstance(x, int | float) and not isinstance(x, bool) and x >= 0 for x in shape)
    ):
        r.problems.append("daily_shape: expected a list of 24 numbers >= 0")
        shape = [1.0] * 24
    weights = top.get("segment_weights", [0.85, 0.12, 0.03])
    if (
        not isinstance(weights, list)
        or len(weights) != 3
        or not all(
            isinstance(x, int | float) and not isinstance(x, bool) and x >= 0 for x in weights
        )
        or sum(weights) <= 0
    ):
        r.problems.append("segment_weights: expected 3 numbers >= 0 (1, 2, 3 segments)")
        weights = [1.0, 0.0, 0.0]
    d = r.mapping(
        top.get("delivery_delay", {}),
        "delivery_delay",
        {"median_seconds", "sigma", "max_seconds"},
    )
    delay = DelayModel(
        median_seconds=r.number(d, "median_seconds", "delivery_delay", 4.0, 0.001, 3600),
        sigma=r.number(d, "sigma", "delivery_delay", 1.1, 0.0, 5.0),
        max_seconds=r.number(d, "max_seconds", "delivery_delay", 1800.0, 0.001, 259200),
    )
    h = r.mapping(
        top.get("review_holds", {}),
        "review_holds",
        {"per_hour", "min_seconds", "max_seconds", "rejected_share"},
    )
    holds = ReviewHolds(
        per_hour=r.number(h, "per_hour", "review_holds", 3.0, 0.0, 1000.0),
        min_seconds=r.number(h, "min_seconds", "review_holds", 120.0, 1.0, 3600.0),
        max_seconds=r.number(h, "max_seconds", "review_holds", 600.0, 1.0, 3600.0),
        rejected_share=r.number(h, "rejected_share", "review_holds", 0.2, 0.0, 1.0),
    )
    if holds.min_seconds > holds.max_seconds:
        r.problems.append("review_holds: min_seconds must not exceed max_seconds")
    late = _late_reports(r, top.get("late_reports", {}))
    project_id = r.text(
        top,
        "project_id",
        "",
        DEFAULT_PROJECT_ID,
        lambda s: s.isalnum(),
        "an alphanumeric project id",
    )
    scenario = Scenario(
        templates=tuple(templates),
        project_id=project_id,
        rate_multiplier=r.number(top, "rate_multiplier", "", 1.0, 0.0, 1e6),
        daily_shape=tuple(float(x) for x in shape),
        delay=delay,
        never_reported_share=r.number(top, "never_reported_share", "", 0.001, 0.0, 1.0),
        segment_weights=(float(weights[0]), float(weights[1]), float(weights[2])),
        review_holds=holds,
        late_reports=late,
    )
    if r.problems:
        raise ConfigError(r.problems)
    return scenario


def _late_reports(r: _Reader, obj: object) -> LateReports:
    where = "late_reports"
    m = r.mapping(obj, where, {"share", "failed_share", "min_seconds", "max_seconds"})
    # Reports come at most 72 h late: past that the platform writes EXPIRED itself.
    late = LateReports(
        share=r.number(m, "share", where, 0.003, 0.0, 1.0),
        failed_share=r.number(m, "failed_share", where, 0.3, 0.0, 1.0),
        min_seconds=r.number(m, "min_seconds", where, 3600.0, 1.0, 72 * 3600.0),
        max_seconds=r.number(m, "max_seconds", where, 48 * 3600.0, 1.0, 72 * 3600.0),
    )
    if late.min_seconds > late.max_seconds:
        r.problems.append(f"{where}: min_seconds must not exceed max_seconds")
    return late


def _templates(r: _Reader, top: Mapping[str, Any], mix: dict[str, float]) -> list[TemplateSpec]:
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
    r: _Reader, obj: Mapping[str, Any], where: str, region: str = "intl"
) -> tuple[str, ...]:
    default = [MAINLAND] if region == "cn" else ["44", "49", "33"]
    value = obj.get("countries", default)
    ok = isinstance(value, list) and value and all(isinstance(c, str) for c in value)
    if not ok or not all(c in COUNTRY_PLANS for c in value):
        known = ", ".join(sorted(COUNTRY_PLANS))
        r.problems.append(f"{_at(where, 'countries')}: expected a list of country codes ({known})")
        return tuple(default)
    if region == "cn" and value != [MAINLAND]:
        r.problems.append(f"{_at(where, 'countries')}: a cn template sends to {MAINLAND} only")
    if region == "intl" and MAINLAND in value:
        r.problems.append(f"{_at(where, 'countries')}: an intl template cannot send to {MAINLAND}")
    return tuple(value)


def _created(value: str) -> bool:
    try:
        datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return False
    return True


def _template(r: _Reader, obj: object, where: str, mix: dict[str, float]) -> TemplateSpec:
    t = r.mapping(obj, where, _TEMPLATE_KEYS)
    template_id = r.text(t, "template_id", where)
    template_type = r.text(
        t,
        "type",
        where,
        "NOTIFY_TYPE",
        lambda s: s in TEMPLATE_TYPES,
        "one of " + ", ".join(TEMPLATE_TYPES),
    )
    # Huawei's international templates are NOTIFY_TYPE only; other types are mainland (cn).
    default_region = "intl" if template_type == "NOTIFY_TYPE" else "cn"
    region = r.text(t, "region", where, default_region, lambda s: s in ("cn", "intl"), "cn or intl")
    if region == "intl" and template_type != "NOTIFY_TYPE":
        r.problems.append(f"{_at(where, 'type')}: an intl template is NOTIFY_TYPE only")
    content = t.get("content")
    return TemplateSpec(
        template_id=template_id,
        name=r.text(t, "name", where, template_id or "template"),
        template_type=template_type,
        region=region,
        rate_per_hour=r.number(t, "rate_per_hour", where, 0.0, 0.0, 1e8),
        failure_share=r.number(t, "failure_share", where, 0.02, 0.0, 1.0),
        failure_mix=r.mix(t["failure_mix"], _at(where, "failure_mix"))
        if "failure_mix" in t
        else mix,
        countries=_countries(r, t, where, region),
        flow_status=r.text(
            t,
            "flow_status",
            where,
            "Adopted",
            lambda s: s in FLOW_STATUSES,
            "one of " + ", ".join(FLOW_STATUSES),
        ),
        review_hold_weight=r.number(t, "review_hold_weight", where, 1.0, 0.0, 1e6),
        app_name=r.text(t, "app_name", where, "simulator-app"),
        sign_name=r.text(t, "sign_name", where, "Simulator"),
        content=None if content is None else r.text(t, "content", where),
        create_time=r.text(t, "create_time", where, check=_created, expected="yyyy-MM-dd HH:mm:ss")
        if "create_time" in t
        else None,
    )


def _generated(r: _Reader, obj: object, mix: dict[str, float]) -> list[TemplateSpec]:
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


def load_scenario(path: str | Path | None = None) -> Scenario:
    """Read a scenario file; None or a packaged name (``default``, ``load``) reads the package's."""
    if path is None or str(path) in PACKAGED_SCENARIOS:
        source = f"{path or 'default'}.yaml"
        text = resources.files("exporter.simulator").joinpath(source).read_text("utf-8")
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"{source}: cannot read: {exc.strerror}"]) from exc
    data = parse_yaml(text, source)
    try:
        return parse_scenario(data)
    except ConfigError as exc:
        raise ConfigError([f"{source}: {p}" for p in exc.problems]) from exc
