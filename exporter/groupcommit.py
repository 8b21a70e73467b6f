"""Group commit: one writer thread commits the writes of concurrent callers together.

A caller either blocks until the transaction holding its write is committed (or failed),
or hands over a callback that the writer thread calls then; either way a request is
answered only once its data is stored. Concurrent requests share one transaction, which
is what makes durable writes fast. Maintenance (pruning) runs on the
same thread after the answers of a group are released, so it never delays an ack.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import structlog

from exporter.errors import StoreUnavailable

log = structlog.get_logger("msgsms_exporter.pushstore")

MAX_BATCH_JOBS = 256


class Job(Protocol):
    """What the committer needs of a job: a completion callback, an error, a prune flag."""

    then: Callable[[], None] | None
    """Called on the writer thread once the job is committed or failed, if set."""

    error: BaseException | None
    prune: bool


J = TypeVar("J", bound=Job)


class GroupCommitter(Generic[J]):
    """Runs ``commit(jobs, lane)`` for the jobs queued since the last commit.

    With one lane (SQLite: one writer at a time) groups are committed one after the
    other. A database that takes concurrent writers (PostgreSQL) may use more: while one
    lane's transaction waits for its commit to reach the disk, the next lane gathers and
    writes the next group on a connection of its own, so a commit's fsync no longer
    holds every request that arrives meanwhile.
    """

    def __init__(
        self,
        commit: Callable[[list[J], int], None],
        maintain: Callable[[list[J]], None],
        *,
        name: str,
        max_jobs: int = MAX_BATCH_JOBS,
        lanes: int = 1,
    ) -> None:
        self._commit = commit
        self._maintain = maintain
        self._max_jobs = max_jobs
        self._jobs: queue.SimpleQueue[J | None] = queue.SimpleQueue()
        self._closed = False
        self._unfinished = 0
        self._finished = threading.Condition()
        self._threads = [
            threading.Thread(
                target=self._loop,
                args=(lane,),
                name=f"{name}-{lane}" if lane else name,
                daemon=True,
            )
            for lane in range(lanes)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self._closed

    def submit(self, job: J) -> None:
        """Queue ``job`` and wait for its commit; StoreUnavailable when it failed."""
        done = threading.Event()
        job.then = done.set
        self.enqueue(job)
        done.wait()
        failure = failure_of(job)
        if failure is not None:
            raise failure

    def enqueue(self, job: J) -> None:
        """Queue ``job`` without waiting: its ``then`` runs once it is committed or failed
        (then :func:`failure_of` tells which). StoreUnavailable when the store is closed."""
        if self._closed:
            raise StoreUnavailable("the push store is closed")
        with self._finished:
            self._unfinished += 1
        self._jobs.put(job)

    def settle(self) -> None:
        """Wait until every queued job is committed and the maintenance after it ran."""
        with self._finished:
            self._finished.wait_for(lambda: self._unfinished == 0)

    def _loop(self, lane: int) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            jobs = [first]
            stop = False
            while len(jobs) < self._max_jobs:
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
            self._run(jobs, lane)
            if stop:
                return

    def _run(self, jobs: list[J], lane: int) -> None:
        try:
            self._commit(jobs, lane)
        except Exception as exc:  # a store bug must fail the jobs, not hang their callers
            for job in jobs:
                job.error = job.error or exc
        for job in jobs:
            if not job.prune:
                _release(job)
        try:
            self._maintain(jobs)
        finally:
            for job in jobs:
                if job.prune:
                    _release(job)
            with self._finished:
                self._unfinished -= len(jobs)
                self._finished.notify_all()

    def close(self) -> None:
        """Finish queued jobs and stop; a job that raced with close is failed."""
        if self._closed:
            return
        self._closed = True
        for _thread in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.error = StoreUnavailable("the push store is closed")
                _release(job)
                with self._finished:
                    self._unfinished -= 1
                    self._finished.notify_all()


def _release(job: Job) -> None:
    """Call the job's callback (a callback's bug must not stop the writer: it is logged
    and the other jobs are released)."""
    # Dropped once called: a callback usually holds its job (to read the result), and
    # that cycle would leave every request's objects to the cyclic garbage collector.
    then, job.then = job.then, None
    if then is not None:
        try:
            then()
        except Exception:
            log.exception("push store callback failed")


def failure_of(job: Job) -> StoreUnavailable | None:
    """Why a finished job was not stored, as the receiver reports it; None when stored."""
    if job.error is None:
        return None
    if isinstance(job.error, StoreUnavailable):
        return job.error
    failure = StoreUnavailable(f"commit failed: {job.error}")
    failure.__cause__ = job.error
    return failure
