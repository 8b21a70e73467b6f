"""A reader of parsed YAML that collects every problem with its location.

``templates[2].rate_per_hour: expected a number in [0, 1e+08]``: the scenario file's
parsers report all problems together, as the exporter's config does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from exporter.status_codes import StatusCategory
from exporter.yamlfile import unknown_key

FAILURE_CATEGORIES = tuple(c.value for c in StatusCategory if c is not StatusCategory.DELIVERED)


class Reader:
    """Collects located problems while reading a mapping."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def mapping(self, obj: object, where: str, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(obj, Mapping):
            self.problems.append(f"{where or 'top level'}: expected a mapping")
            return {}
        for key in obj:
            if key not in allowed:
                self.problems.append(f"{at(where, str(key))}: {unknown_key(key, allowed)}")
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
            self.problems.append(f"{at(where, key)}: expected a number in [{low:g}, {high:g}]")
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
            self.problems.append(f"{at(where, key)}: expected {expected}")
            return default or ""
        return value

    def choice(
        self, obj: Mapping[str, Any], key: str, where: str, default: str, choices: Iterable[str]
    ) -> str:
        """A string that must be one of ``choices``."""
        allowed = tuple(choices)
        expected = "one of " + ", ".join(allowed)
        return self.text(obj, key, where, default, lambda s: s in allowed, expected)

    def mix(self, obj: object, where: str) -> dict[str, float]:
        mix = self.mapping(obj, where, set(FAILURE_CATEGORIES))
        out: dict[str, float] = {}
        for key in mix:
            if key in FAILURE_CATEGORIES:
                out[str(key)] = self.number(mix, str(key), where, 0.0, 0.0, 1e9)
        if mix and not any(out.values()):
            self.problems.append(f"{where}: expected at least one positive weight")
        return out


def at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
