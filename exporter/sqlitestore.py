"""The SQLite push store: status reports and send registrations in SQLite (WAL), read as
details.

Writes take the group commit both stores share (:class:`exporter.pushstore.GroupCommitWrites`):
one transaction reads the messages its group touches, applies the rules both stores share
(:mod:`exporter.pushmerge`) and writes them back (:mod:`exporter.sqlitewriter`). Reads
answer the sending-details contract on a shared reader connection, or, inside
``snapshot()``, in a read transaction of their own. The schema is versioned
(``PRAGMA user_version``) and migrated on opening; messages older than the retention are
pruned every minute, a chunk per transaction.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

from exporter.errors import StoreUnavailable, UpstreamUnavailable
from exporter.groupcommit import GroupCommitter
from exporter.mobilekey import MobileKey, key_change
from exporter.moves import MovedMinutes, minutes_of
from exporter.pushstore import (
    PRUNE_CHUNK,
    PRUNE_EVERY_SECONDS,
    GroupCommitWrites,
    WriteJob,
    record_from_row,
)
from exporter.records import DetailsPage, DetailsQuery
from exporter.snapshotpages import SnapshotPages, filter_columns, filter_key
from exporter.sqlitewriter import PAGE_SIZE, Checkpointer, SqliteWriter
from exporter.stats import RequestStats
from exporter.templates import SmsTemplate

log = structlog.get_logger("msgsms_exporter.pushstore")

_COLUMNS = (
    "SELECT message_id, template_id, mobile, send_ms, result, status_code, status_desc,"
    " receive_ms, segments FROM messages"
)
_ITEM_ERRORS = (ValueError, OverflowError, sqlite3.IntegrityError, sqlite3.InterfaceError)
"""What one item's own data can raise in SQLite (an integer out of range): that item is
refused; anything else (disk full, I/O) is the store's failure."""
_STORE_FAILURES = frozenset({3, 5, 6, 7, 8, 10, 11, 13, 14, 15, 26})
"""SQLite's primary result codes that say the store, not the data, failed a write: PERM,
BUSY, LOCKED, NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB."""

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
CREATE TABLE IF NOT EXISTS mobile_key (fingerprint TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS moves (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    moved_ms INTEGER NOT NULL,
    old_account TEXT NOT NULL,
    old_template TEXT NOT NULL,
    old_send_ms INTEGER NOT NULL,
    new_account TEXT NOT NULL,
    new_template TEXT NOT NULL,
    new_send_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS moves_by_time ON moves (moved_ms);
"""
SCHEMA_VERSION = 3
"""``PRAGMA user_version``: 1 added the push account (several accounts share one store);
2 keyed the numbers' hashes (:mod:`exporter.mobilekey`), clearing the unkeyed ones;
3 records the moves of stored messages (:mod:`exporter.moves`)."""
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


class PushStore(GroupCommitWrites):
    """Pushed reports and registrations in SQLite; a ``DetailsSource`` for the poller."""

    def __init__(
        self,
        path: str | Path,
        *,
        retention: float = 73 * 3600.0,
        synchronous: str = "normal",
        clock: Callable[[], float] = time.time,
        mobile_key: MobileKey | None = None,
        mobile_key_previous: MobileKey | None = None,
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise ValueError("synchronous must be 'normal' or 'full'")
        self.path = str(path)
        super().__init__(retention, clock, where=self.path)
        self._writer = self._connect(synchronous)
        opened = os.stat(self.path)
        self._file = (opened.st_dev, opened.st_ino)
        self._probing = False
        self._probe_lock = threading.Lock()
        self._migrate(mobile_key, mobile_key_previous)
        self._measure()
        self._reader = self._connect(synchronous)
        self._read_lock = threading.Lock()
        self._snapshots = threading.local()
        self._sqlite = SqliteWriter(self._writer, mobile_key)
        self._mobile_key = mobile_key
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

    def _migrate(self, key: MobileKey | None, previous: MobileKey | None) -> None:
        """The schema brought to :data:`SCHEMA_VERSION`, and the mobile key checked (a key
        the store does not know is refused: StoreUnavailable)."""
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            columns = {row[1] for row in conn.execute("PRAGMA table_info(messages)")}
            if columns and "account" not in columns:  # a store written before version 1
                for statement in filter(str.strip, _MIGRATE_TO_1.split(";")):
                    conn.execute(statement)
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            if version < 2:  # unkeyed hashes: a copy of the store would give every number
                self._clear_mobile_hashes()
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            if key is not None:
                row = conn.execute("SELECT fingerprint FROM mobile_key").fetchone()
                if key_change(None if row is None else row[0], key, previous):
                    self._clear_mobile_hashes()
                    conn.execute("DELETE FROM mobile_key")
                    conn.execute("INSERT INTO mobile_key VALUES (?)", (key.fingerprint,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            raise

    def _clear_mobile_hashes(self) -> None:
        """Forget every stored number's hash, overwriting the freed bytes (secure_delete)."""
        conn = self._writer
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("UPDATE messages SET mobile_hash = '' WHERE mobile_hash != ''")
        conn.execute("PRAGMA secure_delete = OFF")

    # -- writes -----------------------------------------------------------------

    _data_errors = (sqlite3.Error, ValueError, OverflowError)
    _item_errors = _ITEM_ERRORS

    def available(self) -> bool:
        """True while the store takes writes: its last write (or write test) succeeded and
        its path still names its file. While it does not, each call starts a write test
        on the writer thread (one at a time) whose outcome a later call reads: readiness,
        answered on the event loop, never waits for the disk."""
        if self._closed:
            return False
        began = time.monotonic()
        try:
            self._check_file()
        except StoreUnavailable as exc:
            self._used(False, began, exc)
            return False
        if not self.up:
            self._probe()
        return self.up

    def _probe(self) -> None:
        """Queue a write test (an empty write: see ``_commit_group``) unless one is queued."""
        with self._probe_lock:
            if self._probing:
                return
            self._probing = True

        def tested(_result: object, _failure: object) -> None:
            self._probing = False

        try:
            self._enqueue(WriteJob(), tested)
        except StoreUnavailable:  # closed meanwhile
            self._probing = False

    def _check_file(self) -> None:
        """StoreUnavailable unless the store's path still names the file it has open. A
        file deleted or replaced under a running store still takes its writes, into a
        file that is gone at the next start: acknowledged reports nobody would read."""
        try:
            found = os.stat(self.path)
        except OSError as exc:
            raise StoreUnavailable(
                f"the store file is gone ({exc.strerror}): deleted or moved while open;"
                " put it back, or restart the exporter to start a new store"
            ) from exc
        if (found.st_dev, found.st_ino) != self._file:
            raise StoreUnavailable(
                "another file took the store file's path while it was open;"
                " put the store back, or restart the exporter to open the new file"
            )

    def _commit_group(self, jobs: list[WriteJob]) -> None:
        self._check_file()
        try:
            if any(j.reports or j.sends for j in jobs):
                merged = self._sqlite.write(jobs, round(self._clock() * 1000))
                for job, result in zip(jobs, merged.results, strict=True):
                    job.result = result
            else:  # only write tests (``available``): one page, committed
                self._sqlite.touch(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if code is not None and code & 0xFF in _STORE_FAILURES:
                raise StoreUnavailable(f"SQLite: {exc}") from exc
            raise
        self.commits += 1
        self._checkpoints.wrote()

    def _maintain(self, jobs: list[WriteJob]) -> None:
        """Prune every minute, or when asked; after the group's answers are released.
        Empty a WAL the checkpointer could not catch up with."""
        if self._checkpoints.behind:
            self._checkpoints.restart(self._writer)
        now = self._clock()
        # A wall clock stepped back (NTP, a restored VM) makes the elapsed time negative:
        # prune then too, or pruning would stop for as long as the clock went back.
        elapsed = now - self._pruned_at
        if any(j.prune for j in jobs) or not 0 <= elapsed < PRUNE_EVERY_SECONDS:
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
                conn.execute("DELETE FROM moves WHERE moved_ms < ?", (cutoff,))
                conn.execute("COMMIT")
                self._checkpoints.wrote()
                self.pruned += len(ids)
                if len(ids) < PRUNE_CHUNK:
                    self._measure()
                    return
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.warning(
                "push store pruning failed; tried again in a minute",
                store=self.path,
                error=str(exc),
            )

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
            # mode=rw: a store file deleted under the exporter is an error to read, not an
            # empty database created in its place.
            uri = f"{Path(self.path).absolute().as_uri()}?mode=rw"
            conn = sqlite3.connect(uri, isolation_level=None, timeout=30.0, uri=True)
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
        """One page of the stored messages (see :meth:`exporter.pushstore.ReportStore.query`)."""
        started = time.perf_counter()
        stats = self.stats if stats is None else stats
        where = ["send_ms >= ?", "send_ms < ?"]
        args: list[object] = [round(query.start_time * 1000), round(query.end_time * 1000)]
        for column, value in filter_columns(query, account, self._mobile_key):
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

    def moved_since(self, cursor: object, *, account: str | None = None) -> MovedMinutes:
        """The minutes stored messages of ``account`` moved from or to since ``cursor`` (a
        previous answer's; None: nothing, only a cursor for next time). Inside
        ``snapshot()``, as of that snapshot."""
        started = time.perf_counter()
        after = cursor if isinstance(cursor, int) else None
        sql = "SELECT old_send_ms, new_send_ms FROM moves WHERE seq > ? AND seq <= ?"
        args: list[object] = [-1 if after is None else after]
        if account is not None:
            sql += " AND (old_account = ? OR new_account = ?)"
        pinned: sqlite3.Connection | None = getattr(self._snapshots, "conn", None)
        with self._reading("moves", started, RequestStats()):  # a failed poll says it
            if pinned is not None:
                return self._moved(pinned, sql, args, after, account)
            with self._read_lock:
                self._reader.execute("BEGIN")
                try:
                    return self._moved(self._reader, sql, args, after, account)
                finally:
                    self._reader.execute("COMMIT")

    @staticmethod
    def _moved(
        conn: sqlite3.Connection,
        sql: str,
        args: list[object],
        after: int | None,
        account: str | None,
    ) -> MovedMinutes:
        (last,) = conn.execute("SELECT coalesce(max(seq), 0) FROM moves").fetchone()
        if after is None:
            return MovedMinutes(set(), int(last))
        args = [*args, last, *(() if account is None else (account, account))]
        return MovedMinutes(minutes_of(conn.execute(sql, args)), int(last))

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
