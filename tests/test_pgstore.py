"""The PostgreSQL store beyond the shared contract: its URL in the config, replicas sharing
one database, versioned migrations when replicas start at once, pruning once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import yaml
from postgres_server import PostgresServer

from exporter.configfile import parse_config
from exporter.errors import ConfigError, StoreUnavailable
from exporter.pgschema import LOCK_SPACE, MIGRATIONS, PRUNE_LOCK
from exporter.pgstore import PostgresStore, connection_settings, unverified_host
from exporter.pushmerge import ROW_COLUMNS
from exporter.pushstore import SendRegistration, StatusReport, open_store
from exporter.records import DetailsQuery, SendResult
from exporter.sqlitestore import PushStore
from exporter.timestamps import parse_rfc3339

T0 = parse_rfc3339("2026-11-26T10:00:00Z")


def _receiver(store_url: object, env: dict[str, str] | None = None) -> object:
    raw = {
        "accounts": [{"name": "push", "source": "push", "templates": {"discover": True}}],
        "receiver": {"store_url": store_url},
    }
    return parse_config(raw, env or {}).receiver


def _problems(receiver: dict, env: dict[str, str] | None = None) -> list[str]:
    raw = {
        "accounts": [{"name": "push", "source": "push", "templates": {"discover": True}}],
        "receiver": receiver,
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw, env or {})
    return info.value.problems


# -- configuration -------------------------------------------------------------------


def test_store_url_takes_its_password_from_the_environment():
    receiver = _receiver(
        "postgresql://push:${PGPW}@db:5432/msgsms?sslmode=verify-full", {"PGPW": "s3cret"}
    )
    assert receiver.store_url.value == "postgresql://push:s3cret@db:5432/msgsms?sslmode=verify-full"
    assert receiver.store_path == ""
    assert "s3cret" not in repr(receiver)
    # A password with characters a URL reserves goes in percent-encoded, not raw.
    receiver = _receiver("postgresql://push:${PGPW}@db/msgsms", {"PGPW": "a/b:c@d#e%f"})
    assert receiver.store_url.value == "postgresql://push:a%2Fb%3Ac%40d%23e%25f@db/msgsms"
    assert connection_settings(receiver.store_url.value)["password"] == "a/b:c@d#e%f"


def test_store_url_can_come_whole_from_env_or_file(tmp_path: Path):
    secret = tmp_path / "url"
    secret.write_text("postgresql://push:pw@db/msgsms\n")
    assert _receiver({"file": str(secret)}).store_url.value == "postgresql://push:pw@db/msgsms"
    url = _receiver({"env": "STORE"}, {"STORE": "postgres://db/x"}).store_url
    assert url.value == "postgres://db/x"


def test_store_url_problems_are_located():
    assert _problems({"store_url": "postgresql://push:hunter2@db/msgsms"}) == [
        "receiver.store_url: write the password as ${VAR}, or give the URL by {env:}/{file:}"
    ]
    assert _problems({"store_url": "mysql://db/x"}) == [
        "receiver.store_url: expected a postgresql:// URL"
    ]
    assert _problems({"store_url": "postgresql://db/x", "store_path": "/x.db"}) == [
        "receiver: give store_path (SQLite) or store_url (PostgreSQL), one"
    ]
    assert _problems({"store_url": "postgresql://${NOPE}@db/x"}) == [
        "receiver.store_url: environment variable NOPE is not set"
    ]
    assert _problems({"store_url": "postgresql://db/x?sslmode=verify-full&bogus=1"}) == [
        "receiver.store_url: is not a valid libpq URL"
    ]


def test_tls_parameters_pass_through_and_unverified_remote_hosts_are_named():
    url = "postgresql://u@db.internal/x?sslmode=verify-full&sslrootcert=/ca.pem"
    settings = connection_settings(url)
    assert (settings["sslmode"], settings["sslrootcert"]) == ("verify-full", "/ca.pem")
    assert settings["connect_timeout"] == "3"
    assert connection_settings("postgresql://u@db/x?connect_timeout=9")["connect_timeout"] == "9"
    assert unverified_host(url) is None
    assert unverified_host("postgresql://u@db.internal/x?sslmode=require") == "db.internal"
    assert unverified_host("postgresql://u@127.0.0.1:5432/x") is None


def test_a_url_parameter_with_a_space_reaches_the_database_as_written(
    postgres: PostgresServer,
) -> None:
    # libpq's usual way to set a server setting: options=-c%20name%3Dvalue. The space
    # was re-encoded as '+', which libpq keeps: the settings never applied (here the
    # store could not even find its schema).
    schema = postgres.new_schema()
    options = f"-c search_path={schema} -c statement_timeout=5000"
    url = f"{postgres.url()}?options={quote(options)}&sslmode=disable"
    assert connection_settings(url)["options"] == options
    with closing(PostgresStore(url)) as store:
        assert store.add_reports([StatusReport("m1", "DELIVRD")]).stored == 1
    with psycopg.connect(**connection_settings(url)) as conn:
        shown = conn.execute(
            "SELECT current_setting('search_path'), current_setting('statement_timeout')"
        )
        assert shown.fetchone() == (schema, "5s")
        assert conn.execute("SELECT message_id FROM msgsms_messages").fetchall() == [("m1",)]


def test_the_receiver_opens_the_store_its_config_names(postgres_url: str, tmp_path: Path):
    with closing(open_store(_receiver(postgres_url))) as store:
        assert isinstance(store, PostgresStore)
        assert store.available()
    raw = yaml.safe_load(f"{{store_path: {tmp_path / 'p.db'}}}")
    sqlite = parse_config(
        {
            "accounts": [{"name": "p", "source": "push", "templates": {"discover": True}}],
            "receiver": raw,
        },
        {},
    ).receiver
    with closing(open_store(sqlite)) as store:
        assert isinstance(store, PushStore)


# -- replicas sharing one database ----------------------------------------------------


@pytest.fixture
def replicas(postgres_url: str) -> Iterator[list[PostgresStore]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(PostgresStore(postgres_url, clock=lambda: T0 + 600))
            for _ in range(3)
        ]


def test_a_send_registered_at_one_replica_and_reported_at_another_is_one_message(replicas):
    a, b, c = replicas
    a.register([SendRegistration("m1", "tplA", T0, "4402000000", segments=2)])
    b.add_reports([StatusReport("m1", "DELIVRD", 1, 2, update_time=T0 + 3)])
    c.add_reports([StatusReport("m1", "DELIVRD", 2, 2, update_time=T0 + 4)])
    assert b.add_reports([StatusReport("m1", "DELIVRD", 2, 2)]).duplicates == 1
    (record,) = a.query(DetailsQuery(T0 - 1, T0 + 1)).records
    assert (record.template_id, record.send_result, record.receive_time) == (
        "tplA",
        SendResult.SUCCESS,
        T0 + 4,
    )


@pytest.mark.parametrize("registered", [True, False])
def test_segments_reported_at_replicas_at_the_same_moment_settle_the_message(
    replicas, registered: bool
):
    # Each message's two segments race at two replicas; neither may hide the other, and
    # unregistered messages are created by both at once (one insert wins, one runs again).
    n = 300
    if registered:
        replicas[0].register([SendRegistration(f"m{i}", "tplA", T0, segments=2) for i in range(n)])
    barrier = threading.Barrier(2)

    def push(store: PostgresStore, sequence: int) -> None:
        barrier.wait()
        for i in range(n):
            store.add_reports([StatusReport(f"m{i}", "DELIVRD", sequence, 2, update_time=T0 + 5)])

    threads = [threading.Thread(target=push, args=(replicas[s - 1], s)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    page = replicas[2].query(DetailsQuery(T0 - 1, T0 + 6, send_result=SendResult.SUCCESS, limit=1))
    assert page.total == n
    assert replicas[2].message_count() == n
    assert len(replicas[2].segment_rows()) == 2 * n


def test_replicas_starting_at_once_create_the_schema_once(postgres_url: str):
    stores = [PostgresStore(postgres_url, clock=lambda: T0 + 600) for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def first_write(store: PostgresStore, index: int) -> None:
        barrier.wait()
        try:
            store.register([SendRegistration(f"m{index}", "tpl", T0)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_write, args=(s, i)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for store in stores:
        store.close()
    assert errors == []
    with psycopg.connect(postgres_url) as conn:
        versions = conn.execute(
            "SELECT version FROM msgsms_schema_version ORDER BY version"
        ).fetchall()
        (count,) = conn.execute("SELECT count(*) FROM msgsms_messages").fetchone()
    assert versions == [(v,) for v in range(1, len(MIGRATIONS) + 1)]  # each applied once
    assert count == 6


def test_a_schema_from_a_newer_exporter_is_refused(postgres_url: str):
    with PostgresStore(postgres_url) as store:
        store.register([SendRegistration("m1", "tpl", T0)])
    with psycopg.connect(postgres_url) as conn:
        conn.execute(
            "INSERT INTO msgsms_schema_version (version) VALUES (%s)", (len(MIGRATIONS) + 1,)
        )
    with PostgresStore(postgres_url) as store:
        assert not store.available()
        latest = len(MIGRATIONS)
        with pytest.raises(
            StoreUnavailable,
            match=f"schema is version {latest + 1}; this exporter knows up to {latest}",
        ):
            store.register([SendRegistration("m2", "tpl", T0)])


# -- retention ------------------------------------------------------------------------


def test_replicas_prune_once_and_not_while_another_is_pruning(postgres_url: str):
    now = [T0 + 600]
    stores = [PostgresStore(postgres_url, clock=lambda: now[0], retention=3600) for _ in range(2)]
    try:
        a, b = stores
        a.register([SendRegistration(f"old{i}", "t", T0) for i in range(10)])
        a.register([SendRegistration("new", "t", T0 + 3000)])
        a.settle()  # its maintenance after those writes ran (not once the clock moved)
        now[0] = T0 + 3600 + 10
        with psycopg.connect(postgres_url, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_SPACE, PRUNE_LOCK))
            b.prune()  # another replica holds the lock: b leaves it to that one
            assert (b.pruned, b.message_count()) == (0, 11)
            holder.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_SPACE, PRUNE_LOCK))
        a.prune()
        assert (a.pruned, a.message_count()) == (10, 1)
        # A replica whose minute comes right after finds the pruning done within the minute.
        c = PostgresStore(postgres_url, clock=lambda: now[0], retention=3600)
        stores.append(c)
        c.register([SendRegistration("old-again", "t", T0)])  # its first write: not due
        c.settle()  # its maintenance after that write has run
        assert (c.pruned, c.message_count()) == (0, 2)
        now[0] += 61
        c.register([SendRegistration("later", "t", now[0])])
        c.settle()
        assert (c.pruned, c.message_count()) == (1, 2)
    finally:
        for store in stores:
            store.close()


def test_a_new_store_keeps_using_its_indexes_as_its_tables_grow(postgres_url: str):
    # Until autovacuum first analyzes them, the planner has no statistics on a new
    # store's tables, and it scanned them whole for a batch's ids: every group read
    # the whole table (25 s queues in the benchmark). Nothing here analyzes them.
    day = parse_rfc3339("2026-03-01T10:00:00Z")
    page = DetailsQuery(day - 60, day + 60, template_id="t", limit=10)
    with PostgresStore(postgres_url, clock=lambda: day + 600) as store:
        for n in range(8):  # while the tables are all but empty
            store.add_reports(_reports(f"early-{n}", day))
            store.query(page)
        with psycopg.connect(postgres_url, autocommit=True) as conn:  # 16,000 more
            conn.execute(
                f"INSERT INTO msgsms_messages ({ROW_COLUMNS}) SELECT 'grown-' || g ||"
                f" message_id, {ROW_COLUMNS.split(',', 1)[1]} FROM msgsms_messages,"
                " generate_series(1, 40) AS g"
            )
            conn.execute(
                "INSERT INTO msgsms_segments SELECT 'grown-' || g || message_id, sequence,"
                " total, status, status_desc, update_ms, received_ms, source"
                " FROM msgsms_segments, generate_series(1, 40) AS g"
            )
        for n in range(10):
            store.add_reports(_reports(f"late-{n}", day))
            store.query(page)
    # The store's connections are closed, so their backends flushed their statistics.
    with psycopg.connect(postgres_url) as conn:
        read, tables = conn.execute(
            "SELECT coalesce(sum(seq_tup_read), 0), string_agg(relname || ' ' || seq_tup_read, ', ')"
            " FROM pg_stat_user_tables WHERE schemaname = current_schema()"
        ).fetchone()
    assert read < 16_000, f"rows read by sequential scans: {tables}"


def _reports(prefix: str, day: float) -> list[StatusReport]:
    return [StatusReport(f"{prefix}-{i}", "DELIVRD", update_time=day) for i in range(50)]
