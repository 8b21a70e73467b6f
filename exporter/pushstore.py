"""The push store: status reports and send registrations in SQLite (WAL), read as details.

Writes go through one writer thread that gathers the work of concurrent requests into a
single transaction (group commit); each caller blocks until its transaction is committed,
so a request is answered 200 only once its reports are on disk. Reads answer the
sending-details contract (``query``, ``list_templates``, ``stats``), so the same poller
that reads the HTTP contract reads this store.

A message's result follows its segments (a long SMS has one report per segment):
failed as soon as any segment reports a final non-DELIVRD code (the earliest such report
gives the code), success once every segment reported DELIVRD, sending otherwise. A
non-final report (``ACCEPTD``, see :data:`~exporter.status_codes.NON_FINAL_CODES`)
keeps its segment sending, and the segment's first final report replaces it.

One request's bad data never costs another request its reports: each request's writes
run in a savepoint of the group transaction, and when one fails its items are written
one by one, so only the item that cannot be stored is refused (``WriteResult.rejected``).
A failed group commit is retried request by request, each in a transaction of its own.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from exporter.config import ReceiverConfig
from exporter.errors import StoreUnavailable as StoreUnavailable  # re-exported for callers
from exporter.errors import UpstreamUnavailable
from exporter.groupcommit import GroupCommitter
from exporter.records import DetailsPage, DetailsQuery, SendRecord, SendResult, mask_mobile
from exporter.stats import RequestStats
from exporter.status_codes import DELIVERED_CODE, NON_FINAL_CODES, describe, is_final
from exporter.templates import SmsTemplate

UNKNOWN_TEMPLATE = "unknown"
"""Template of reports whose message was never registered and carries no usable extend."""
_COLUMNS = (
    "SELECT message_id, template_id, mobile, send_ms, result, status_code, status_desc,"
    " receive_ms, segments FROM messages"
)
# Named columns: a store migrated from version 0 has ``account`` last.
_INSERT_MESSAGE = (
    "INSERT INTO messages (message_id, account, template_id, registered, send_ms, mobile,"
    " mobile_hash, segments, result, status_code, status_desc, receive_ms)"
)
PRUNE_EVERY_SECONDS = 60.0
PRUNE_CHUNK = 5000
_ITEM_ERRORS = (ValueError, OverflowError, sqlite3.IntegrityError, sqlite3.InterfaceError)
"""What one item's own data can raise (a lone surrogate, an integer out of range): that
item is refused; anything else (disk full, I/O) is the store's failure."""
_NON_FINAL = tuple(sorted(NON_FINAL_CODES))
_IN_NON_FINAL = ", ".join("?" * len(_NON_FINAL))
# A segment keeps its first final report; a final report replaces a non-final one.
_INSERT_SEGMENT = (
    "INSERT INTO segments VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (message_id, sequence)"  # noqa: S608 - placeholders
    " DO UPDATE SET total = excluded.total, status = excluded.status,"
    " status_desc = excluded.status_desc, update_ms = excluded.update_ms,"
    " received_ms = excluded.received_ms, source = excluded.source"
    f" WHERE segments.status IN ({_IN_NON_FINAL}) AND excluded.status NOT IN ({_IN_NON_FINAL})"
)

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


@dataclass(frozen=True, slots=True)
class StatusReport:
    """One pushed status report (one segment of one message)."""

    message_id: str
    status: str
    sequence: int = 1
    total: int = 1
    status_desc: str = ""
    update_time: float | None = None
    source: str = ""
    extend: str = ""
    template_id: str | None = None
    """The template named by ``extend``, when attribution from extend is configured."""
    account: str = ""
    """The push account it was pushed for (its path or signing key); "" when only one."""


@dataclass(frozen=True, slots=True)
class SendRegistration:
    """What the sender knows at sending time: message id, template, send time."""

    message_id: str
    template_id: str
    send_time: float
    mobile: str = ""
    segments: int = 1
    account: str = ""


