"""The push store in PostgreSQL: several exporters share one database.

Writes use the same group commit as the SQLite store: a writer thread gathers the work
of concurrent requests into one transaction and answers each only after COMMIT
(:mod:`exporter.pgwriter`). In that transaction the touched messages are locked in id
order, so a send registered at one replica and reported at another (or the two segments
of a long SMS reported at two replicas at once) are merged as one message: the second
replica waits for the first and then reads its segments. The merge itself is
:func:`exporter.pushmerge.merge_writes`, the rules of the SQLite store.

The schema is versioned (``msgsms_schema_version``) and migrated under an advisory lock,
so replicas starting together create it once. Pruning takes another advisory lock with a
try-lock and records when it last ran, so N replicas prune once a minute, not N times.
Reads and pruning use a pool, writes the writer's own connection; both reconnect on
their own: with the database down the exporter keeps serving, answers pushes 503 (not
stored) and ``/-/ready`` 503, and recovers when it is back.

It works behind a connection pooler in transaction mode (PgBouncer): no state outlives
a transaction (locks are transaction locks, settings ``SET LOCAL``, a snapshot is one
transaction), and ``prepared_statements=off`` in the URL stops psycopg preparing
statements where the pooler cannot carry them (:mod:`exporter.pgurl`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from exporter.errors import StoreUnavailable, UpstreamUnavailable
from exporter.groupcommit import GroupCommitter
from exporter.mobilekey import MobileKey
from exporter.moves import MovedMinutes, minutes_of
from exporter.pgschema import LOCK_SPACE, PRUNE_LOCK, migrate
from exporter.pgurl import connection_settings as connection_settings
from exporter.pgurl import unverified_host as unverified_host
from exporter.pgwriter import (
    ABANDONED_AFTER_MS,
    CONFLICTS,
    INDEXES_ONLY,
    ITEM_ERRORS,
    PgWriter,
    first_line,
)
from exporter.pushstore import (
    PRUNE_CHUNK,
    PRUNE_EVERY_SECONDS,
    GroupCommitWrites,
    WriteJob,
    record_from_row,
)
from exporter.records import DetailsPage, DetailsQuery
from exporter.snapshotpages import SnapshotPages, filter_columns, filter_key
from exporter.stats import RequestStats
from exporter.templates import SmsTemplate

_ABANDONED = (
    f"SELECT set_config('idle_in_transaction_session_timeout', '{ABANDONED_AFTER_MS}', true)"
)
"""For this transaction only: the server ends it once its client is silent inside it."""
_TAKE_LEASE = f"{_ABANDONED}, pg_try_advisory_xact_lock(%s, %s)"
"""The pruning lease, one statement: the transaction's limit, then the lock (last column)."""

CONNECT_TIMEOUT = 3.0
"""Seconds a write waits for a connection before it is refused (503)."""
AVAILABLE_WITHIN = 1.0
"""Seconds the database has to answer for the store to be available (``/-/ready``)."""
RECONNECT_WITHIN = 3.0
"""Seconds the pool retries a failed connection (after 1 s, then 2 s) before it gives up;
the next use starts again at once. Retrying for ever doubles the delay without a bound:
after an outage of ten minutes the next try came up to ten minutes after the database was
back, and meanwhile ``/-/ready`` kept every replica out of the load balancer."""
_READ_ONLY_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"


