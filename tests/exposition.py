"""Reading an exposition in tests: samples by name and labels, and the window counts."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def samples(exposition: bytes) -> Samples:
    """Every sample, by metric name then sorted label pairs."""
    out: Samples = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(s: Samples, name: str, **labels: str) -> float:
    """The one sample of ``name`` whose labels include ``labels`` (0 when absent)."""
    found = [v for k, v in s.get(name, {}).items() if set(labels.items()) <= set(k)]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


def total(s: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for k, v in s.get(name, {}).items() if set(labels.items()) <= set(k))


def exported_window(s: Samples, window: str = "1h") -> dict[str, dict[str, Any]]:
    """Per template: counts by result and by status code (the per-category "other" summed)."""
    out: dict[str, dict[str, Any]] = {}
    for labels, v in s["msgsms_window_messages"].items():
        d = dict(labels)
        if d["window"] == window:
            out.setdefault(d["template"], {"status_codes": {}})[d["result"]] = int(v)
    for labels, v in s.get("msgsms_window_status_code_messages", {}).items():
        d = dict(labels)
        if d["window"] == window:
            codes = out[d["template"]]["status_codes"]
            codes[d["status_code"]] = codes.get(d["status_code"], 0) + int(v)
    return out
