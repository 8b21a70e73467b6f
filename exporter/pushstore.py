"""The push store: status reports and send registrations in SQLite (WAL), read as details.

Writes go through one writer thread that gathers the work of concurrent requests into a
single transaction (group commit); each caller waits until its transaction is committed
(``add_reports``) or is called back then (``add_reports_then``, the receiver's way: no
thread waits), so a request is answered 200 only once its reports are stored. The
transaction reads the messages it touches, applies the rules both stores share
(:mod:`exporter.pushmerge`) and writes them back (:mod:`exporter.sqlitewriter`). Reads
answer the sending-details contract (``query``, ``list_templates``, ``stats``), so the
same poller that reads the HTTP contract reads this store.

One request's bad data never costs another request its reports: an item a database
cannot hold is refused alone by the merge, and when a group transaction still fails,
each request is committed alone, and a request that fails alone item by item, so only
the item that cannot be stored is refused (``WriteResult.rejected``). This isolation is
:class:`GroupCommitWrites`', shared with the PostgreSQL store.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from exporter.config import ReceiverConfig
from exporter.errors import StoreUnavailable as StoreUnavailable  # re-exported for callers
from exporter.errors import UpstreamUnavailable
from exporter.groupcommit import GroupCommitter, failure_of
from exporter.pushitems import UNKNOWN_TEMPLATE as UNKNOWN_TEMPLATE
from exporter.pushitems import Outcome as Outcome
from exporter.pushitems import Segment as Segment
from exporter.pushitems import SendRegistration as SendRegistration
from exporter.pushitems import StatusReport as StatusReport
from exporter.pushitems import WriteResult as WriteResult
from exporter.pushitems import message_outcome as message_outcome
from exporter.pushitems import mobile_hash as mobile_hash
from exporter.records import DetailsPage, DetailsQuery, SendRecord, SendResult
from exporter.snapshotpages import SnapshotPages, filter_columns, filter_key
from exporter.sqlitewriter import PAGE_SIZE, Checkpointer, SqliteWriter
from exporter.stats import RequestStats
from exporter.templates import SmsTemplate

_COLUMNS = (
    "SELECT message_id, template_id, mobile, send_ms, result, status_code, status_desc,"
    " receive_ms, segments FROM messages"
)
PRUNE_EVERY_SECONDS = 60.0
PRUNE_CHUNK = 5000
ISOLATION_RETRIES = 3
"""Tries of one request alone when its transaction crossed another replica's."""
_ITEM_ERRORS = (ValueError, OverflowError, sqlite3.IntegrityError, sqlite3.InterfaceError)
"""What one item's own data can raise in SQLite (an integer out of range): that item is
refused; anything else (disk full, I/O) is the store's failure."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    message_id TEXT PRIMARY KEY,
    account TEXT NOT NULL DEFAULT '',
    template_id TEXT NOT NULL,
    registered INTEGER NOT NULL,
    send_ms INTEGER NOT NULL,
    mobile TEXT NOT NULL,
    mobile_hash TEXT NOT NULL,
    segments INTEGER NOT NULL,
    result TEXT NOT NULL,
    status_code TEXT NOT NULL,
    status_desc TEXT NOT NULL,
    receive_ms INTEGER
);
CREATE INDEX IF NOT EXISTS messages_by_template ON messages (template_id, send_ms, message_id);
CREATE INDEX IF NOT EXISTS messages_by_time ON messages (send_ms, message_id);
CREATE TABLE IF NOT EXISTS segments (
    message_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    total INTEGER NOT NULL,
    status TEXT NOT NULL,
    status_desc TEXT NOT NULL,
    update_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (message_id, sequence)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS templates (
    account TEXT NOT NULL DEFAULT '',
    template_id TEXT NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (account, template_id)
) WITHOUT ROWID;
"""
SCHEMA_VERSION = 1
"""``PRAGMA user_version``: 1 added the push account (several accounts share one store)."""
_MIGRATE_TO_1 = """
ALTER TABLE messages ADD COLUMN account TEXT NOT NULL DEFAULT '';
ALTER TABLE templates RENAME TO templates_v0;
CREATE TABLE templates (
    account TEXT NOT NULL DEFAULT '',
    template_id TEXT NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (account, template_id)
) WITHOUT ROWID;
INSERT INTO templates SELECT '', template_id, last_seen_ms FROM templates_v0;
DROP TABLE templates_v0;
"""