class PostgresStore(GroupCommitWrites):
    """Pushed reports and registrations in PostgreSQL; a ``DetailsSource`` for the poller."""

    def __init__(
        self,
        url: str,
        *,
        retention: float = 73 * 3600.0,
        clock: Callable[[], float] = time.time,
        pool_size: int = 6,
        connect_timeout: float = CONNECT_TIMEOUT,
        mobile_key: MobileKey | None = None,
        mobile_key_previous: MobileKey | None = None,
    ) -> None:
        settings = connection_settings(url)
        self._mobile_key = mobile_key
        self._mobile_key_previous = mobile_key_previous
        # Not up until the database first answers.
        super().__init__(retention, clock, where=_where(settings), up=False)
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            kwargs=settings,
            min_size=1,
            max_size=pool_size,
            open=False,
            check=ConnectionPool.check_connection,
            reset=_reset,
            timeout=connect_timeout,
            reconnect_timeout=RECONNECT_WITHIN,
            name="push-store",
        )
        self._pool.open(wait=False)
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._writer = PgWriter(settings, self._prepare, mobile_key)
        self._snapshots = threading.local()
        self._prune_due = 0.0
        self._probe: _Probe | None = None
        self._probe_lock = threading.Lock()
        self._writes = GroupCommitter(
            self._commit, self._maintain, name="push-store-pg", maintain_apart=True
        )

    # -- connections and schema -------------------------------------------------

    @contextmanager
    def _connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A checked connection with the schema in place; StoreUnavailable otherwise (the
        store is down then). Getting one does not set the store up again: only a write
        does (see ``available``)."""
        began = time.monotonic()
        try:
            with self._pool.connection(timeout) as conn:
                self._prepare(conn)
                yield conn
        except PoolTimeout as exc:
            failure = StoreUnavailable("PostgreSQL is unreachable")
            self._used(False, began, failure)
            raise failure from exc
        except CONFLICTS:
            raise  # a deadlock with another replica: the caller tries again
        except psycopg.OperationalError as exc:
            failure = StoreUnavailable(f"PostgreSQL: {first_line(exc)}")
            self._used(False, began, failure)
            raise failure from exc

    def _prepare(self, conn: psycopg.Connection[Any]) -> None:
        """The schema, migrated once per process (and once for all replicas)."""
        if not self._schema_ready:
            with self._schema_lock:
                if not self._schema_ready:
                    migrate(conn, self._mobile_key, self._mobile_key_previous)
                    self._schema_ready = True

    def available(self) -> bool:
        """True while the store takes writes, checked within a second: while it is up,
        that the database answers and is not read-only; while it is down, that a write
        test commits (only a write sets the store up again: a database that refuses
        writes, full or holding a lock, may still answer reads).

        The check runs on a thread of its own, which later callers join while it lasts:
        behind a pooler a statement waits in the pooler's queue while the database is
        down (PgBouncer's ``query_wait_timeout``, 120 s by default), and ``/-/ready``
        must answer 503 meanwhile, not hang.
        """
        if self._writes.closed:
            return False
        probe = self._check()
        ok = probe.done.wait(AVAILABLE_WITHIN) and probe.ok
        if not ok:  # also while the check still waits (in a pooler's queue)
            self._used(False, probe.began)
        return ok and self.up

    def _check(self) -> _Probe:
        """The check in progress, or a new one: a read while the store is up, a write
        test while it is down."""
        with self._probe_lock:
            if self._probe is None or self._probe.done.is_set():
                self._probe = _Probe(self._answers if self.up else self._writes_again)
            return self._probe

    def _answers(self) -> bool:
        """Whether the database answers and takes writes (a failover's demoted primary,
        or a managed database whose disk filled, answers read-only)."""
        began = time.monotonic()
        try:
            with self._connection(AVAILABLE_WITHIN) as conn:
                conn.autocommit = True
                writable = _scalar_text(conn.execute("SHOW transaction_read_only")) != "on"
        except StoreUnavailable as exc:  # logged with its reason (a schema or key refused)
            self._used(False, began, exc)
            return False
        except psycopg.Error:
            return False
        if not writable:
            self._used(False, began, StoreUnavailable("PostgreSQL is read-only"))
        return writable

    def _writes_again(self) -> bool:
        """The write test of a store that is down, on the writer thread (it sees what
        writes see: see ``PgWriter.beat``); its success sets the store up again."""
        try:
            self._writes.submit(WriteJob())
        except StoreUnavailable:
            return False
        return True

    # -- writes -----------------------------------------------------------------

    _data_errors = (psycopg.Error,)
    _item_errors = ITEM_ERRORS
    _retry_errors = CONFLICTS

    def _commit_group(self, jobs: list[WriteJob]) -> None:
        if not any(j.reports or j.sends for j in jobs):  # only write tests (``available``)
            self._writer.beat(round(self._clock() * 1000))
            return
        merged = self._writer.write(jobs, round(self._clock() * 1000))
        for job, result in zip(jobs, merged.results, strict=True):
            job.result = result
        self.commits += 1

    # -- retention --------------------------------------------------------------

    def _maintain(self, jobs: list[WriteJob]) -> None:
        """Every minute, or when asked: prune (one replica at a time) and measure."""
        forced = any(j.prune for j in jobs)
        now = self._clock()
        # Due again at once when the wall clock stepped back (NTP, a restored VM), or
        # pruning would stop for as long as it went back.
        if not forced and now < self._prune_due <= now + PRUNE_EVERY_SECONDS:
            return
        self._prune_due = now + PRUNE_EVERY_SECONDS
        self._maintain_now(now, forced=forced)

    def _maintain_now(self, now: float, *, forced: bool) -> None:
        try:
            self._prune_as_leader(now, forced=forced)
            with self._connection() as conn:
                conn.autocommit = True
                self.size_bytes = _scalar(
                    conn.execute(
                        "SELECT sum(pg_total_relation_size(t)) FROM unnest(ARRAY["
                        "'msgsms_messages', 'msgsms_segments', 'msgsms_templates']::regclass[]) t"
                    )
                )
        except (StoreUnavailable, psycopg.Error):
            return  # tried again at the next minute

    def _prune_as_leader(self, now: float, *, forced: bool) -> None:
        """Prune unless another replica is pruning, or did within the minute.

        The lock is a transaction's (``pg_try_advisory_xact_lock``), held by a lease
        transaction on one connection while the deletions commit in chunks on another:
        behind a pooler in transaction mode a session's lock and unlock may run on two
        server connections and leave the lock held. The lease ends with its transaction,
        also when this process dies mid-way; and when its host dies, or is cut off, the
        server ends it after ``ABANDONED_AFTER_MS`` idle in it, as it ends a write's (it
        would otherwise hold the lease until TCP keepalive noticed, two hours by default,
        and no replica would prune meanwhile). A live lease is touched after each chunk,
        so it is never idle that long while its chunks take less.
        """
        with self._connection() as lease, lease.transaction():
            got = lease.execute(_TAKE_LEASE, (LOCK_SPACE, PRUNE_LOCK)).fetchone()
            if not (got and got[-1]):
                return  # another replica is pruning
            now_ms = round(now * 1000)
            last = lease.execute("SELECT last_prune_ms FROM msgsms_maintenance").fetchone()
            if not forced and last and 0 <= now_ms - last[0] < PRUNE_EVERY_SECONDS * 1000:
                return  # another replica pruned within the minute (by this clock)
            cutoff = now_ms - round(self.retention * 1000)
            with self._connection() as conn:
                conn.autocommit = True
                self._delete_before(conn, cutoff, lambda: lease.execute("SELECT 1"))
            lease.execute("UPDATE msgsms_maintenance SET last_prune_ms = %s", (now_ms,))

    def _delete_before(
        self, conn: psycopg.Connection[Any], cutoff: int, touch: Callable[[], object]
    ) -> None:
        """Delete what was sent before ``cutoff`` in short transactions of a chunk each,
        calling ``touch`` after each."""
        while True:
            with conn.transaction():
                conn.execute(_ABANDONED)
                gone = conn.execute(
                    "DELETE FROM msgsms_messages WHERE message_id IN (SELECT message_id"
                    " FROM msgsms_messages WHERE send_ms < %s LIMIT %s) RETURNING message_id",
                    (cutoff, PRUNE_CHUNK),
                ).fetchall()
                ids = [r[0] for r in gone]
                conn.execute("DELETE FROM msgsms_segments WHERE message_id = ANY(%s)", (ids,))
            self.pruned += len(ids)
            touch()
            if len(ids) < PRUNE_CHUNK:
                break
        conn.execute("DELETE FROM msgsms_templates WHERE last_seen_ms < %s", (cutoff,))
        conn.execute("DELETE FROM msgsms_moves WHERE moved_ms < %s", (cutoff,))

    # -- reads: the sending-details contract -------------------------------------

    @contextmanager
    def _reading(
        self, endpoint: str, stats: RequestStats | None
    ) -> Iterator[psycopg.Connection[Any]]:
        """A failed read is an upstream error for the poller (``up 0``), not a crash."""
        started = time.perf_counter()
        try:
            if self._writes.closed:
                raise StoreUnavailable("closed")
            pinned: psycopg.Connection[Any] | None = getattr(self._snapshots, "conn", None)
            if pinned is not None:  # inside snapshot(): its transaction
                yield pinned
            else:
                with self._connection() as conn, conn.transaction():
                    # One snapshot for a page and its total.
                    conn.execute(f"{_READ_ONLY_SNAPSHOT}; {INDEXES_ONLY}")
                    yield conn
        except (StoreUnavailable, psycopg.Error) as exc:
            if stats is not None:
                stats.observe(endpoint, "error", time.perf_counter() - started)
            raise UpstreamUnavailable(f"push store: {first_line(exc)}") from exc
        if stats is not None:
            stats.observe(endpoint, "200", time.perf_counter() - started)
        if not self.up:  # the database answers again: does it take writes? (not waited for)
            self._check()

    @contextmanager
    def snapshot(self) -> Iterator[object]:
        """This thread's queries inside read one REPEATABLE READ snapshot (one connection).

        The writes of every replica go on and commit meanwhile, unseen by it.
        """
        if getattr(self._snapshots, "conn", None) is not None:
            yield None  # already inside one
            return
        try:
            with self._reading("snapshot", None) as conn:
                self._snapshots.conn, self._snapshots.pages = conn, SnapshotPages()
                try:
                    yield None
                finally:
                    self._snapshots.conn = self._snapshots.pages = None
        except UpstreamUnavailable:
            raise
        except (StoreUnavailable, psycopg.Error) as exc:  # ending the transaction failed
            raise UpstreamUnavailable(f"push store: {first_line(exc)}") from exc

    def query(
        self,
        query: DetailsQuery,
        *,
        account: str | None = None,
        stats: RequestStats | None = None,
    ) -> DetailsPage:
        """One page of the stored messages (see :meth:`ReportStore.query`)."""
        where: list[sql.Composable] = [sql.SQL("send_ms >= %s AND send_ms < %s")]
        args: list[object] = [round(query.start_time * 1000), round(query.end_time * 1000)]
        for column, value in filter_columns(query, account, self._mobile_key):
            where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            args.append(value)
        # Within one snapshot, pages go on from the previous page's end (snapshotpages).
        pages: SnapshotPages | None = getattr(self._snapshots, "pages", None)
        where_key = filter_key(query, account)
        after = None if pages is None else pages.after(where_key, query.offset)
        clause = sql.SQL(" AND ").join(where)
        with self._reading("send_details", self.stats if stats is None else stats) as conn:
            total = None if pages is None else pages.total(where_key)
            if total is None:
                count = conn.execute(
                    sql.SQL("SELECT count(*) FROM msgsms_messages WHERE {}").format(clause), args
                )
                total = _scalar(count)
            if after is None:
                keys, page_args = sql.SQL("OFFSET %s"), [*args, query.limit, query.offset]
            else:
                keys = sql.SQL("")
                following = sql.SQL("(send_ms, message_id) > (%s, %s)")
                clause = sql.SQL(" AND ").join([*where, following])
                # The range's start moves to the key: the index range starts there.
                page_args = [after[0], *args[1:], *after, query.limit]
            # The page's keys come from the index alone (an index-only scan skips the
            # offset without reading a table row); only the page's rows are read.
            rows = conn.execute(
                sql.SQL(
                    "SELECT message_id, template_id, mobile, send_ms, result, status_code,"
                    " status_desc, receive_ms, segments FROM msgsms_messages"
                    " WHERE message_id IN (SELECT message_id FROM msgsms_messages WHERE {}"
                    " ORDER BY send_ms, message_id LIMIT %s {})"
                    " ORDER BY send_ms, message_id"
                ).format(clause, keys),
                page_args,
            ).fetchall()
            if pages is not None:
                pages.read(where_key, total, query.offset, [(r[3], r[0]) for r in rows])
        return DetailsPage(total=total, records=[record_from_row(row) for row in rows])

    def moved_since(self, cursor: object, *, account: str | None = None) -> MovedMinutes:
        """The minutes stored messages of ``account`` moved from or to since ``cursor``
        (see :meth:`ReportStore.moved_since`). The cursor is the snapshot's xmin (every
        transaction before it had ended) and the moves seen from it on: a move committed
        after a snapshot by a transaction older than it is found by the next call."""
        since = cursor if isinstance(cursor, _MoveCursor) else None
        with self._reading("moves", None) as conn:
            xmin = _scalar(conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"))
            rows = conn.execute(
                "SELECT seq, xid::text::bigint, old_send_ms, new_send_ms FROM msgsms_moves"
                " WHERE xid >= %(since)s::text::xid8 AND (%(account)s::text IS NULL"
                " OR old_account = %(account)s OR new_account = %(account)s)",
                {"since": xmin if since is None else since.xmin, "account": account},
            ).fetchall()
        seen = frozenset(r[0] for r in rows if r[1] >= xmin)
        if since is None:
            return MovedMinutes(set(), _MoveCursor(xmin, seen))
        fresh = [(r[2], r[3]) for r in rows if r[0] not in since.seen]
        return MovedMinutes(minutes_of(fresh), _MoveCursor(xmin, seen))

    def list_templates(
        self, *, account: str | None = None, stats: RequestStats | None = None
    ) -> list[SmsTemplate]:
        """Templates seen in registrations or attributed reports within the retention."""
        with self._reading("templates", self.stats if stats is None else stats) as conn:
            rows = conn.execute(
                "SELECT DISTINCT template_id FROM msgsms_templates"
                " WHERE %(account)s::text IS NULL OR account = %(account)s ORDER BY template_id",
                {"account": account},
            ).fetchall()
        return [SmsTemplate(r[0], r[0], "") for r in rows]

    def message_count(self) -> int:
        """Messages currently stored."""
        with self._reading("count", None) as conn:
            return _scalar(conn.execute("SELECT count(*) FROM msgsms_messages"))

    def segment_rows(self) -> list[tuple[str, int]]:
        """Every stored (message id, segment), for checks and tests."""
        with self._reading("count", None) as conn:
            rows = conn.execute(
                "SELECT message_id, sequence FROM msgsms_segments ORDER BY message_id, sequence"
            ).fetchall()
        return [(str(r[0]), int(r[1])) for r in rows]

    # -- lifecycle --------------------------------------------------------------

    def close(self) -> None:
        """Finish queued writes, stop the writer and close the pool."""
        if self._writes.closed:
            return
        self._writes.close()
        self._writer.close()
        self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class _MoveCursor:
    """Where a poller's last ``moved_since`` left off: that snapshot's xmin, and the moves
    it saw from there on (asked for again, they are not moves again)."""

    xmin: int
    seen: frozenset[int]


class _Probe:
    """One availability check, running on its own thread until it has an answer."""

    def __init__(self, check: Callable[[], bool]) -> None:
        self.ok = False
        self.began = time.monotonic()
        self.done = threading.Event()
        threading.Thread(
            target=self._run, args=(check,), name="push-store-probe", daemon=True
        ).start()

    def _run(self, check: Callable[[], bool]) -> None:
        try:
            self.ok = check()
        finally:
            self.done.set()


def _where(settings: dict[str, Any]) -> str:
    """The database as log lines name it: host, port and database, no credentials."""
    host, port = settings.get("host") or "localhost", settings.get("port") or "5432"
    return f"PostgreSQL {host}:{port}/{settings.get('dbname') or ''}"


def _reset(conn: psycopg.Connection[Any]) -> None:
    """A connection goes back to the pool in its default state."""
    conn.autocommit = False


def _scalar_text(cursor: psycopg.Cursor[Any]) -> str:
    row = cursor.fetchone()
    return "" if row is None else str(row[0])


def _scalar(cursor: psycopg.Cursor[Any]) -> int:
    row = cursor.fetchone()
    return 0 if row is None or row[0] is None else int(row[0])
