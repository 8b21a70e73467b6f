"""What both push stores share: the SQLite store (:mod:`exporter.sqlitestore`) and the
PostgreSQL store (:mod:`exporter.pgstore`).

:class:`ReportStore` is what the receiver and the poller need of a store, :func:`open_store`
opens the one the receiver's configuration names, and :class:`AccountView` reads one push
account's messages as a ``DetailsSource``.

Writes go through one writer thread that gathers the work of concurrent requests into a
single transaction (group commit); each caller waits until its transaction is committed
(``add_reports``) or is called back then (``add_reports_then``, the receiver's way: no
thread waits), so a request is answered 200 only once its reports are stored. Reads
answer the sending-details contract (``query``, ``list_templates``, ``stats``), so the
same poller that reads the HTTP contract reads a store.

One request's bad data never costs another request its reports: an item a database
cannot hold is refused alone by the merge, and when a group transaction still fails,
each request is committed alone, and a request that fails alone item by item, so only
the item that cannot be stored is refused (``WriteResult.rejected``). This isolation is
:class:`GroupCommitWrites`', which both stores build on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import structlog

from exporter.config import ReceiverConfig, Secret
from exporter.errors import StoreUnavailable as StoreUnavailable  # re-exported for callers
from exporter.groupcommit import GroupCommitter, failure_of
from exporter.mobilekey import MobileKey
from exporter.moves import MovedMinutes
from exporter.pushitems import UNKNOWN_TEMPLATE as UNKNOWN_TEMPLATE
from exporter.pushitems import Outcome as Outcome
from exporter.pushitems import Segment as Segment
from exporter.pushitems import SendRegistration as SendRegistration
from exporter.pushitems import StatusReport as StatusReport
from exporter.pushitems import WriteResult as WriteResult
from exporter.pushitems import message_outcome as message_outcome
from exporter.records import DetailsPage, DetailsQuery, SendRecord, SendResult
from exporter.stats import RequestStats
from exporter.templates import SmsTemplate

PRUNE_EVERY_SECONDS = 60.0
PRUNE_CHUNK = 5000
ISOLATION_RETRIES = 3
"""Tries of one request alone when its transaction crossed another replica's."""

log = structlog.get_logger("msgsms_exporter.pushstore")


def record_from_row(row: Sequence[Any]) -> SendRecord:
    """A stored message as the contract's record, its columns read in this order: message
    id, template id, mobile, send ms, result, status code, status desc, receive ms, segments."""
    return SendRecord(
        message_id=row[0],
        template_id=row[1],
        mobile=row[2],
        send_time=row[3] / 1000,
        send_result=SendResult(row[4]),
        status_code=row[5],
        status_desc=row[6],
        receive_time=None if row[7] is None else row[7] / 1000,
        segments=row[8],
    )


WriteDone = Callable[[WriteResult | None, StoreUnavailable | None], None]
"""Told a write's result once committed, or why it was not stored."""


@dataclass(slots=True)
class WriteJob:
    """One caller's writes, waiting for the group commit that holds them."""

    reports: Sequence[StatusReport] = ()
    sends: Sequence[SendRegistration] = ()
    then: Callable[[], None] | None = None
    """Called on the writer thread once committed or failed (``submit`` sets it to wake
    its waiting caller)."""
    result: WriteResult = field(default_factory=WriteResult)
    error: BaseException | None = None
    prune: bool = False


