"""One group commit in PostgreSQL: lock the touched messages, merge, write back, commit.

The store's writer thread owns one connection, used pipelined: a first round trip
begins the transaction, locks every touched message that exists in id order and reads
them with their segments; a second writes what :func:`~exporter.pushmerge.merge_writes`
decided (new messages inserted, changed ones updated, each kind in one statement) and
commits. Locking in id order is what lets replicas share the database: a replica that
touches a message another one is writing waits for that commit, then reads its
segments. Two replicas creating the same new message at once collide on its key; the
loser's transaction is rolled back and run again, and then finds the message to lock.

A connection found broken in the first round trip (the database restarted since it was
last used) is replaced and the transaction tried once more: nothing was committed. A
break after that may have hit the COMMIT, so the write is refused (503), never guessed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from typing import Any

import psycopg
from psycopg.errors import (
    DeadlockDetected,
    LockNotAvailable,
    SerializationFailure,
    UniqueViolation,
)

from exporter.errors import StoreUnavailable
from exporter.mobilekey import MobileKey
from exporter.pushmerge import (
    MOVE_COLUMNS,
    ROW_COLUMNS,
    SEGMENT_COLUMNS,
    Merged,
    TemplateNotes,
    WriteBatch,
    merge_writes,
    message_row,
    move_values,
    row_values,
    segment_entry,
    segment_values,
    touched_ids,
)

INDEXES_ONLY = "SET LOCAL enable_seqscan = off"
"""Run first in each of the store's transactions. Every statement the store runs finds
rows by key or reads a key range, so an index is always the right plan; but until
autovacuum first analyzes a young table (a minute or more after its creation), the
planner has no statistics and scanned it whole for ``message_id = ANY(...)`` with a
batch's ids, and psycopg's prepared statements kept that plan as the table grew:
batches of 50 at 100 posts/s into a new store took PostgreSQL 1.3 ms of CPU per report
and queued for 25 s. (A scan stays possible where no index serves: it is only priced
out.)"""

ABANDONED_AFTER_MS = 10_000
"""A write transaction whose client went silent inside it (its host died, or was cut off,
between the two round trips) is ended by the server after this long idle, and its locks
with it: the server would otherwise keep them until TCP keepalive noticed the dead peer
(two hours by default), and every replica writing a message it had locked, the balancer
retrying its push there, waited as long (and that replica's one writer with it, so all
its pushes). The writer is idle in its transaction only while it merges: milliseconds."""
LOCK_WAIT_MS = 20_000
"""How long a write waits for another transaction's locks before it is refused (503):
longer than ``ABANDONED_AFTER_MS``, so a dead replica's locks are freed first."""
WRITE_SETTINGS = (
    "SELECT set_config('enable_seqscan', 'off', true),"
    f" set_config('idle_in_transaction_session_timeout', '{ABANDONED_AFTER_MS}', true),"
    f" set_config('lock_timeout', '{LOCK_WAIT_MS}', true)"
)
"""Run first in each write transaction, one statement: ``INDEXES_ONLY`` and the two limits
above (``true``: for that transaction only, so through a pooler in transaction mode too)."""

BEAT_WITHIN_MS = 1_000
"""How long a write test may wait for a lock, or run, before it fails (``beat``)."""
_BEAT = (
    f"SELECT set_config('lock_timeout', '{BEAT_WITHIN_MS}', true),"
    f" set_config('statement_timeout', '{BEAT_WITHIN_MS}', true),"
    f" set_config('idle_in_transaction_session_timeout', '{ABANDONED_AFTER_MS}', true)",
    "LOCK TABLE msgsms_messages, msgsms_segments, msgsms_templates IN ROW EXCLUSIVE MODE",
    "TRUNCATE msgsms_heartbeat",
)
"""The write test's transaction, before its INSERT. The lock is the one a push's write
takes on each table, so a lock that holds writes back while reads go on (``CREATE INDEX``
without ``CONCURRENTLY``) fails the test too; ``TRUNCATE`` gives the heartbeat a new, empty file,
so the INSERT must extend a file, as a push's write does once its pages are full: a full
disk fails it (a row updated in place would fit in its page and pass)."""

