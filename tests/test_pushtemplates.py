"""The template bound: admitted up to the limit, configured ones always, the rest as other."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

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
    # The due read runs on a thread of its own (admit never waits for the store): this
    # report is folded, and a later one finds a's place free.
    assert limit.admit("c") == OTHER_TEMPLATE
    deadline = time.monotonic() + 30
    while limit.admit("c") != "c":
        assert time.monotonic() < deadline, "the store was never read again"
        time.sleep(0.01)
    assert limit.admit("d") == OTHER_TEMPLATE


def test_admitting_never_waits_for_a_slow_store():
    stored = ["a", "b"]
    release = threading.Event()
    reads = []

    def slow_read() -> list[str]:
        reads.append(1)
        if len(reads) > 1:  # the start-up read is quick; the refresh hangs
            release.wait()
        return list(stored)

    clock = Clock()
    limit = TemplateLimit(2, slow_read, clock=clock)
    clock.now += REFRESH_SECONDS
    assert [limit.admit(t) for t in ("c", "c", "a")] == [OTHER_TEMPLATE, OTHER_TEMPLATE, "a"]
    deadline = time.monotonic() + 30
    while len(reads) < 2:  # the refresh started, and hangs
        assert time.monotonic() < deadline, "the due refresh never started"
        time.sleep(0.01)
    assert limit.admit("c") == OTHER_TEMPLATE
    assert len(reads) == 2  # one refresh at a time
    release.set()


def _wait_for_read(limit: TemplateLimit, reads: list[int], count: int) -> None:
    deadline = time.monotonic() + 30
    while len(reads) < count or limit._reading:
        assert time.monotonic() < deadline, "the due read never finished"
        time.sleep(0.01)


def _recorded_store() -> tuple[list[str], list[int], Callable[[], list[str]]]:
    """The templates a store holds (a list to change), its reads, and its list function."""
    stored: list[str] = []
    reads: list[int] = []

    def read() -> list[str]:
        reads.append(1)
        return list(stored)

    return stored, reads, read


def test_a_read_before_the_admitted_templates_are_stored_keeps_them_counted():
    # One request admits a and b (the limit) and folds c, which starts the due read of
    # the store: a and b are not committed yet, so the store does not list them.
    stored, reads, read = _recorded_store()
    clock = Clock()
    limit = TemplateLimit(2, read, clock=clock)
    clock.now += REFRESH_SECONDS
    assert [limit.admit(t) for t in ("a", "b", "c")] == ["a", "b", OTHER_TEMPLATE]
    _wait_for_read(limit, reads, 2)
    assert [limit.admit(t) for t in ("d", "e")] == [OTHER_TEMPLATE, OTHER_TEMPLATE]
    # Once stored, the store's list is the truth again: a template that left frees a place.
    stored += ["a", "b"]
    clock.now += REFRESH_SECONDS
    stored.remove("a")
    assert limit.admit("d") == OTHER_TEMPLATE
    _wait_for_read(limit, reads, 3)
    assert [limit.admit(t) for t in ("d", "e")] == ["d", OTHER_TEMPLATE]


def test_replicas_sharing_a_store_count_each_others_templates_within_a_refresh():
    # Two replicas, one store: a stores t0-t2 (the limit); b, started before them and
    # below its own limit, reads the store again when a new template is due a read.
    stored, reads, read = _recorded_store()
    clock = Clock()
    a = TemplateLimit(3, list, clock=clock)
    b = TemplateLimit(3, read, clock=clock)
    assert [a.admit(t) for t in ("t0", "t1", "t2")] == ["t0", "t1", "t2"]
    stored += ["t0", "t1", "t2"]
    clock.now += REFRESH_SECONDS
    assert b.admit("x") == "x"  # admitted while the due read runs
    _wait_for_read(b, reads, 2)
    assert [b.admit(t) for t in ("y", "z", "t1")] == [OTHER_TEMPLATE, OTHER_TEMPLATE, "t1"]
