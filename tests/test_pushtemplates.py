"""The template bound: admitted up to the limit, configured ones always, the rest as other."""

from __future__ import annotations

from exporter.pushtemplates import OTHER_TEMPLATE, REFRESH_SECONDS, TemplateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_admits_up_to_the_limit_then_folds_into_other():
    limit = TemplateLimit(2, list, pinned=("configured",), clock=Clock())
    assert [limit.admit(t) for t in ("a", "b", "c", "a", "configured", "unknown")] == [
        "a",
        "b",
        OTHER_TEMPLATE,
        "a",
        "configured",
        "unknown",
    ]


def test_the_stores_templates_count_and_leave_with_the_retention():
    stored = ["a", "b", "unknown", "other"]
    clock = Clock()
    limit = TemplateLimit(2, lambda: list(stored), clock=clock)
    assert limit.admit("c") == OTHER_TEMPLATE  # a and b, read at start, fill it
    stored.remove("a")  # pruned with its messages
    assert limit.admit("c") == OTHER_TEMPLATE  # read again at most once a minute
    clock.now += REFRESH_SECONDS
    assert limit.admit("c") == "c"
    assert limit.admit("d") == OTHER_TEMPLATE
