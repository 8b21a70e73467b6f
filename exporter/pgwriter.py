"""One group commit in PostgreSQL: lock the touched messages, merge, write back, commit.

The store's writer thread owns one connection, used pipelined: a first round trip
begins the transaction, creates the missing messages, locks every touched message in id
order and reads them with their segments; a second writes what
:func:`~exporter.pushmerge.merge_writes` decided and commits. Locking in id order is
what lets replicas share the database: a replica that touches a message another one is
writing waits for that commit, then reads its segments.

A connection found broken in the first round trip (the database restarted since it was
last used) is replaced and the transaction tried once more: nothing was committed. A
break after that may have hit the COMMIT, so the write is refused (503), never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg.errors import DeadlockDetected, SerializationFailure

from exporter.errors import StoreUnavailable
from exporter.pushmerge import Merged, MessageRow, WriteBatch, merge_writes, touched_ids
from exporter.pushstore import Outcome, Segment
from exporter.records import SendResult

CONFLICTS = (DeadlockDetected, SerializationFailure)
"""Two replicas' transactions crossed: one is rolled back and may be tried again."""
_ROW = (
    "message_id, account, template_id, registered, send_ms, mobile, mobile_hash, segments,"
    " result, status_code, status_desc, receive_ms"
)
_TEMPLATE_NOTE_MS = 60_000
"""A template's last-seen time is written at most once a minute per replica."""


class PgWriter:
    """The writer thread's connection and its two-round-trip transaction."""

    def __init__(
        self, settings: dict[str, str], prepare: Callable[[psycopg.Connection[Any]], None]
    ) -> None:
        self._settings = settings
        self._prepare = prepare
        self._conn: psycopg.Connection[Any] | None = None
        self._noted: dict[tuple[str, str], int] = {}

    def write(self, batches: Sequence[WriteBatch], now_ms: int) -> Merged:
        """Commit the batches; StoreUnavailable when the database is unreachable or the
        connection broke; another psycopg.Error when the data or a deadlock failed it."""
        for attempt in range(2):
            conn, fresh = self._connection()
            reading = [True]
            try:
                return self._transaction(conn, batches, now_ms, reading)
            except CONFLICTS:
                raise
            except psycopg.OperationalError as exc:
                self.close()
                if fresh or attempt or not reading[0]:
                    raise StoreUnavailable(f"PostgreSQL: {first_line(exc)}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

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
            if isinstance(exc, psycopg.OperationalError):
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
        ids = touched_ids(batches)
        with conn.pipeline() as pipeline, conn.transaction():
            created, locked, found = _lock_and_read(conn, ids, now_ms)
            pipeline.sync()
            reading[0] = False
            new = {r[0] for r in created.fetchall()}
            rows = {r[0]: _message_row(r) for r in locked.fetchall() if r[0] not in new}
            segments = {
                (r[0], r[1]): Segment(r[1], r[2], r[3], r[4], r[5]) for r in found.fetchall()
            }
            merged = merge_writes(batches, rows, segments, now_ms)
            fresh = sorted(t for t in merged.templates if self._noted.get(t, 0) < now_ms)
            _write_merged(conn, merged, set(ids) - merged.rows.keys(), fresh, now_ms)
        for template in fresh:  # noted only once committed
            self._noted[template] = now_ms + _TEMPLATE_NOTE_MS
        return merged


def _lock_and_read(
    conn: psycopg.Connection[Any], ids: list[str], now_ms: int
) -> tuple[psycopg.Cursor[Any], psycopg.Cursor[Any], psycopg.Cursor[Any]]:
    """Queue: create the missing messages, lock all in id order, read them and segments.

    A message created here is read back as absent: the merge treats it as new.
    """
    created = conn.execute(
        f"INSERT INTO msgsms_messages ({_ROW}) SELECT id, '', '', false, %s, '', '', 1,"  # noqa: S608
        " 'sending', '', '', NULL FROM unnest(%s::text[]) id ORDER BY id"
        " ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
        (now_ms, ids),
    )
    locked = conn.execute(
        f"SELECT {_ROW} FROM msgsms_messages WHERE message_id = ANY(%s)"  # noqa: S608
        " ORDER BY message_id FOR UPDATE",
        (ids,),
    )
    found = conn.execute(
        "SELECT message_id, sequence, total, status, status_desc, update_ms"
        " FROM msgsms_segments WHERE message_id = ANY(%s)",
        (ids,),
    )
    return created, locked, found


def _message_row(r: Sequence[Any]) -> MessageRow:
    return MessageRow(
        *(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]),
        Outcome(SendResult(r[8]), r[9], r[10], r[11]),
    )


def _write_merged(
    conn: psycopg.Connection[Any],
    merged: Merged,
    unused: set[str],
    templates: list[tuple[str, str]],
    now_ms: int,
) -> None:
    """Queue the merge's segment reports, changed rows and templates; remove a message
    created for the merge but given nothing (every item of it refused)."""
    with conn.cursor() as cur:
        if merged.segments:
            cur.executemany(
                "INSERT INTO msgsms_segments VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (message_id, sequence) DO UPDATE SET total = excluded.total,"
                " status = excluded.status, status_desc = excluded.status_desc,"
                " update_ms = excluded.update_ms, received_ms = excluded.received_ms,"
                " source = excluded.source",
                [
                    (
                        s.message_id,
                        s.segment.sequence,
                        s.segment.total,
                        s.segment.status,
                        s.segment.status_desc,
                        s.segment.update_ms,
                        s.received_ms,
                        s.source,
                    )
                    for s in merged.segments.values()
                ],
            )
        if merged.rows:
            cur.executemany(
                "UPDATE msgsms_messages SET account = %s, template_id = %s, registered = %s,"
                " send_ms = %s, mobile = %s, mobile_hash = %s, segments = %s, result = %s,"
                " status_code = %s, status_desc = %s, receive_ms = %s WHERE message_id = %s",
                [
                    (
                        r.account,
                        r.template_id,
                        r.registered,
                        r.send_ms,
                        r.mobile,
                        r.mobile_hash,
                        r.segments,
                        r.outcome.result.value,
                        r.outcome.status_code,
                        r.outcome.status_desc,
                        r.outcome.receive_ms,
                        r.message_id,
                    )
                    for r in merged.rows.values()
                ],
            )
        if unused:
            cur.execute(
                "DELETE FROM msgsms_messages WHERE message_id = ANY(%s) AND template_id = ''",
                (sorted(unused),),
            )
        if templates:
            cur.execute(
                "INSERT INTO msgsms_templates SELECT a, t, %s"
                " FROM unnest(%s::text[], %s::text[]) AS u(a, t)"
                " ON CONFLICT (account, template_id) DO UPDATE SET last_seen_ms ="
                " greatest(msgsms_templates.last_seen_ms, excluded.last_seen_ms)",
                (now_ms, [a for a, _ in templates], [t for _, t in templates]),
            )


def first_line(exc: BaseException) -> str:
    """An error's first line (psycopg's messages go on with context and hints)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
