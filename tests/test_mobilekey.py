"""Stored numbers are hashed with a key, on both stores (SQLite and a real PostgreSQL): a
copy of the store does not give the numbers back, the ``mobile`` filter finds them with the
key, a store written with the old unkeyed hash is cleared, a replica with another key is
refused, and a key is rotated by naming the old one."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest
from conftest import Opener
from receiver_server import serving_receiver
from structlog.testing import capture_logs

from exporter.app import Exporter
from exporter.cli import main
from exporter.config import ReceiverConfig
from exporter.configfile import parse_config
from exporter.errors import BadParameter, StoreUnavailable
from exporter.mobilekey import MobileKey
from exporter.pgschema import MIGRATIONS
from exporter.pushstore import ReportStore, SendRegistration
from exporter.records import DETAILS_PATH, DetailsQuery
from exporter.sqlitestore import PushStore
from exporter.timestamps import format_rfc3339

KEY = MobileKey(b"k" * 32 + b"-test-mobile-key")
OTHER_KEY = MobileKey(b"o" * 32 + b"-another-mobile-key")
MOBILE = "4402000000123"
UNKEYED = hashlib.sha256(MOBILE.encode()).hexdigest()


def _now() -> float:
    return time.time()


def _stored_hashes(store: ReportStore, request: pytest.FixtureRequest) -> dict[str, str]:
    """message id → the mobile_hash column, read from the database itself (a copy's view)."""
    if isinstance(store, PushStore):
        with closing(sqlite3.connect(store.path)) as conn:
            return dict(conn.execute("SELECT message_id, mobile_hash FROM messages").fetchall())
    with psycopg.connect(request.getfixturevalue("postgres_url")) as conn:
        rows = conn.execute("SELECT message_id, mobile_hash FROM msgsms_messages").fetchall()
        return dict(rows)


def _sql(store: ReportStore, request: pytest.FixtureRequest, *statements: str) -> None:
    """Run statements on the store's database, as an operator's client would."""
    if isinstance(store, PushStore):
        with closing(sqlite3.connect(store.path)) as conn:
            for statement in statements:
                conn.execute(statement)
            conn.commit()
        return
    with psycopg.connect(request.getfixturevalue("postgres_url")) as conn:
        for statement in statements:
            conn.execute(statement)


@contextmanager
def _details_api(store: ReportStore) -> Iterator[str]:
    """The receiver with ``details_api`` on a free loopback port; yields its base URL."""
    config = ReceiverConfig(store_path="push.db", details_api=True)
    with serving_receiver(config, store) as (server, _receiver):
        host, port = server.address
        yield f"http://{host}:{port}"


def _search(base: str, mobile: str, now: float) -> httpx.Response:
    params = {
        "start_time": format_rfc3339(now - 3600),
        "end_time": format_rfc3339(now + 60),
        "mobile": mobile,
    }
    return httpx.get(f"{base}{DETAILS_PATH}", params=params, timeout=30)


def test_a_registered_number_is_stored_keyed_and_found_by_the_mobile_filter(
    open_store: Opener, request: pytest.FixtureRequest
) -> None:
    now = _now()
    with closing(open_store(mobile_key=KEY)) as store, _details_api(store) as base:
        sends = [
            {"message_id": "m1", "template_id": "tpl", "send_time": format_rfc3339(now - 60)},
            {"message_id": "m2", "template_id": "tpl", "send_time": format_rfc3339(now - 30)},
        ]
        sends[0]["mobile"], sends[1]["mobile"] = MOBILE, "4402000000999"
        registered = httpx.post(f"{base}/push/sends", json=sends, timeout=30)
        assert registered.status_code == 200, registered.text
        found = _search(base, MOBILE, now)
        stored = _stored_hashes(store, request)
    assert found.status_code == 200, found.text
    assert [(r["message_id"], r["mobile"]) for r in found.json()["records"]] == [
        ("m1", "4402*******23")
    ]
    assert stored["m1"] == KEY.hash(MOBILE)
    assert UNKEYED not in stored.values()
    assert MOBILE.encode().hex() not in str(stored) and MOBILE not in str(stored)


def test_without_a_key_no_hash_is_stored_and_the_mobile_filter_is_a_400_naming_the_key(
    open_store: Opener, request: pytest.FixtureRequest
) -> None:
    now = _now()
    with closing(open_store()) as store, _details_api(store) as base:
        store.register([SendRegistration("m1", "tpl", now - 60, MOBILE)])
        refused = _search(base, MOBILE, now)
        unfiltered = httpx.get(
            f"{base}{DETAILS_PATH}",
            params={"start_time": format_rfc3339(now - 3600), "end_time": format_rfc3339(now)},
            timeout=30,
        )
        stored = _stored_hashes(store, request)
    assert refused.status_code == 400
    assert refused.json()["error_code"] == "MSGSMS.0400"
    assert "needs receiver.mobile_key" in refused.json()["error_msg"]
    assert [r["mobile"] for r in unfiltered.json()["records"]] == ["4402*******23"]
    assert stored == {"m1": ""}


def _make_old(store: ReportStore, request: pytest.FixtureRequest, ids: list[str]) -> None:
    """Put the store back as the exporter before keyed hashes left it: schema version 1,
    no key record, each number's unkeyed SHA-256."""
    unkeyed = [f"UPDATE {{t}} SET mobile_hash = '{UNKEYED}' WHERE message_id = '{i}'" for i in ids]
    if isinstance(store, PushStore):
        _sql(
            store,
            request,
            "DROP TABLE mobile_key",
            "PRAGMA user_version = 1",
            *(u.format(t="messages") for u in unkeyed),
        )
    else:
        _sql(
            store,
            request,
            "DROP TABLE msgsms_mobile_key",
            "DROP TABLE msgsms_heartbeat",
            "DROP TABLE msgsms_moves",
            "DELETE FROM msgsms_schema_version WHERE version > 1",
            *(u.format(t="msgsms_messages") for u in unkeyed),
        )


def test_a_store_with_unkeyed_hashes_is_cleared_at_migration_and_still_read(
    open_store: Opener, request: pytest.FixtureRequest
) -> None:
    now = _now()
    with closing(open_store()) as store:
        store.register([SendRegistration("old", "tpl", now - 120, MOBILE)])
    _make_old(store, request, ["old"])
    assert _stored_hashes(store, request) == {"old": UNKEYED}
    with closing(open_store(mobile_key=KEY)) as store:
        store.register([SendRegistration("new", "tpl", now - 60, MOBILE)])
        window = DetailsQuery(now - 3600, now, limit=10)
        everything = [(r.message_id, r.mobile) for r in store.query(window).records]
        by_number = store.query(DetailsQuery(now - 3600, now, mobile=MOBILE, limit=10))
        stored = _stored_hashes(store, request)
    assert everything == [("old", "4402*******23"), ("new", "4402*******23")]
    # The old row cannot be found by number any more (until it ages out); the new one can.
    assert [r.message_id for r in by_number.records] == ["new"]
    assert stored == {"old": "", "new": KEY.hash(MOBILE)}
    if not isinstance(store, PushStore):
        with psycopg.connect(request.getfixturevalue("postgres_url")) as conn:
            versions = conn.execute("SELECT max(version) FROM msgsms_schema_version").fetchone()
        assert versions == (len(MIGRATIONS),)


def test_a_second_exporter_with_another_key_is_refused_and_writes_nothing(
    open_store: Opener, request: pytest.FixtureRequest
) -> None:
    now = _now()
    with closing(open_store(mobile_key=KEY)) as store:
        store.register([SendRegistration("m1", "tpl", now - 60, MOBILE)])
    message = "hashed with another receiver.mobile_key"
    if isinstance(store, PushStore):
        with pytest.raises(StoreUnavailable, match=message):
            open_store(mobile_key=OTHER_KEY)
    else:
        with capture_logs() as logs, closing(open_store(mobile_key=OTHER_KEY)) as other:
            assert not other.available()
            with pytest.raises(StoreUnavailable, match=message):
                other.register([SendRegistration("m2", "tpl", now - 30, MOBILE)])
        # Said once, with the reason, as the replica's readiness first failed.
        said = [e["error"] for e in logs if e["event"].startswith("push store unavailable")]
        assert len(said) == 1 and message in said[0], said
    assert _stored_hashes(store, request) == {"m1": KEY.hash(MOBILE)}


def test_a_key_is_rotated_by_naming_the_old_one_which_then_is_refused(
    open_store: Opener, request: pytest.FixtureRequest
) -> None:
    now = _now()
    with closing(open_store(mobile_key=KEY)) as store:
        store.register([SendRegistration("m1", "tpl", now - 60, MOBILE)])
    with closing(open_store(mobile_key=OTHER_KEY, mobile_key_previous=KEY)) as store:
        store.register([SendRegistration("m2", "tpl", now - 30, MOBILE)])
        found = store.query(DetailsQuery(now - 3600, now, mobile=MOBILE, limit=10))
    assert [r.message_id for r in found.records] == ["m2"]
    # The old key's hashes are gone: the old key, if it leaked, finds no number.
    assert _stored_hashes(store, request) == {"m1": "", "m2": OTHER_KEY.hash(MOBILE)}
    if isinstance(store, PushStore):
        with pytest.raises(StoreUnavailable):
            open_store(mobile_key=KEY)
    else:
        with closing(open_store(mobile_key=KEY)) as old:
            assert not old.available()


def test_a_store_without_a_key_refuses_the_mobile_filter_in_the_store_api(
    tmp_path: Path,
) -> None:
    with closing(PushStore(tmp_path / "push.db")) as store, pytest.raises(BadParameter):
        store.query(DetailsQuery(0, 3600, mobile=MOBILE))


def test_the_details_page_of_a_keyless_store_answers_a_number_search_400_naming_the_key(
    tmp_path: Path,
) -> None:
    raw = {
        "accounts": [{"name": "shop", "source": "push", "templates": {"discover": True}}],
        "receiver": {"store_path": str(tmp_path / "push.db")},
    }
    with Exporter(parse_config(raw, {})) as exporter:
        host, port = exporter.start("127.0.0.1", 0)
        params = {"account": "shop", "last": "1h", "mobile": MOBILE}
        page = httpx.get(f"http://{host}:{port}/details", params=params, timeout=30)
        anything = httpx.get(
            f"http://{host}:{port}/details", params={"account": "shop", "last": "1h"}, timeout=30
        )
    assert page.status_code == 400
    assert "searching by number needs receiver.mobile_key" in page.text
    assert anything.status_code == 200


def test_the_exporter_refuses_to_start_on_an_sqlite_store_of_another_key_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    PushStore(tmp_path / "push.db", mobile_key=KEY).close()
    config = tmp_path / "config.yaml"
    config.write_text(
        "accounts: [{name: shop, source: push, templates: {discover: true}}]\n"
        f"receiver: {{store_path: {tmp_path / 'push.db'}, mobile_key: {{env: MOBILE_KEY}}}}\n"
    )
    monkeypatch.setenv("MOBILE_KEY", OTHER_KEY.secret.decode())
    argv = ["--config.file", str(config), "--web.listen-address", "127.0.0.1:0"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "msgsms-exporter: receiver.mobile_key: the store's mobile numbers were hashed with"
        " another receiver.mobile_key"
    )
    assert OTHER_KEY.secret.decode() not in err
