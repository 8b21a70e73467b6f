"""The group committer: one group at a time, maintenance after it, on or off the writer."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from structlog.testing import capture_logs

from exporter.groupcommit import GroupCommitter, failure_of

WAIT = 10.0


@dataclass
class _Job:
    name: str
    then: Callable[[], None] | None = None
    error: BaseException | None = None
    prune: bool = False


def _done(job: _Job) -> threading.Event:
    event = threading.Event()
    job.then = event.set
    return event


def test_the_writes_that_arrive_during_a_commit_make_the_next_group_together() -> None:
    in_commit, go_on = threading.Event(), threading.Event()
    groups: list[list[str]] = []

    def commit(jobs: list[_Job]) -> None:
        groups.append([j.name for j in jobs])
        in_commit.set()
        assert go_on.wait(WAIT)

    committer: GroupCommitter[_Job] = GroupCommitter(commit, lambda jobs: None, name="t")
    try:
        first = _Job("first")
        committer.enqueue(first)
        assert in_commit.wait(WAIT)
        later = [_Job(f"later-{i}") for i in range(10)]
        for job in later:
            committer.enqueue(job)
        go_on.set()
        committer.settle()
    finally:
        committer.close()
    assert groups == [["first"], [j.name for j in later]]


def test_maintenance_apart_from_the_writer_never_holds_the_next_commit() -> None:
    maintaining, end_maintenance = threading.Event(), threading.Event()

    def maintain(jobs: list[_Job]) -> None:
        maintaining.set()
        assert end_maintenance.wait(WAIT)

    committer: GroupCommitter[_Job] = GroupCommitter(
        lambda jobs: None, maintain, name="t", maintain_apart=True
    )
    try:
        committer.enqueue(_Job("first"))
        assert maintaining.wait(WAIT)
        second = _Job("second")
        acknowledged = _done(second)
        committer.enqueue(second)
        assert acknowledged.wait(WAIT)  # committed while the maintenance still runs
        assert failure_of(second) is None
        prune = _Job("prune", prune=True)
        pruned = _done(prune)
        committer.enqueue(prune)
        assert not pruned.wait(0.2)  # a prune is answered after the maintenance it asked for
        end_maintenance.set()
        assert pruned.wait(WAIT)
        committer.settle()
    finally:
        end_maintenance.set()
        committer.close()


def test_maintenance_on_the_writer_runs_between_groups() -> None:
    events: list[str] = []
    committer: GroupCommitter[_Job] = GroupCommitter(
        lambda jobs: events.append("commit " + ",".join(j.name for j in jobs)),
        lambda jobs: events.append("maintain"),
        name="t",
    )
    try:
        committer.submit(_Job("a"))
        committer.submit(_Job("b"))
        committer.settle()
    finally:
        committer.close()
    assert events == ["commit a", "maintain", "commit b", "maintain"]


def test_close_finishes_the_queued_writes_and_stops_every_thread() -> None:
    committed: list[str] = []
    committer: GroupCommitter[_Job] = GroupCommitter(
        lambda jobs: committed.extend(j.name for j in jobs),
        lambda jobs: None,
        name="closing-test",
        maintain_apart=True,
    )
    jobs = [_Job(str(i)) for i in range(50)]
    finished = [_done(job) for job in jobs]
    for job in jobs:
        committer.enqueue(job)
    committer.close()
    assert all(event.is_set() for event in finished)
    assert sorted(committed, key=int) == [j.name for j in jobs]
    assert not [t for t in threading.enumerate() if t.name.startswith("closing-test")]


def test_a_commit_that_raises_fails_its_jobs_and_the_writer_goes_on() -> None:
    def commit(jobs: list[_Job]) -> None:
        if any(j.name == "bad" for j in jobs):
            raise RuntimeError("store bug")

    committer: GroupCommitter[_Job] = GroupCommitter(commit, lambda jobs: None, name="t")
    try:
        bad = _Job("bad")
        done = _done(bad)
        committer.enqueue(bad)
        assert done.wait(WAIT)
        failure = failure_of(bad)
        assert failure is not None and "store bug" in str(failure)
        committer.submit(_Job("good"))
    finally:
        committer.close()


@pytest.mark.parametrize("apart", [False, True], ids=["on_the_writer", "apart"])
def test_a_maintenance_that_raises_is_logged_and_the_writer_goes_on(apart: bool) -> None:
    # Pruning that failed while rolling back (a disk I/O error) ended the writer thread:
    # every later push waited for an answer that never came, and /-/ready stayed 200.
    maintained = threading.Event()

    def maintain(jobs: list[_Job]) -> None:
        if any(j.name == "first" for j in jobs):
            raise sqlite3.OperationalError("disk I/O error")
        maintained.set()

    committer: GroupCommitter[_Job] = GroupCommitter(
        lambda jobs: None, maintain, name="t", maintain_apart=apart
    )
    try:
        with capture_logs() as logs:
            committer.submit(_Job("first"))
            committer.settle()
        second = _Job("second")
        answered = _done(second)
        committer.enqueue(second)
        assert answered.wait(WAIT) and maintained.wait(WAIT)  # both threads go on
    finally:
        committer.close()
    assert [(e["log_level"], e["event"], e["error"]) for e in logs] == [
        (
            "error",
            "push store maintenance failed; tried again later",
            "OperationalError('disk I/O error')",
        )
    ]
