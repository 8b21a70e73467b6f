"""The scenario file: templates, send rates, daily shape and delivery behaviour.

Parsed once into frozen dataclasses; every problem is reported together with its
location (``templates[2].rate_per_hour: expected a number >= 0``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from exporter.errors import ConfigError
from exporter.simulator.scenario_reader import Reader
from exporter.simulator.template_specs import TemplateSpec, parse_templates
from exporter.yamlfile import load_located, parse_yaml

PACKAGED_SCENARIOS = ("default", "load")
DEFAULT_PROJECT_ID = "0123456789abcdef0123456789abcdef"
MAX_HOLD_SECONDS = 86400.0
"""The longest manual-review hold a scenario may ask for."""
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
class ReviewHolds:
    """Manual-review holds: batches of one template's messages kept invisible a while.

    A hold lasts at most :data:`MAX_HOLD_SECONDS` (a day): Huawei says only "for a
    while", and a review queued overnight is the longest we assume.
    """

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
    max_seconds: float = 72 * 3600.0
    """Huawei pushes reports "within 72 hours": the tail reaches the deadline."""


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


def parse_scenario(data: object) -> Scenario:
    """Build a Scenario from parsed YAML; ConfigError lists every located problem."""
    r = Reader()
    top = r.mapping(data, "", _TOP_KEYS)
    mix = r.mix(top.get("failure_mix", DEFAULT_FAILURE_MIX), "failure_mix")
    templates = parse_templates(r, top, mix)
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
        min_seconds=r.number(h, "min_seconds", "review_holds", 120.0, 1.0, MAX_HOLD_SECONDS),
        max_seconds=r.number(h, "max_seconds", "review_holds", 600.0, 1.0, MAX_HOLD_SECONDS),
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


def _late_reports(r: Reader, obj: object) -> LateReports:
    where = "late_reports"
    m = r.mapping(obj, where, {"share", "failed_share", "min_seconds", "max_seconds"})
    # Reports come at most 72 h late: past that the platform writes EXPIRED itself.
    late = LateReports(
        share=r.number(m, "share", where, 0.003, 0.0, 1.0),
        failed_share=r.number(m, "failed_share", where, 0.3, 0.0, 1.0),
        min_seconds=r.number(m, "min_seconds", where, 3600.0, 1.0, 72 * 3600.0),
        max_seconds=r.number(m, "max_seconds", where, 72 * 3600.0, 1.0, 72 * 3600.0),
    )
    if late.min_seconds > late.max_seconds:
        r.problems.append(f"{where}: min_seconds must not exceed max_seconds")
    return late


def load_scenario(path: str | Path | None = None) -> Scenario:
    """Read a scenario file; None or a packaged name (``default``, ``load``) reads the package's."""
    if path is not None and str(path) not in PACKAGED_SCENARIOS:
        try:
            return load_located(path, parse_scenario)
        except ConfigError as exc:
            if Path(path).exists() or "/" in str(path) or Path(path).suffix:
                raise
            # A bare word that is no file: most likely a packaged name mistyped.
            packaged = ", ".join(PACKAGED_SCENARIOS)
            problem = f"{exc.problems[0]} (nor a packaged scenario: {packaged})"
            raise ConfigError([problem]) from None
    source = f"{path or 'default'}.yaml"
    text = resources.files("exporter.simulator").joinpath(source).read_text("utf-8")
    try:
        return parse_scenario(parse_yaml(text, source))
    except ConfigError as exc:
        raise ConfigError([f"{source}: {p}" for p in exc.problems]) from exc