def record_from_row(row: Sequence[Any]) -> SendRecord:
    """A stored message, read in ``_COLUMNS`` order, as the contract's record."""
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

    def __init__(self, retention: float, clock: Callable[[], float]) -> None:
        self.retention = retention
        self.stats = RequestStats()
        self.commits = 0
        self.pruned = 0
        self.size_bytes = 0
        """The store's size on disk, measured at start and after each pruning."""
        self._clock = clock

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
            self._commit_group(writes)
        except StoreUnavailable as exc:  # the store is gone: every job is refused
            for job in writes:
                job.error = exc
        except self._data_errors:
            for job in writes:
                self._commit_alone(job)

    def _commit_alone(self, job: WriteJob) -> None:
        """One job in its own transaction; if one item's data fails it, each item alone."""
        for _attempt in range(ISOLATION_RETRIES):
            try:
                self._commit_group([job])
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
                self._commit_group([alone])
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
    if config.store_url is not None:
        from exporter.pgstore import PostgresStore  # the optional extra, imported when used

        return PostgresStore(config.store_url.value, retention=config.retention, clock=clock)
    return PushStore(
        config.store_path, retention=config.retention, synchronous=config.synchronous, clock=clock
    )


class PushStore(GroupCommitWrites):
    """Pushed reports and registrations in SQLite; a ``DetailsSource`` for the poller."""

    def __init__(
        self,
        path: str | Path,
        *,
        retention: float = 73 * 3600.0,
        synchronous: str = "normal",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise ValueError("synchronous must be 'normal' or 'full'")
        super().__init__(retention, clock)
        self.path = str(path)
        self._writer = self._connect(synchronous)
        self._migrate()
        self._measure()
        self._reader = self._connect(synchronous)
        self._read_lock = threading.Lock()
        self._snapshots = threading.local()
        self._sqlite = SqliteWriter(self._writer)
        self._checkpoints = Checkpointer(self.path, synchronous)
        self._pruned_at = float("-inf")
        self._closed = False
        self._writes = GroupCommitter(self._commit, self._maintain, name="push-store")

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # a new store's; fixed once it has data
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        return conn

    def _measure(self) -> None:
        conn = self._writer
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        self.size_bytes = int(pages) * int(page_size)

    def _migrate(self) -> None:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        columns = {row[1] for row in conn.execute("PRAGMA table_info(messages)")}
        if columns and "account" not in columns:  # a store written before version 1
            for statement in filter(str.strip, _MIGRATE_TO_1.split(";")):
                conn.execute(statement)
        else:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")

    # -- writes -----------------------------------------------------------------

    _data_errors = (sqlite3.Error, ValueError, OverflowError)
    _item_errors = _ITEM_ERRORS

    def available(self) -> bool:
        """The file is local: the store takes writes until it is closed."""
        return not self._closed

    def _commit_group(self, jobs: list[WriteJob]) -> None:
        merged = self._sqlite.write(jobs, round(self._clock() * 1000))
        for job, result in zip(jobs, merged.results, strict=True):
            job.result = result
        self.commits += 1
        self._checkpoints.wrote()

    def _maintain(self, jobs: list[WriteJob]) -> None:
        """Prune every minute, or when asked; after the group's answers are released.
        Empty a WAL the checkpointer could not catch up with."""
        if self._checkpoints.behind:
            self._checkpoints.restart(self._writer)
        now = self._clock()
        if any(j.prune for j in jobs) or now - self._pruned_at >= PRUNE_EVERY_SECONDS:
            self._pruned_at = now
            self._prune(round(now * 1000))

    def _prune(self, now_ms: int) -> None:
        cutoff = now_ms - round(self.retention * 1000)
        conn = self._writer
        try:
            while True:
                conn.execute("BEGIN IMMEDIATE")
                ids = [
                    r[0]
                    for r in conn.execute(
                        "SELECT message_id FROM messages WHERE send_ms < ? LIMIT ?",
                        (cutoff, PRUNE_CHUNK),
                    )
                ]
                conn.executemany("DELETE FROM segments WHERE message_id = ?", [(i,) for i in ids])
                conn.executemany("DELETE FROM messages WHERE message_id = ?", [(i,) for i in ids])
                conn.execute("DELETE FROM templates WHERE last_seen_ms < ?", (cutoff,))
                conn.execute("COMMIT")
                self._checkpoints.wrote()
                self.pruned += len(ids)
                if len(ids) < PRUNE_CHUNK:
                    self._measure()
                    return
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    # -- reads: the sending-details contract -------------------------------------

    @contextmanager
    def _reading(self, endpoint: str, started: float, stats: RequestStats) -> Iterator[None]:
        """A failed read is an upstream error for the poller (``up 0``), not a crash."""
        if self._closed:
            stats.observe(endpoint, "error", time.perf_counter() - started)
            raise UpstreamUnavailable("push store: closed")
        try:
            yield
        except sqlite3.Error as exc:
            stats.observe(endpoint, "error", time.perf_counter() - started)
            raise UpstreamUnavailable(f"push store: {exc}") from exc

    @contextmanager
    def snapshot(self) -> Iterator[object]:
        """This thread's queries inside read one snapshot, on a connection of their own.

        A read transaction in WAL mode: writes go on and commit, unseen by it; the other
        readers (other accounts, the details API) keep the shared reader meanwhile.
        """
        if getattr(self._snapshots, "conn", None) is not None:
            yield None  # already inside one
            return
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise UpstreamUnavailable(f"push store: {exc}") from exc
        self._snapshots.conn, self._snapshots.pages = conn, SnapshotPages()
        try:
            yield None
        finally:
            self._snapshots.conn = self._snapshots.pages = None
            conn.close()  # ends the read transaction

    def query(
        self,
        query: DetailsQuery,
        *,
        account: str | None = None,
        stats: RequestStats | None = None,
    ) -> DetailsPage:
        """One page of the stored messages (see :meth:`ReportStore.query`)."""
        started = time.perf_counter()
        stats = self.stats if stats is None else stats
        where = ["send_ms >= ?", "send_ms < ?"]
        args: list[object] = [round(query.start_time * 1000), round(query.end_time * 1000)]
        for column, value in filter_columns(query, account):
            where.append(f"{column} = ?")
            args.append(value)
        clause = " AND ".join(where)
        count_sql = f"SELECT count(*) FROM messages WHERE {clause}"  # noqa: S608 - fixed parts
        page_sql = f"{_COLUMNS} WHERE {clause} ORDER BY send_ms, message_id LIMIT ? OFFSET ?"
        pinned: sqlite3.Connection | None = getattr(self._snapshots, "conn", None)
        if pinned is not None:
            pages: SnapshotPages = self._snapshots.pages
            where_key = filter_key(query, account)
            with self._reading("send_details", started, stats):
                total = pages.total(where_key)
                if total is None:
                    (total,) = pinned.execute(count_sql, args).fetchone()
                after = pages.after(where_key, query.offset)
                if after is None:
                    rows = pinned.execute(page_sql, [*args, query.limit, query.offset]).fetchall()
                else:  # the previous page of this snapshot ended there: go on from its key
                    next_sql = (
                        f"{_COLUMNS} WHERE {clause} AND (send_ms, message_id) > (?, ?)"
                        " ORDER BY send_ms, message_id LIMIT ?"
                    )
                    # From the key on (args[0], the range's start, moves to it): the
                    # index range starts there, instead of being scanned from the start.
                    from_key = [after[0], *args[1:], *after, query.limit]
                    rows = pinned.execute(next_sql, from_key).fetchall()
                pages.read(where_key, total, query.offset, [(r[3], r[0]) for r in rows])
        else:
            with self._read_lock, self._reading("send_details", started, stats):
                conn = self._reader
                conn.execute("BEGIN")  # one snapshot for the total and the page
                try:
                    (total,) = conn.execute(count_sql, args).fetchone()
                    rows = conn.execute(page_sql, [*args, query.limit, query.offset]).fetchall()
                finally:
                    conn.execute("COMMIT")
        records = [record_from_row(row) for row in rows]
        stats.observe("send_details", "200", time.perf_counter() - started)
        return DetailsPage(total=total, records=records)

    def list_templates(
        self, *, account: str | None = None, stats: RequestStats | None = None
    ) -> list[SmsTemplate]:
        """Templates seen in registrations or attributed reports within the retention."""
        started = time.perf_counter()
        stats = self.stats if stats is None else stats
        sql = "SELECT DISTINCT template_id FROM templates"
        args: tuple[str, ...] = ()
        if account is not None:
            sql, args = f"{sql} WHERE account = ?", (account,)
        with self._read_lock, self._reading("templates", started, stats):
            rows = self._reader.execute(f"{sql} ORDER BY template_id", args).fetchall()
        stats.observe("templates", "200", time.perf_counter() - started)
        return [SmsTemplate(r[0], r[0], "") for r in rows]

    def message_count(self) -> int:
        """Messages currently stored."""
        with self._read_lock:
            (count,) = self._reader.execute("SELECT count(*) FROM messages").fetchone()
        return int(count)

    def segment_rows(self) -> list[tuple[str, int]]:
        """Every stored (message id, segment), for checks and tests."""
        with self._read_lock:
            rows = self._reader.execute("SELECT message_id, sequence FROM segments").fetchall()
        return [(str(r[0]), int(r[1])) for r in rows]

    # -- lifecycle --------------------------------------------------------------

    def close(self) -> None:
        """Finish queued writes, stop the writer and close the database."""
        if self._closed:
            return
        self._closed = True
        self._writes.close()
        self._checkpoints.close()
        self._writer.close()
        with self._read_lock:
            self._reader.close()

    def __enter__(self) -> PushStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


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
