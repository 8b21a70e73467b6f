"""The PostgreSQL store behind a real PgBouncer in transaction pooling mode (Debian's 1.18).

Each transaction may run on another server connection (handed out in turn, see
``pgbouncer.py``), so anything the store left on a connection between transactions
would fail here: prepared statements, a session's advisory lock, a session ``SET``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import psycopg
import pytest
from pgbouncer import POOL_SIZE, PgBouncer
from postgres_server import PostgresServer

from exporter.configfile import parse_config
from exporter.errors import ConfigError, StoreUnavailable
from exporter.pgschema import LOCK_SPACE, PRUNE_LOCK
from exporter.pgstore import PostgresStore, connection_settings
from exporter.pushstore import SendRegistration, StatusReport
from exporter.records import DetailsQuery, SendResult
from exporter.timestamps import parse_rfc3339

T0 = parse_rfc3339("2026-11-26T10:00:00Z")
POOLED = "?prepared_statements=off"


@pytest.fixture
def schema(postgres: PostgresServer) -> str:
    return postgres.new_schema()


@pytest.fixture
def bouncer(postgres: PostgresServer, schema: str) -> Iterator[PgBouncer]:
    with PgBouncer.running(postgres, schema) as running:
        yield running


@pytest.fixture
def direct(postgres: PostgresServer, schema: str) -> str:
    """The same schema, reached without the pooler (to check what the store left)."""
    return f"{postgres.url()}?options=-csearch_path%3D{schema}"


def _write_and_read(store: PostgresStore, rounds: int) -> None:
    """Enough group commits and reads that psycopg would prepare every statement."""
    for n in range(rounds):
        sends = [SendRegistration(f"m{n}-{i}", "tplA", T0 + n, segments=2) for i in range(5)]
        assert store.register(sends).rejected == []
        reports = [StatusReport(f"m{n}-{i}", "DELIVRD", 1, 2, update_time=T0 + n) for i in range(5)]
        assert store.add_reports(reports).rejected == []
        assert store.query(DetailsQuery(T0 - 1, T0 + rounds, limit=3)).total == 5 * (n + 1)


# -- prepared statements ----------------------------------------------------------------


def test_the_store_writes_and_reads_through_pgbouncer_with_prepared_statements_off(
    bouncer: PgBouncer, direct: str
):
    with PostgresStore(bouncer.url() + POOLED, clock=lambda: T0 + 600) as store:
        _write_and_read(store, rounds=12)
        final = [StatusReport(f"m{n}-0", "DELIVRD", 2, 2, update_time=T0 + n) for n in range(12)]
        assert store.add_reports(final).rejected == []
        assert store.add_reports(final).duplicates == 12
        page = store.query(DetailsQuery(T0 - 1, T0 + 12, send_result=SendResult.SUCCESS))
        assert page.total == 12
        assert [t.template_id for t in store.list_templates()] == ["tplA"]
    with psycopg.connect(direct) as conn:
        assert conn.execute("SELECT count(*) FROM msgsms_messages").fetchone() == (60,)
        assert conn.execute("SELECT count(*) FROM msgsms_segments").fetchone() == (72,)


@pytest.mark.parametrize("switch", ["", POOLED])
def test_the_store_connections_prepare_statements_only_when_the_url_allows(
    bouncer: PgBouncer, switch: str
):
    # Why the switch exists: psycopg prepares a statement after five runs, and behind
    # the pooler the next transaction runs on a server connection that lacks it.
    count = "SELECT count(*) FROM pg_class WHERE relname = %s"
    with psycopg.connect(**connection_settings(bouncer.url() + switch)) as conn:
        conn.autocommit = True
        runs = [conn.execute(count, ("x",)).fetchone() for _ in range(5)]  # the 5th prepares
        if switch:
            assert runs + [conn.execute(count, ("x",)).fetchone() for _ in range(5)] == [(0,)] * 10
        else:
            with pytest.raises(psycopg.errors.InvalidSqlStatementName):
                conn.execute(count, ("x",))


def test_prepared_statements_is_a_switch_of_the_url_that_libpq_never_sees():
    settings = connection_settings("postgresql://u@db:6432/x?sslmode=require" + "&" + POOLED[1:])
    assert settings["prepare_threshold"] is None
    assert settings["sslmode"] == "require"
    assert "prepared_statements" not in settings
    assert connection_settings("postgresql://u@db/x")["prepare_threshold"] == 5
    raw = {
        "accounts": [{"name": "p", "source": "push", "templates": {"discover": True}}],
        "receiver": {"store_url": "postgresql://u@db/x?prepared_statements=maybe"},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw, {})
    assert info.value.problems == [
        "receiver.store_url: prepared_statements: expected on or off, not 'maybe'"
    ]
    raw["receiver"] = {"store_url": "postgresql://u@db/x?prepared_statements=off"}
    assert parse_config(raw, {}).receiver is not None


# -- retention: transaction locks ------------------------------------------------------


def _advisory_locks(direct: str) -> list[tuple[int, str]]:
    with psycopg.connect(direct) as conn:
        rows = conn.execute(
            "SELECT l.pid, a.state FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.locktype = 'advisory' AND l.granted"
        ).fetchall()
    return [(int(pid), str(state)) for pid, state in rows]


def test_pruning_behind_pgbouncer_runs_once_and_leaves_no_lock_behind(
    bouncer: PgBouncer, direct: str
):
    now = [T0 + 600]
    with ExitStack() as stack:
        a, b = (
            stack.enter_context(
                PostgresStore(bouncer.url() + POOLED, clock=lambda: now[0], retention=3600)
            )
            for _ in range(2)
        )
        for cycle in range(POOL_SIZE + 1):  # every pooled server connection in turn
            a.register([SendRegistration(f"old{cycle}-{i}", "t", now[0] - 3700) for i in range(3)])
            (a, b)[cycle % 2].prune()  # a may prune first: its minute is due at this write
            a.settle()
            b.settle()
            assert (a.pruned + b.pruned, a.message_count()) == (3 * (cycle + 1), 0)
            assert _advisory_locks(direct) == [], f"cycle {cycle}: a lock outlived the pruning"
            now[0] += 61
        # Another replica pruning (its lock held): this one leaves it, through the pooler.
        a.register([SendRegistration("last", "t", now[0] - 3500)])
        a.settle()
        now[0] += 200  # past the retention now, with no write (and so no pruning) at a
        with psycopg.connect(direct, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_SPACE, PRUNE_LOCK))
            before = b.pruned
            b.prune()
            b.settle()
            assert (b.pruned - before, b.message_count()) == (0, 1)
            # Released here, not by closing: a closed session's locks go only once its
            # backend has noticed, which may be after the next line has looked.
            holder.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_SPACE, PRUNE_LOCK))
        b.prune()
        b.settle()
        assert b.message_count() == 0


# -- settings and snapshots ------------------------------------------------------------


def test_the_store_leaves_no_setting_on_the_pooled_server_connections(
    bouncer: PgBouncer, direct: str
):
    with PostgresStore(bouncer.url() + POOLED, clock=lambda: T0 + 600) as store:
        _write_and_read(store, rounds=6)
        with store.snapshot():
            store.query(DetailsQuery(T0 - 1, T0 + 6, limit=2))
            store.query(DetailsQuery(T0 - 1, T0 + 6, limit=2, offset=2))
    with psycopg.connect(bouncer.url(), autocommit=True, prepare_threshold=None) as client:
        for _ in range(2 * POOL_SIZE):  # every server connection, twice
            seen = client.execute(
                "SELECT current_setting('enable_seqscan'), current_setting('transaction_isolation'),"
                " current_setting('default_transaction_read_only'),"
                " (SELECT count(*) FROM pg_prepared_statements)"
            ).fetchone()
            assert seen == ("on", "read committed", "off", 0)
    assert _advisory_locks(direct) == []


def test_a_snapshot_through_pgbouncer_reads_one_moment_while_replicas_write(bouncer: PgBouncer):
    window = DetailsQuery(T0 - 1, T0 + 1, limit=2)
    with (
        PostgresStore(bouncer.url() + POOLED, clock=lambda: T0 + 600) as reader,
        PostgresStore(bouncer.url() + POOLED, clock=lambda: T0 + 600) as writer,
    ):
        writer.register([SendRegistration(f"m{i}", "tpl", T0) for i in range(4)])
        with reader.snapshot():
            first = reader.query(window)
            writer.register([SendRegistration(f"late{i}", "tpl", T0) for i in range(3)])
            second = reader.query(DetailsQuery(T0 - 1, T0 + 1, limit=2, offset=2))
            assert (first.total, second.total) == (4, 4)
            ids = [r.message_id for r in (*first.records, *second.records)]
            assert ids == ["m0", "m1", "m2", "m3"]
        assert reader.query(window).total == 7


# -- the database unreachable behind the pooler ----------------------------------------


def test_ready_answers_at_once_while_the_pooler_holds_the_check_in_its_queue(
    bouncer: PgBouncer,
):
    with PostgresStore(bouncer.url() + POOLED) as store:
        assert store.available()
        store.settle()  # the pruning after its write test is done
        bouncer.admin("PAUSE pooled")  # queries wait, as while the database is down
        try:
            assert not store.available()
            assert not store.available()  # the same check, still waiting
            (pool,) = (p for p in bouncer.admin("SHOW POOLS") if p["database"] == "pooled")
            assert pool["cl_waiting"] == 1  # one check queued, not one per call
        finally:
            bouncer.admin("RESUME pooled")
        assert _eventually(store.available)


def test_behind_pgbouncer_a_database_restart_is_recovered_and_a_stop_is_refused(
    postgres: PostgresServer, bouncer: PgBouncer
):
    with PostgresStore(bouncer.url() + POOLED, clock=lambda: T0 + 600) as store:
        assert store.register([SendRegistration("before", "t", T0)]).stored == 1
        postgres.restart()
        assert _eventually(lambda: _stored(store, "after-restart"))
        postgres.stop()
        try:
            assert not store.available()
            with pytest.raises(StoreUnavailable):
                store.register([SendRegistration("while-down", "t", T0)])
        finally:
            postgres.start()
        assert _eventually(lambda: _stored(store, "after-start"))
        assert store.message_count() == 3


def _stored(store: PostgresStore, message_id: str) -> bool:
    try:
        result = store.register([SendRegistration(message_id, "t", T0)])
    except StoreUnavailable:
        return False
    assert result.rejected == []
    return True


def _eventually(condition: Callable[[], bool]) -> bool:
    for _ in range(100):
        if condition():
            return True
        time.sleep(0.1)
    return False
