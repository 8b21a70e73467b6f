"""One group commit in SQLite: read the touched messages, merge, write back, commit.

The store's writer thread owns one connection. A transaction reads the messages and
segments its group touches (two statements, the ids passed as one JSON array), hands
them to :func:`~exporter.pushmerge.merge_writes`, the rules both stores share, and
writes what changed with one ``executemany`` per kind. A group of 50 single reports is
then six statements, not three per report.

The writer never checkpoints (``wal_autocheckpoint=0``). In WAL mode with
``synchronous=NORMAL`` a commit only appends to the WAL; the checkpoint that copies the
WAL into the database is what waits for the disk (it syncs both files), and on the
writer thread it held every acknowledgement queued behind it for that long. The
:class:`Checkpointer` runs it on a thread and connection of its own instead, every
fifth of a second while writes come in; a passive checkpoint never blocks the writer.
Should writes never pause long enough for it to copy the whole WAL (which is what lets
the WAL start over), the writer restarts it between two groups once it passes 48 MiB,
most of it already copied. A restart stalls the writer for two syncs (15-35 ms), so it
is rare (every few seconds at 2,000 reports/s), and it keeps the file: truncating and
regrowing it cost the filesystem three times as long.

What a checkpoint costs is the bytes it syncs, and those are whole pages: message ids
are random, so each new message dirties a leaf of the messages' id index and one of
the segments table wherever its id falls. A new store therefore uses 1 KiB pages
(:data:`PAGE_SIZE`), which writes a quarter of the bytes per report that SQLite's
default 4 KiB does (at 2,000 single reports/s a passive checkpoint took 17 ms instead
of 33, and the p99 acknowledgement fell from about 45 to 25 ms on this project's
benchmark machine); the indexes are a level deeper, which reads do not notice. A store
created with other pages keeps them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Collection, Sequence

import structlog

from exporter.mobilekey import MobileKey
from exporter.pushmerge import (
    MOVE_COLUMNS,
    ROW_COLUMNS,
    SEGMENT_COLUMNS,
    Merged,
    MessageRow,
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

log = structlog.get_logger("msgsms_exporter.pushstore")

CHECKPOINT_SECONDS = 0.2
BUSY_TIMEOUT_MS = 30_000
"""How long a write waits for another connection's lock (the store's own timeout)."""
WAL_SIZE_LIMIT = 64 * 1024 * 1024
"""Bytes the WAL file is cut back to when it restarts (it is reused, not regrown)."""
WAL_RESTART_BYTES = 48 * 1024 * 1024
"""WAL size past which the writer restarts it itself (frames are pages plus a 24-byte
header, so the file stays under ``WAL_SIZE_LIMIT``)."""
PAGE_SIZE = 1024
"""Page size of a new store (see the module's docstring)."""

_PLACEHOLDERS = ", ".join("?" * len(ROW_COLUMNS.split(",")))
_INSERT_MESSAGE = f"INSERT INTO messages ({ROW_COLUMNS}) VALUES ({_PLACEHOLDERS})"  # noqa: S608
_UPDATE_MESSAGE = (
    "UPDATE messages SET account = ?, template_id = ?, registered = ?, send_ms = ?,"
    " mobile = ?, mobile_hash = ?, segments = ?, result = ?, status_code = ?,"
    " status_desc = ?, receive_ms = ? WHERE message_id = ?"
)
# merge_writes decided which segment reports are new or replace a non-final one.
_UPSERT_SEGMENT = (
    "INSERT INTO segments (message_id, sequence, total, status, status_desc, update_ms,"
    " received_ms, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (message_id, sequence)"
    " DO UPDATE SET total = excluded.total, status = excluded.status,"
    " status_desc = excluded.status_desc, update_ms = excluded.update_ms,"
    " received_ms = excluded.received_ms, source = excluded.source"
)
_NOTE_TEMPLATE = (
    "INSERT INTO templates (account, template_id, last_seen_ms) VALUES (?, ?, ?)"
    " ON CONFLICT (account, template_id)"
    " DO UPDATE SET last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)"
)
_TOUCHED = "IN (SELECT value FROM json_each(?))"
_RECORD_MOVE = f"INSERT INTO moves ({MOVE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"  # noqa: S608


class SqliteWriter:
    """The writer thread's connection and its read-merge-write transaction."""

    def __init__(self, conn: sqlite3.Connection, mobile_key: MobileKey | None = None) -> None:
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        self._conn = conn
        self._notes = TemplateNotes()
        self._mobile_key = mobile_key

    def write(self, batches: Sequence[WriteBatch], now_ms: int) -> Merged:
        """Commit the batches in one transaction; sqlite3.Error (rolled back) otherwise."""
        conn = self._conn
        ids = json.dumps(touched_ids(batches))
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = {
                r[0]: message_row(r)
                for r in conn.execute(
                    f"SELECT {ROW_COLUMNS} FROM messages WHERE message_id {_TOUCHED}",  # noqa: S608
                    (ids,),
                )
            }
            segments = dict(
                segment_entry(r)
                for r in conn.execute(
                    f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE message_id {_TOUCHED}",  # noqa: S608
                    (ids,),
                )
            )
            merged = merge_writes(batches, rows, segments, now_ms, mobile_key=self._mobile_key)
            fresh = self._notes.due(merged.templates, now_ms)
            self._write_merged(merged, rows.keys(), fresh, now_ms)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._notes.written(fresh, now_ms)
        return merged

    def touch(self, statement: str) -> None:
        """Run ``statement`` (one that writes a page) in a transaction and commit it: does
        the store take writes now?"""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _write_merged(
        self,
        merged: Merged,
        existing: Collection[str],
        templates: list[tuple[str, str]],
        now_ms: int,
    ) -> None:
        conn = self._conn
        new: list[MessageRow] = []
        changed: list[MessageRow] = []
        for row in merged.rows.values():
            (changed if row.message_id in existing else new).append(row)
        if new:
            conn.executemany(_INSERT_MESSAGE, [row_values(r) for r in new])
        if changed:
            conn.executemany(_UPDATE_MESSAGE, [(*row_values(r)[1:], r.message_id) for r in changed])
        if merged.segments:
            conn.executemany(_UPSERT_SEGMENT, [segment_values(s) for s in merged.segments.values()])
        if templates:
            conn.executemany(_NOTE_TEMPLATE, [(a, t, now_ms) for a, t in templates])
        if merged.moves:
            conn.executemany(_RECORD_MOVE, [move_values(m, now_ms) for m in merged.moves])


class Checkpointer:
    """Copies the WAL into the database on its own thread and connection."""

    def __init__(self, path: str, synchronous: str, every: float = CHECKPOINT_SECONDS) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        (page_size,) = self._conn.execute("PRAGMA page_size").fetchone()
        self._restart_frames = WAL_RESTART_BYTES // int(page_size)
        self._every = every
        self._stop = threading.Event()
        self._written = False
        self.failures = 0
        self.wal_frames = 0
        """Frames in the WAL at the last checkpoint."""
        self._thread = threading.Thread(target=self._loop, name="push-store-wal", daemon=True)
        self._thread.start()

    def wrote(self) -> None:
        """Note that a transaction committed (the next round checkpoints)."""
        self._written = True

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            if self._written:
                self._written = False
                self._checkpoint("PASSIVE")

    def _checkpoint(self, mode: str) -> None:
        try:
            _busy, frames, _copied = self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.Error as exc:  # the WAL keeps the data; the next round tries again
            self.failures += 1
            log.warning("push store checkpoint failed", error=str(exc))
            return
        self.wal_frames = int(frames)

    @property
    def behind(self) -> bool:
        """True when the WAL outgrew ``WAL_RESTART_BYTES``: writes never paused long
        enough for a passive checkpoint to copy all of it, so it cannot start over."""
        return self.wal_frames > self._restart_frames

    def restart(self, writer: sqlite3.Connection) -> None:
        """On the writer's thread, between groups: copy the rest of the WAL, so that the
        next write starts it over (no write can come in meanwhile). It never waits for a
        reader (a poll's snapshot may last seconds): while one holds the WAL, this
        returns at once and a later group tries."""
        try:
            writer.execute("PRAGMA busy_timeout = 0")
            busy, _frames, _copied = writer.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        except sqlite3.Error as exc:
            self.failures += 1
            log.warning("push store checkpoint failed", error=str(exc))
            return
        finally:
            writer.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not busy:
            self.wal_frames = 0

    def close(self) -> None:
        """Stop, then copy the whole WAL into the database and empty it."""
        self._stop.set()
        self._thread.join()
        self._checkpoint("TRUNCATE")
        self._conn.close()