@dataclass(slots=True)
class WriteResult:
    """What one write added; ``rejected`` lists the indexes of items that cannot be stored."""

    stored: int = 0
    duplicates: int = 0
    unattributed: int = 0
    rejected: list[int] = field(default_factory=list)

    def merge(self, other: WriteResult) -> None:
        """Add another result into this one."""
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.unattributed += other.unattributed


@dataclass(frozen=True, slots=True)
class Segment:
    """The stored facts of one segment report that decide a message's result."""

    sequence: int
    total: int
    status: str
    status_desc: str
    update_ms: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """A message's result as its segments decide it."""

    result: SendResult
    status_code: str = ""
    status_desc: str = ""
    receive_ms: int | None = None


def message_outcome(segments: Sequence[Segment], expected: int) -> Outcome:
    """Failed on the earliest final non-DELIVRD segment; success when all ``expected``
    segments delivered; sending otherwise (non-final reports decide nothing)."""
    final = [s for s in segments if is_final(s.status)]
    failed = [s for s in final if s.status != DELIVERED_CODE]
    if failed:
        first = min(failed, key=lambda s: (s.update_ms, s.sequence))
        return Outcome(SendResult.FAILED, first.status, first.status_desc, first.update_ms)
    total = max([expected, *(s.total for s in segments)])
    if final and len({s.sequence for s in final}) >= total:
        return Outcome(
            SendResult.SUCCESS,
            DELIVERED_CODE,
            final[0].status_desc or describe(DELIVERED_CODE),
            max(s.update_ms for s in final),
        )
    return Outcome(SendResult.SENDING)


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


def mobile_hash(mobile: str) -> str:
    """The stored stand-in for a number: queries filter by it, the number itself is not kept."""
    digits = mobile.lstrip("+")
    return hashlib.sha256(digits.encode()).hexdigest() if digits else ""