class ReportStore(Protocol):
    """What the receiver and the poller need of a push store (SQLite or PostgreSQL).

    Writes return once committed and raise StoreUnavailable otherwise; reads answer
    the sending-details contract and raise UpstreamUnavailable when the store fails.
    """

    @property
    def stats(self) -> RequestStats:
        """Accounting of the contract's reads, as the HTTP client keeps it."""
        ...

    @property
    def commits(self) -> int:
        """Transactions committed by this process."""
        ...

    @property
    def pruned(self) -> int:
        """Messages this process deleted after the retention."""
        ...

    @property
    def size_bytes(self) -> int:
        """The store's size on disk, measured at start and after each pruning."""
        ...

    @property
    def up(self) -> bool:
        """False from a failed use (a write, a read, a readiness check) until a write (or
        a write test) succeeds again: a store that answers reads may still refuse writes."""
        ...

    def add_reports(self, reports: Sequence[StatusReport]) -> WriteResult:
        """Store reports; returns once they are committed."""
        ...

    def register(self, sends: Sequence[SendRegistration]) -> WriteResult:
        """Store send registrations (the first registration of a message wins)."""
        ...

    def add_reports_then(self, reports: Sequence[StatusReport], then: WriteDone) -> None:
        """Store reports without waiting; ``then`` is told the result or the failure."""
        ...

    def register_then(self, sends: Sequence[SendRegistration], then: WriteDone) -> None:
        """Store send registrations without waiting, like ``add_reports_then``."""
        ...

    def prune(self) -> None:
        """Delete what is older than the retention now."""
        ...

    def available(self) -> bool:
        """True when the store can take writes now (for ``/-/ready``)."""
        ...

    def query(
        self,
        query: DetailsQuery,
        *,
        account: str | None = None,
        stats: RequestStats | None = None,
    ) -> DetailsPage:
        """One page of the stored messages, ordered by (send time, message id).

        ``account`` restricts it to one push account's messages (None: every account).
        Inside ``snapshot()`` every page and total comes from that snapshot.
        """
        ...

    def list_templates(
        self, *, account: str | None = None, stats: RequestStats | None = None
    ) -> list[SmsTemplate]:
        """Templates seen in registrations or attributed reports within the retention."""
        ...

    def account_view(self, account: str | None) -> AccountView:
        """The store as one push account's ``DetailsSource`` (None: every account)."""
        ...

    def moved_since(self, cursor: object, *, account: str | None = None) -> MovedMinutes:
        """The minutes stored messages (of ``account``; None: every account) moved from or
        to since ``cursor``, a previous answer's (None: no minutes, a first cursor).
        Inside ``snapshot()``, as of that snapshot (:mod:`exporter.moves`)."""
        ...

    def snapshot(self) -> AbstractContextManager[object]:
        """While entered, this thread's queries read one snapshot (a whole range read)."""
        ...

    def message_count(self) -> int:
        """Messages currently stored."""
        ...

    def segment_rows(self) -> list[tuple[str, int]]:
        """Every stored (message id, segment), for checks and tests."""
        ...

    def close(self) -> None:
        """Finish queued writes and release the store."""
        ...


class GroupCommitWrites:
    """What both stores share: writes wait for the group commit holding them, and one
    request's failure is never another's; views.

    A store gives ``_commit_group`` (the jobs in one transaction, each job's result set;
    StoreUnavailable when the store is down) and says which errors mean the data failed
    the transaction (``_data_errors``), which of those one item's data explains
    (``_item_errors``) and which mean it crossed another writer's (``_retry_errors``).
    """

    _writes: GroupCommitter[WriteJob]
    _data_errors: ClassVar[tuple[type[Exception], ...]]
    _item_errors: ClassVar[tuple[type[Exception], ...]]
    _retry_errors: ClassVar[tuple[type[Exception], ...]] = ()

    def __init__(
        self, retention: float, clock: Callable[[], float], *, where: str, up: bool = True
    ) -> None:
        self.retention = retention
        self.stats = RequestStats()
        self.commits = 0
        self.pruned = 0
        self.size_bytes = 0
        """The store's size on disk, measured at start and after each pruning."""
        self._clock = clock
        self._where = where
        """The store as its log lines name it (a path, a host: never a password)."""
        self._up = up
        self._up_began = float("-inf")
        self._up_lock = threading.Lock()
        self._said_down = False

    @property
    def up(self) -> bool:
        """Whether the latest use of the store to begin, of those finished, succeeded."""
        return self._up

    def _used(self, ok: bool, began: float, error: BaseException | None = None) -> None:
        """Note how a use that began at ``began`` (``time.monotonic``) went. One that began
        before the use that last decided finished out of order and changes nothing: a poll
        that failed while the database was down must not mark it down once it is back.

        The store going down, and coming back, is logged once each (an outage at 2,000
        pushes a second must not write 2,000 lines a second); the refusals are counted.
        """
        with self._up_lock:
            if began < self._up_began:
                return
            self._up, self._up_began = ok, began
            said, self._said_down = self._said_down, not ok
        if not ok and not said:
            why = "" if error is None else str(error).strip().splitlines()[0]
            log.error(
                "push store unavailable: pushes are refused (503) until it is back",
                store=self._where,
                error=why or "no answer",
            )
        elif ok and said:
            log.info("push store available again: pushes are stored", store=self._where)

    def _commit_group(self, jobs: list[WriteJob]) -> None:
        raise NotImplementedError

    def add_reports(self, reports: Sequence[StatusReport]) -> WriteResult:
        """Store reports; returns once they are committed. StoreUnavailable otherwise."""
        job = WriteJob(reports=reports)
        self._writes.submit(job)
        return job.result

    def register(self, sends: Sequence[SendRegistration]) -> WriteResult:
        """Store send registrations (the first registration of a message wins)."""
        job = WriteJob(sends=sends)
        self._writes.submit(job)
        return job.result

    def add_reports_then(self, reports: Sequence[StatusReport], then: WriteDone) -> None:
        """Store reports without waiting: ``then(result, None)`` once they are committed,
        ``then(None, why)`` when they are not; called on the writer thread."""
        self._enqueue(WriteJob(reports=reports), then)

    def register_then(self, sends: Sequence[SendRegistration], then: WriteDone) -> None:
        """Store send registrations without waiting, like :meth:`add_reports_then`."""
        self._enqueue(WriteJob(sends=sends), then)

    def _enqueue(self, job: WriteJob, then: WriteDone) -> None:
        def finished() -> None:
            failure = failure_of(job)
            then(None if failure else job.result, failure)

        job.then = finished
        self._writes.enqueue(job)

    def prune(self) -> None:
        """Delete what is older than the retention now (the writer also does it every minute)."""
        self._writes.submit(WriteJob(prune=True))

    def settle(self) -> None:
        """Wait until every queued write is committed and the maintenance after it ran."""
        self._writes.settle()

    def account_view(self: ReportStore, account: str | None) -> AccountView:
        """The store as one push account's ``DetailsSource`` (None: every account)."""
        return AccountView(self, account)

    def _commit(self, jobs: list[WriteJob]) -> None:
        """The group in one transaction; when its data fails
        it, each request alone."""
        writes = [j for j in jobs if not j.prune]
        if not writes:
            return
        try:
            self._attempt(writes)
        except StoreUnavailable as exc:  # the store is gone: every job is refused
            for job in writes:
                job.error = exc
        except self._data_errors:
            for job in writes:
                self._commit_alone(job)

    def _attempt(self, jobs: list[WriteJob]) -> None:
        """``_commit_group``, noting whether the store took it (``up``): StoreUnavailable
        says it did not; any other error is the data's, not the store's."""
        began = time.monotonic()
        try:
            self._commit_group(jobs)
        except StoreUnavailable as exc:
            self._used(False, began, exc)
            raise
        self._used(True, began)

    def _commit_alone(self, job: WriteJob) -> None:
        """One job in its own transaction; if one item's data fails it, each item alone."""
        for _attempt in range(ISOLATION_RETRIES):
            try:
                self._attempt([job])
                return
            except StoreUnavailable as exc:
                job.error = exc
                return
            except self._retry_errors as exc:
                job.error = exc
            except self._data_errors as exc:
                if not isinstance(exc, self._item_errors):
                    job.error = exc
                    return
                break
        else:
            return
        job.error = None
        job.result = WriteResult()
        items: list[SendRegistration | StatusReport] = [*job.sends, *job.reports]
        for index, item in enumerate(items):
            alone = (
                WriteJob(sends=[item])
                if isinstance(item, SendRegistration)
                else WriteJob(reports=[item])
            )
            try:
                self._attempt([alone])
            except StoreUnavailable as exc:
                job.error = exc
                return
            except self._item_errors:
                job.result.rejected.append(index)
                continue
            except self._data_errors as exc:
                job.error = exc
                return
            job.result.merge(alone.result)
            job.result.rejected.extend(index for _ in alone.result.rejected)


