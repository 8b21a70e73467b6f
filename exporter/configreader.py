"""Walks raw YAML into typed values, collecting every problem with its location.

Secrets are named by environment variable or file path, never written inline, and are
resolved here so the rest of the exporter only sees :class:`Secret` values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from exporter.config import Secret
from exporter.timestamps import parse_duration
from exporter.yamlfile import unknown_key

T = TypeVar("T")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigReader:
    """Walks the raw YAML, collecting located problems instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def mapping(self, raw: object, where: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            if where:
                self.problem(where, "expected a mapping")
            else:
                self.problem("top level", "expected a mapping of settings" + _got(raw))
            return {}
        for key in raw:
            if key not in allowed:
                self.problem(f"{where}.{key}" if where else str(key), unknown_key(key, allowed))
        return raw

    def expand(self, value: object, where: str, encode: Callable[[str], str] = str) -> object:
        if not isinstance(value, str):
            return value

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.env:
                self.problem(where, f"environment variable {name} is not set")
                return ""
            return encode(self.env[name])

        return _ENV_REF.sub(substitute, value)

    def get(
        self,
        raw: Mapping[str, Any],
        key: str,
        where: str,
        convert: Callable[[object], T],
        default: T | None = None,
        *,
        required: bool = False,
    ) -> T | None:
        path = f"{where}.{key}" if where else key
        if key not in raw or raw[key] is None:
            if required:
                self.problem(path, "is required")
            return default
        before = len(self.problems)
        value = self.expand(raw[key], path)
        if len(self.problems) > before:
            return default
        try:
            return convert(value)
        except (TypeError, ValueError) as exc:
            self.problem(path, str(exc))
            return default

    def secret(self, raw: object, where: str) -> Secret | None:
        if not isinstance(raw, dict):  # never quoted: it may be the secret itself
            self.problem(where, "expected {env: VAR} or {file: PATH}; never the secret itself")
            return None
        spec = self.mapping(raw, where, {"env", "file"})
        if not spec:
            return None
        if len(spec) != 1:
            self.problem(where, "give exactly one of 'env' or 'file'")
            return None
        key = "env" if "env" in spec else "file"
        name = spec[key]
        if not isinstance(name, str) or not name:
            expected = "an environment variable name" if key == "env" else "a file path"
            self.problem(f"{where}.{key}", f"expected {expected}")
            return None
        # An empty secret is a mistake, never a choice: an empty registration token would
        # admit "Authorization: Bearer " and an empty signing key any signature made with
        # one (a Secret created from a failed $(openssl rand ...), a file not written yet).
        if key == "env":
            if name not in self.env:
                self.problem(f"{where}.env", f"environment variable {name} is not set")
                return None
            if not self.env[name].strip():
                self.problem(f"{where}.env", f"environment variable {name} is empty")
                return None
            return Secret(self.env[name])
        try:
            value = Path(name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            self.problem(f"{where}.file", f"cannot read {name}: {exc.strerror}")
            return None
        except UnicodeDecodeError:  # the message would quote the secret's bytes
            self.problem(f"{where}.file", f"{name} is not UTF-8 text")
            return None
        if not value:
            self.problem(f"{where}.file", f"{name} is empty")
            return None
        return Secret(value)


def _got(raw: object) -> str:
    """What the top level of a file holds instead of a mapping."""
    if raw is None:
        return ", the file is empty"
    return f", got a {'list' if isinstance(raw, list) else 'single value'}"


def nonempty_text(value: object) -> str:
    """A non-empty string."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        # project_id: 0123456789 is a number to YAML (an octal one, even): quoted, it is kept.
        raise ValueError("expected a string; YAML read this one as a number: quote it")
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def duration(value: object) -> float:
    """A positive duration (``30s``, ``5m``, ``1h``) in seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        # poll_interval: 60 — a number without its unit, as Prometheus would refuse it.
        raise ValueError(f"not a duration (use e.g. 30s, 5m, 1h): {value!r} has no unit")
    if not isinstance(value, str):
        raise ValueError("not a duration (use e.g. 30s, 5m, 1h)")
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


def boolean(value: object) -> bool:
    """``true`` or ``false``, nothing that merely converts to one."""
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def positive_int(value: object) -> int:
    """An integer of at least 1 (a boolean is not one)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError("expected a positive integer")
    return value