@dataclass(slots=True)
class WriteJob:
    """One caller's writes, waiting for the group commit that holds them."""

    reports: Sequence[StatusReport] = ()
    sends: Sequence[SendRegistration] = ()
    done: threading.Event = field(default_factory=threading.Event)
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
        """One page of the stored messages, ordered by (send time, message id)."""
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
    """What both stores share: writes wait for the group commit holding them; views."""

    _writes: GroupCommitter[WriteJob]

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

    def prune(self) -> None:
        """Delete what is older than the retention now (the writer also does it every minute)."""
        self._writes.submit(WriteJob(prune=True))

    def account_view(self: ReportStore, account: str | None) -> AccountView:
        """The store as one push account's ``DetailsSource`` (None: every account)."""
        return AccountView(self, account)


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
        self.path = str(path)
        self.retention = retention
        self.stats = RequestStats()
        self.commits = 0
        self.pruned = 0
        self.size_bytes = 0
        """The database's size, measured at start and after each pruning (every minute)."""
        self._clock = clock
        self._writer = self._connect(synchronous)
        self._migrate()
        self._measure()
        self._reader = self._connect(synchronous)
        self._read_lock = threading.Lock()
        self._snapshots = threading.local()
        self._pruned_at = float("-inf")
        self._closed = False
        self._writes = GroupCommitter(self._commit, self._maintain, name="push-store")

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
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

    def available(self) -> bool:
        """The file is local: the store takes writes until it is closed."""
        return not self._closed

    def _commit(self, jobs: list[WriteJob]) -> None:
        now_ms = round(self._clock() * 1000)
        try:
            self._transaction(jobs, now_ms)
        except sqlite3.Error:
            # The group failed as a whole (disk trouble, a failed COMMIT): each request
            # alone, so that one request's failure is never another's.
            self._rollback()
            for job in jobs:
                try:
                    self._transaction([job], now_ms)
                except sqlite3.Error as exc:
                    self._rollback()
                    job.error = exc

    def _maintain(self, jobs: list[WriteJob]) -> None:
        """Prune every minute, or when asked; after the group's answers are released."""
        now = self._clock()
        if any(j.prune for j in jobs) or now - self._pruned_at >= PRUNE_EVERY_SECONDS:
            self._pruned_at = now
            self._prune(round(now * 1000))

    def _rollback(self) -> None:
        if self._writer.in_transaction:
            self._writer.execute("ROLLBACK")

    def _transaction(self, jobs: list[WriteJob], now_ms: int) -> None:
        """Write the jobs in one transaction; sqlite3.Error when it cannot commit."""
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        seen: set[tuple[str, str]] = set()
        for job in jobs:
            job.result = self._write_job(job, now_ms, seen)
        conn.executemany(
            "INSERT INTO templates (account, template_id, last_seen_ms) VALUES (?, ?, ?)"
            " ON CONFLICT (account, template_id)"
            " DO UPDATE SET last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
            [(account, template, now_ms) for account, template in sorted(seen)],
        )
        conn.execute("COMMIT")
        self.commits += 1

    def _write_job(self, job: WriteJob, now_ms: int, seen: set[tuple[str, str]]) -> WriteResult:
        """A job's items in a savepoint; if one cannot be stored, each item in its own."""
        items: Sequence[StatusReport | SendRegistration] = job.sends or job.reports
        templates: set[tuple[str, str]] = set()
        try:
            with self._savepoint():
                result = WriteResult()
                for item in items:
                    result.merge(self._write_item(item, now_ms, templates))
        except _ITEM_ERRORS:
            result, templates = WriteResult(), set()
            for index, item in enumerate(items):
                mine: set[tuple[str, str]] = set()
                try:
                    with self._savepoint():
                        result.merge(self._write_item(item, now_ms, mine))
                except _ITEM_ERRORS:
                    result.rejected.append(index)
                    continue
                templates |= mine
        seen |= templates
        return result

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        conn = self._writer
        conn.execute("SAVEPOINT item")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO item")
            conn.execute("RELEASE item")
            raise
        conn.execute("RELEASE item")

    def _write_item(
        self, item: StatusReport | SendRegistration, now_ms: int, seen: set[tuple[str, str]]
    ) -> WriteResult:
        if isinstance(item, SendRegistration):
            return self._write_send(item, seen)
        return self._write_report(item, now_ms, seen)

    def _write_send(self, send: SendRegistration, seen: set[tuple[str, str]]) -> WriteResult:
        send_ms = round(send.send_time * 1000)
        # The registration decides the message's account and template.
        cursor = self._writer.execute(
            f"{_INSERT_MESSAGE} VALUES (?, ?, ?, 1, ?, ?, ?, ?, 'sending', '', '', NULL)"
            " ON CONFLICT (message_id) DO UPDATE SET template_id = excluded.template_id,"
            " account = excluded.account,"
            " registered = 1, send_ms = excluded.send_ms, mobile = excluded.mobile,"
            " mobile_hash = excluded.mobile_hash,"
            " segments = max(segments, excluded.segments) WHERE registered = 0",
            (
                send.message_id,
                send.account,
                send.template_id,
                send_ms,
                mask_mobile(send.mobile) if send.mobile else "",
                mobile_hash(send.mobile),
                send.segments,
            ),
        )
        seen.add((send.account, send.template_id))
        if cursor.rowcount == 0:
            return WriteResult(duplicates=1)
        self._settle(send.message_id)
        return WriteResult(stored=1)

    def _write_report(
        self, report: StatusReport, now_ms: int, seen: set[tuple[str, str]]
    ) -> WriteResult:
        conn = self._writer
        update_ms = now_ms if report.update_time is None else round(report.update_time * 1000)
        cursor = conn.execute(
            _INSERT_SEGMENT,
            (
                report.message_id,
                report.sequence,
                report.total,
                report.status,
                report.status_desc,
                update_ms,
                now_ms,
                report.source,
                *_NON_FINAL,
                *_NON_FINAL,
            ),
        )
        if cursor.rowcount == 0:
            return WriteResult(duplicates=1)
        row = conn.execute(
            "SELECT template_id, registered, account FROM messages WHERE message_id = ?",
            (report.message_id,),
        ).fetchone()
        template = report.template_id or UNKNOWN_TEMPLATE
        account = report.account if row is None else row[2]
        seen.add((account, template if row is None else row[0]))
        if row is None and report.total == 1:
            # The common case, a new one-segment message: its only report decides it.
            outcome = message_outcome(
                [Segment(1, 1, report.status, report.status_desc, update_ms)], 1
            )
            conn.execute(
                f"{_INSERT_MESSAGE} VALUES (?, ?, ?, 0, ?, '', '', 1, ?, ?, ?, ?)",
                (
                    report.message_id,
                    account,
                    template,
                    update_ms,
                    outcome.result.value,
                    outcome.status_code,
                    outcome.status_desc,
                    outcome.receive_ms,
                ),
            )
            return WriteResult(stored=1, unattributed=int(template == UNKNOWN_TEMPLATE))
        if row is None:
            # Never registered: the send time is unknown, the report's time stands in.
            conn.execute(
                f"{_INSERT_MESSAGE} VALUES (?, ?, ?, 0, ?, '', '', ?, 'sending', '', '', NULL)",
                (report.message_id, account, template, update_ms, report.total),
            )
        elif not row[1] and row[0] == UNKNOWN_TEMPLATE and report.template_id:
            conn.execute(
                "UPDATE messages SET template_id = ? WHERE message_id = ?",
                (template, report.message_id),
            )
            seen.add((account, template))
        else:
            template = row[0]
        self._settle(report.message_id)
        return WriteResult(stored=1, unattributed=int(template == UNKNOWN_TEMPLATE))

    def _settle(self, message_id: str) -> None:
        conn = self._writer
        rows = conn.execute(
            "SELECT sequence, total, status, status_desc, update_ms FROM segments"
            " WHERE message_id = ?",
            (message_id,),
        ).fetchall()
        if not rows:
            return
        (expected,) = conn.execute(
            "SELECT segments FROM messages WHERE message_id = ?", (message_id,)
        ).fetchone()
        outcome = message_outcome([Segment(*row) for row in rows], expected)
        conn.execute(
            "UPDATE messages SET result = ?, status_code = ?, status_desc = ?, receive_ms = ?,"
            " segments = max(segments, ?) WHERE message_id = ?",
            (
                outcome.result.value,
                outcome.status_code,
                outcome.status_desc,
                outcome.receive_ms,
                max(r[1] for r in rows),
                message_id,
            ),
        )

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
        self._snapshots.conn = conn
        try:
            yield None
        finally:
            self._snapshots.conn = None
            conn.close()  # ends the read transaction

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
        started = time.perf_counter()
        stats = self.stats if stats is None else stats
        where = ["send_ms >= ?", "send_ms < ?"]
        args: list[object] = [round(query.start_time * 1000), round(query.end_time * 1000)]
        if account is not None:
            where.append("account = ?")
            args.append(account)
        if query.template_id is not None:
            where.append("template_id = ?")
            args.append(query.template_id)
        if query.mobile is not None:
            where.append("mobile_hash = ?")
            args.append(mobile_hash(query.mobile))
        if query.send_result is not None:
            where.append("result = ?")
            args.append(query.send_result.value)
        clause = " AND ".join(where)
        count_sql = f"SELECT count(*) FROM messages WHERE {clause}"  # noqa: S608 - fixed parts
        page_sql = f"{_COLUMNS} WHERE {clause} ORDER BY send_ms, message_id LIMIT ? OFFSET ?"
        pinned: sqlite3.Connection | None = getattr(self._snapshots, "conn", None)
        if pinned is not None:
            with self._reading("send_details", started, stats):
                (total,) = pinned.execute(count_sql, args).fetchone()
                rows = pinned.execute(page_sql, [*args, query.limit, query.offset]).fetchall()
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