def open_store(config: ReceiverConfig, *, clock: Callable[[], float] = time.time) -> ReportStore:
    """The store the receiver's configuration names: PostgreSQL by URL, else SQLite."""
    key, previous = _mobile_key(config.mobile_key), _mobile_key(config.mobile_key_previous)
    if config.store_url is not None:
        from exporter.pgstore import PostgresStore  # the optional extra, imported when used

        return PostgresStore(
            config.store_url.value,
            retention=config.retention,
            clock=clock,
            mobile_key=key,
            mobile_key_previous=previous,
        )
    from exporter.sqlitestore import PushStore  # it builds on this module

    return PushStore(
        config.store_path,
        retention=config.retention,
        synchronous=config.synchronous,
        clock=clock,
        mobile_key=key,
        mobile_key_previous=previous,
    )


def _mobile_key(secret: Secret | None) -> MobileKey | None:
    return None if secret is None else MobileKey(secret.value.encode())


class AccountView:
    """One push account's messages in a shared store, read by that account's poller."""

    def __init__(self, store: ReportStore, account: str | None) -> None:
        self.store = store
        self.account = account
        self.stats = RequestStats()

    def query(self, query: DetailsQuery) -> DetailsPage:
        """One page of this account's stored messages."""
        return self.store.query(query, account=self.account, stats=self.stats)

    def snapshot(self) -> AbstractContextManager[object]:
        """One snapshot of the store for the queries made inside (one range read)."""
        return self.store.snapshot()

    def list_templates(self) -> list[SmsTemplate]:
        """This account's templates within the retention."""
        return self.store.list_templates(account=self.account, stats=self.stats)

    def moved_since(self, cursor: object) -> MovedMinutes:
        """The minutes this account's messages moved from or to since ``cursor``."""
        return self.store.moved_since(cursor, account=self.account)
