"""Group commit: one writer thread commits the writes of concurrent callers together.

A caller either blocks until the transaction holding its write is committed (or failed),
or hands over a callback that the writer thread calls then; either way a request is
answered only once its data is stored. Concurrent requests share one transaction, which
is what makes durable writes fast. Maintenance (pruning) runs after the answers of a
group are released: on the writer thread between groups, or on a thread of its own for a
store whose maintenance has a connection of its own (PostgreSQL).
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
    """Runs ``commit(jobs)`` for the jobs queued since the last commit, one group at a
    time: the requests that arrive during a commit make the next group, so a busy store
    commits fewer, larger groups.

    With ``maintain_apart`` the maintenance runs on a thread of its own, so a long prune
    never holds the writes queued behind it. (PostgreSQL's store once committed on two
    writer threads at once instead, so that one commit's fsync would not hold the
    requests arriving meanwhile. It made groups of one or two: the idle thread took each
    request as it arrived, and every group paid its own round trips and fsync. One
    writer raised the maximum from 2,140 to 2,720 single reports/s, and the p99 at
    2,000/s from 740 ms to about 50 ms.)
    """

    def __init__(
        self,
        commit: Callable[[list[J]], None],
        maintain: Callable[[list[J]], None],
        *,
        name: str,
        max_jobs: int = MAX_BATCH_JOBS,
        maintain_apart: bool = False,
    ) -> None:
        self._commit = commit
        self._maintain = maintain
        self._max_jobs = max_jobs
        self._jobs: queue.SimpleQueue[J | None] = queue.SimpleQueue()
        self._closed = False
        self._unfinished = 0
        self._finished = threading.Condition()
        self._maintenance: queue.SimpleQueue[list[J] | None] | None = None
        self._threads = [threading.Thread(target=self._loop, name=name, daemon=True)]
        if maintain_apart:
            self._maintenance = queue.SimpleQueue()
            apart = threading.Thread(
                target=self._maintain_loop, name=f"{name}-maintenance", daemon=True
            )
            self._threads.append(apart)
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

    def _loop(self) -> None:
        while True:
            jobs, stop = _drain(self._jobs, self._max_jobs)
            if jobs:
                self._run(jobs)
                if self._maintenance is None:
                    self._finish(jobs)
                else:
                    self._maintenance.put(jobs)
            if stop:
                if self._maintenance is not None:
                    self._maintenance.put(None)
                return

    def _run(self, jobs: list[J]) -> None:
        """Commit the group and answer its writes (a prune job waits for maintenance)."""
        try:
            self._commit(jobs)
        except Exception as exc:  # a store bug must fail the jobs, not hang their callers
            for job in jobs:
                job.error = job.error or exc
        for job in jobs:
            if not job.prune:
                _release(job)

    def _maintain_loop(self) -> None:
        assert self._maintenance is not None
        while True:
            groups, stop = _drain(self._maintenance, self._max_jobs)
            jobs = [job for group in groups for job in group]
            if jobs:
                self._finish(jobs)
            if stop:
                return

    def _finish(self, jobs: list[J]) -> None:
        """Maintenance after committed groups; then those jobs are finished."""
        try:
            self._maintain(jobs)
        except Exception as exc:  # its bug must not end the thread, and every write with it
            log.error("push store maintenance failed; tried again later", error=repr(exc))
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
        self._jobs.put(None)  # the writer passes it on to the maintenance thread
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


T = TypeVar("T")


def _drain(items: queue.SimpleQueue[T | None], most: int) -> tuple[list[T], bool]:
    """What is queued now, waiting for a first item, up to ``most``; and whether the
    None that asks to stop was met."""
    first = items.get()
    if first is None:
        return [], True
    taken = [first]
    while len(taken) < most:
        try:
            item = items.get_nowait()
        except queue.Empty:
            break
        if item is None:
            return taken, True
        taken.append(item)
    return taken, False


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