ITEM_ERRORS = (psycopg.DataError, psycopg.IntegrityError)
"""What one item's data can raise (SQLSTATE classes 22 and 23: a character the database
cannot hold, a value out of range, a constraint): that item is refused alone. Any other
error is the store's: the write is refused (503) and the store is down."""
CONFLICTS = (DeadlockDetected, SerializationFailure)
"""Two replicas' transactions crossed: one is rolled back and may be tried again."""
_ATTEMPTS = 3


class PgWriter:
    """The writer thread's connection and its two-round-trip transaction."""

    def __init__(
        self,
        settings: dict[str, str],
        prepare: Callable[[psycopg.Connection[Any]], None],
        mobile_key: MobileKey | None = None,
    ) -> None:
        self._settings = settings
        self._mobile_key = mobile_key
        self._prepare = prepare
        self._conn: psycopg.Connection[Any] | None = None
        self._notes = TemplateNotes()

    def write(self, batches: Sequence[WriteBatch], now_ms: int) -> Merged:
        """Commit the batches; StoreUnavailable when the database is unreachable or the
        connection broke; another psycopg.Error when the data or a deadlock failed it."""
        retried_stale = False
        for attempt in range(_ATTEMPTS):
            conn, fresh = self._connection()
            reading = [True]
            try:
                return self._transaction(conn, batches, now_ms, reading)
            except UniqueViolation:
                if attempt == _ATTEMPTS - 1:
                    raise
            except CONFLICTS:
                raise
            except LockNotAvailable as exc:  # LOCK_WAIT_MS passed: not stored, say so
                raise StoreUnavailable(f"PostgreSQL: {first_line(exc)}") from exc
            except psycopg.OperationalError as exc:
                self.close()
                if fresh or retried_stale or not reading[0]:
                    raise StoreUnavailable(f"PostgreSQL: {first_line(exc)}") from exc
                retried_stale = True
            except ITEM_ERRORS:
                raise  # one item's data: the store finds it and refuses it alone
            except psycopg.Error as exc:
                # The database refuses writes, whatever the data: read-only (a failover's
                # demoted primary, a managed database whose disk filled), a revoked
                # permission, a dropped table. Reconnect for the next write (a failover's
                # address may name the new primary by then).
                self.close()
                raise StoreUnavailable(f"PostgreSQL: {first_line(exc)}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def beat(self, now_ms: int) -> None:
        """The write test of a store that is down: a heartbeat committed on this connection,
        within ``BEAT_WITHIN_MS`` for each statement; StoreUnavailable when it fails (a
        read-only or full database, a lock held elsewhere, no connection)."""
        conn, _fresh = self._connection()
        try:
            with conn.pipeline(), conn.transaction():
                for statement in _BEAT:
                    conn.execute(statement)
                conn.execute("INSERT INTO msgsms_heartbeat (beat_ms) VALUES (%s)", (now_ms,))
        except psycopg.Error as exc:
            self.close()  # the next write reconnects (a failover's address may have moved)
            raise StoreUnavailable(f"PostgreSQL: {first_line(exc)}") from exc

    def close(self) -> None:
        """Drop the connection (the next write opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> tuple[psycopg.Connection[Any], bool]:
        if self._conn is not None and not self._conn.closed:
            return self._conn, False
        try:
            conn = psycopg.connect(**self._settings)  # type: ignore[arg-type]
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL: {first_line(exc)}") from exc
        try:
            self._prepare(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, psycopg.Error):  # the schema cannot be read or made
                raise StoreUnavailable(f"PostgreSQL: {first_line(exc)}") from exc
            raise
        self._conn = conn
        return conn, True

    def _transaction(
        self,
        conn: psycopg.Connection[Any],
        batches: Sequence[WriteBatch],
        now_ms: int,
        reading: list[bool],
    ) -> Merged:
        ids = _json(touched_ids(batches))
        with conn.pipeline() as pipeline, conn.transaction():
            conn.execute(WRITE_SETTINGS)
            locked = conn.execute(
                f"SELECT {ROW_COLUMNS} FROM msgsms_messages WHERE message_id = {IDS}"  # noqa: S608
                " ORDER BY message_id FOR UPDATE",
                (ids,),
            )
            found = conn.execute(
                f"SELECT {SEGMENT_COLUMNS} FROM msgsms_segments WHERE message_id = {IDS}",  # noqa: S608
                (ids,),
            )
            pipeline.sync()
            reading[0] = False
            rows = {r[0]: message_row(r) for r in locked.fetchall()}
            segments = dict(segment_entry(r) for r in found.fetchall())
            merged = merge_writes(batches, rows, segments, now_ms, mobile_key=self._mobile_key)
            fresh = self._notes.due(merged.templates, now_ms)
            _write_merged(conn, merged, rows.keys(), fresh, now_ms)
        self._notes.written(fresh, now_ms)
        return merged


# A group's rows go as one JSON text per statement, unpacked by PostgreSQL: psycopg
# dumps a list parameter in Python, element by element, and twenty such arrays were 40 %
# of the writer's client CPU per group; json.dumps is C, and the unpacking runs in the
# database's process, off this interpreter's lock. jsonb, not json: json's ->> parses the
# element's text again for each column (PostgreSQL's CPU per report went from 59 to 80 us).
_ROWS = (
    "SELECT e->>0, e->>1, e->>2, (e->>3)::boolean, (e->>4)::bigint, e->>5, e->>6,"
    " (e->>7)::smallint, e->>8, e->>9, e->>10, (e->>11)::bigint"
    " FROM jsonb_array_elements(%s::jsonb) AS e"
)


def _json(value: object) -> str:
    """JSON for a parameter: UTF-8 as is (``\\u`` escapes above ASCII are refused by a
    database whose encoding is not UTF-8), no spaces."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


IDS = "ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)))"
"""``message_id = IDS`` with the ids as a JSON array (one text parameter)."""


def _write_merged(
    conn: psycopg.Connection[Any],
    merged: Merged,
    existing: Collection[str],
    templates: list[tuple[str, str]],
    now_ms: int,
) -> None:
    """Queue the merge's writes, one statement per kind: new messages (a key another
    replica inserted meanwhile fails the transaction, which runs again), changed
    messages, segment reports, the templates seen, the stored messages moved."""
    new = [r for r in merged.rows.values() if r.message_id not in existing]
    changed = [r for r in merged.rows.values() if r.message_id in existing]
    if new:
        conn.execute(
            f"INSERT INTO msgsms_messages ({ROW_COLUMNS}) {_ROWS}",
            (_json([row_values(r) for r in new]),),
        )
    if changed:
        conn.execute(
            "UPDATE msgsms_messages m SET account = u.a, template_id = u.t, registered = u.r,"  # noqa: S608
            " send_ms = u.s, mobile = u.m, mobile_hash = u.h, segments = u.n, result = u.o,"
            " status_code = u.c, status_desc = u.d, receive_ms = u.v"
            f" FROM ({_ROWS}) AS u(id, a, t, r, s, m, h, n, o, c, d, v)"
            " WHERE m.message_id = u.id",
            (_json([row_values(r) for r in changed]),),
        )
    if merged.segments:
        segments = _json([segment_values(s) for s in merged.segments.values()])
        conn.execute(
            "INSERT INTO msgsms_segments SELECT e->>0, (e->>1)::smallint, (e->>2)::smallint,"
            " e->>3, e->>4, (e->>5)::bigint, (e->>6)::bigint, e->>7"
            " FROM jsonb_array_elements(%s::jsonb) AS e"
            " ON CONFLICT (message_id, sequence) DO UPDATE SET total = excluded.total,"
            " status = excluded.status, status_desc = excluded.status_desc,"
            " update_ms = excluded.update_ms, received_ms = excluded.received_ms,"
            " source = excluded.source",
            (segments,),
        )
    if templates:
        conn.execute(
            "INSERT INTO msgsms_templates SELECT e->>0, e->>1, %s"
            " FROM jsonb_array_elements(%s::jsonb) AS e"
            " ON CONFLICT (account, template_id) DO UPDATE SET last_seen_ms ="
            " greatest(msgsms_templates.last_seen_ms, excluded.last_seen_ms)",
            (now_ms, _json(templates)),
        )
    if merged.moves:
        conn.execute(
            f"INSERT INTO msgsms_moves ({MOVE_COLUMNS}) SELECT (e->>0)::bigint, e->>1, e->>2,"  # noqa: S608
            " (e->>3)::bigint, e->>4, e->>5, (e->>6)::bigint"
            " FROM jsonb_array_elements(%s::jsonb) AS e",
            (_json([move_values(m, now_ms) for m in merged.moves]),),
        )


def first_line(exc: BaseException) -> str:
    """An error's first line (psycopg's messages go on with context and hints)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
