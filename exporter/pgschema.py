"""The PostgreSQL store's schema: numbered migrations applied once, under an advisory lock.

Replicas that start together all call :func:`migrate`; the first takes the lock and
applies what is missing, the others wait for it and then find nothing to do. Each
migration is recorded in ``msgsms_schema_version`` in the transaction that applies it.
A database migrated by a newer exporter (a version this one does not know) is refused
rather than written with old rules.
"""

from __future__ import annotations

from typing import Any

import psycopg

from exporter.errors import StoreUnavailable
from exporter.mobilekey import MobileKey, key_change

LOCK_SPACE = 0x6D736773
"""The first key of the store's advisory locks ("msgs")."""
SCHEMA_LOCK = 1
PRUNE_LOCK = 2
CLEAR_MOBILE_HASHES = "UPDATE msgsms_messages SET mobile_hash = '' WHERE mobile_hash <> ''"
"""Forget the numbers' hashes: when they are unkeyed, or made with a key given up."""

# Ids and template ids sort by code point ("C"), as the contract and the SQLite store do.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE msgsms_messages (
        message_id text COLLATE "C" PRIMARY KEY,
        account text COLLATE "C" NOT NULL,
        template_id text COLLATE "C" NOT NULL,
        registered boolean NOT NULL,
        send_ms bigint NOT NULL,
        mobile text NOT NULL,
        mobile_hash text NOT NULL,
        segments smallint NOT NULL,
        result text NOT NULL,
        status_code text NOT NULL,
        status_desc text NOT NULL,
        receive_ms bigint
    );
    CREATE INDEX msgsms_messages_by_template ON msgsms_messages (template_id, send_ms, message_id);
    CREATE INDEX msgsms_messages_by_time ON msgsms_messages (send_ms, message_id);
    CREATE INDEX msgsms_messages_sending ON msgsms_messages (template_id, send_ms, message_id)
        WHERE result = 'sending';
    CREATE INDEX msgsms_messages_sending_by_time ON msgsms_messages (send_ms, message_id)
        WHERE result = 'sending';
    CREATE TABLE msgsms_segments (
        message_id text COLLATE "C" NOT NULL,
        sequence smallint NOT NULL,
        total smallint NOT NULL,
        status text NOT NULL,
        status_desc text NOT NULL,
        update_ms bigint NOT NULL,
        received_ms bigint NOT NULL,
        source text NOT NULL,
        PRIMARY KEY (message_id, sequence)
    );
    CREATE TABLE msgsms_templates (
        account text COLLATE "C" NOT NULL,
        template_id text COLLATE "C" NOT NULL,
        last_seen_ms bigint NOT NULL,
        PRIMARY KEY (account, template_id)
    );
    CREATE TABLE msgsms_maintenance (last_prune_ms bigint NOT NULL);
    INSERT INTO msgsms_maintenance VALUES (0);
    """,
    # 2: the numbers' hashes are keyed (exporter.mobilekey); the unkeyed ones would give
    # every number to whoever holds a copy of the database, so they are cleared.
    """
    UPDATE msgsms_messages SET mobile_hash = '' WHERE mobile_hash <> '';
    CREATE TABLE msgsms_mobile_key (fingerprint text NOT NULL);
    """,
    # 3: the write test of a store that is down (exporter.pgwriter.PgWriter.beat).
    """
    CREATE TABLE msgsms_heartbeat (beat_ms bigint NOT NULL);
    """,
    # 4: the moves of stored messages (exporter.moves), with the writing transaction's id:
    # replicas commit out of sequence order, so a poller asks by transaction ids it may
    # not have seen (from its last snapshot's xmin on), not by the last sequence it saw.
    # IF NOT EXISTS: a rollback that deletes version 4 may leave the table.
    """
    CREATE TABLE IF NOT EXISTS msgsms_moves (
        seq bigserial PRIMARY KEY,
        xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
        moved_ms bigint NOT NULL,
        old_account text COLLATE "C" NOT NULL,
        old_template text COLLATE "C" NOT NULL,
        old_send_ms bigint NOT NULL,
        new_account text COLLATE "C" NOT NULL,
        new_template text COLLATE "C" NOT NULL,
        new_send_ms bigint NOT NULL
    );
    CREATE INDEX IF NOT EXISTS msgsms_moves_by_xid ON msgsms_moves (xid);
    CREATE INDEX IF NOT EXISTS msgsms_moves_by_time ON msgsms_moves (moved_ms);
    """,
)
"""Migration N (1-based) takes the schema from version N-1 to N; append, never edit."""


def migrate(
    conn: psycopg.Connection[Any],
    mobile_key: MobileKey | None = None,
    mobile_key_previous: MobileKey | None = None,
) -> int:
    """Bring the schema to the latest version and check the mobile key; returns the
    version. StoreUnavailable if the schema is newer or the key one the store does not
    know (:func:`~exporter.mobilekey.key_change`)."""
    latest = len(MIGRATIONS)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, SCHEMA_LOCK))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS msgsms_schema_version"
            " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT max(version) FROM msgsms_schema_version").fetchone()
        current = 0 if row is None or row[0] is None else int(row[0])
        if current > latest:
            raise StoreUnavailable(
                f"the database schema is version {current}; this exporter knows up to {latest}"
            )
        for version in range(current + 1, latest + 1):
            conn.execute(MIGRATIONS[version - 1])
            conn.execute("INSERT INTO msgsms_schema_version (version) VALUES (%s)", (version,))
        if mobile_key is not None:
            row = conn.execute("SELECT fingerprint FROM msgsms_mobile_key").fetchone()
            if key_change(None if row is None else row[0], mobile_key, mobile_key_previous):
                conn.execute(CLEAR_MOBILE_HASHES)
                conn.execute("DELETE FROM msgsms_mobile_key")
                conn.execute("INSERT INTO msgsms_mobile_key VALUES (%s)", (mobile_key.fingerprint,))
    return latest
