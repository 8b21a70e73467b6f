"""The PostgreSQL store as production reaches it: a password from the environment and a
verified TLS connection, against a real server that demands both (scram, hostssl)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psycopg
import pytest
from conftest import self_signed
from postgres_server import DATABASE, USER, PostgresServer
from psycopg import sql

from exporter.configfile import parse_config
from exporter.pushstore import SendRegistration, StatusReport, open_store
from exporter.records import DetailsQuery

# Every character a URL reserves, a percent sign and a space: what a managed database's
# password policy asks for (Huawei Cloud RDS wants special characters).
PASSWORD = "p@ss:w/rd#1%41?& x"
ROLE = "msgsms"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostgresServer, str]]:
    certs = tmp_path_factory.mktemp("pg-tls")
    cert, key = self_signed(certs, "postgres")

    def configure(data: Path) -> None:
        shutil.copy(cert, data / "server.crt")
        shutil.copy(key, data / "server.key")
        (data / "server.key").chmod(0o600)
        (data / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host all {USER} 127.0.0.1/32 trust\n"
            f"hostssl all {ROLE} 127.0.0.1/32 scram-sha-256\n"
        )
        if os.geteuid() == 0:
            for name in ("server.crt", "server.key", "pg_hba.conf"):
                shutil.chown(data / name, USER, USER)

    with PostgresServer.running(options="-c ssl=on", configure=configure) as server:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(PASSWORD)
                )
            )
            conn.execute(
                sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(ROLE))
            )
        yield server, cert


def _store_url(server: PostgresServer, ca: str) -> str:
    return (
        f"postgresql://{ROLE}:${{PGPASSWORD}}@127.0.0.1:{server.port}/{DATABASE}"
        f"?sslmode=verify-full&sslrootcert={ca}"
    )


def _receiver(url: str, password: str) -> object:
    raw = {
        "accounts": [{"name": "push", "source": "push", "templates": {"discover": True}}],
        "receiver": {"store_url": url},
    }
    return parse_config(raw, {"PGPASSWORD": password}).receiver


def test_a_password_with_url_characters_from_the_environment_reaches_a_verified_server(
    tls_server: tuple[PostgresServer, str],
) -> None:
    server, ca = tls_server
    now = time.time()
    with closing(open_store(_receiver(_store_url(server, ca), PASSWORD))) as store:
        assert store.available()
        store.register([SendRegistration("m1", "tplA", now - 60)])
        store.add_reports([StatusReport("m1", "DELIVRD", update_time=now - 30)])
        (record,) = store.query(DetailsQuery(now - 120, now)).records
        assert record.template_id == "tplA"
        with psycopg.connect(server.url(), autocommit=True) as conn:
            ssl = conn.execute(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
                " WHERE a.usename = %s",
                (ROLE,),
            ).fetchall()
    assert ssl and all(row == (True,) for row in ssl)


def test_a_wrong_password_or_an_unknown_certificate_leaves_the_store_unavailable(
    tls_server: tuple[PostgresServer, str], tmp_path: Path
) -> None:
    server, ca = tls_server
    with closing(open_store(_receiver(_store_url(server, ca), PASSWORD + "!"))) as store:
        assert not store.available()
    other_ca, _key = self_signed(tmp_path, "other")
    with closing(open_store(_receiver(_store_url(server, other_ca), PASSWORD))) as store:
        assert not store.available()
