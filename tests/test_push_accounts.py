"""Several push accounts: routed by path or by signing key, stored apart, exported apart."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Opener
from exposition import exported_window, samples

from exporter.app import Exporter
from exporter.configfile import parse_config
from exporter.errors import ConfigError
from exporter.pushstore import SendRegistration, StatusReport
from exporter.records import DetailsQuery
from exporter.signing import Credentials, sign_request
from exporter.sqlitestore import PushStore
from exporter.timestamps import format_rfc3339, parse_rfc3339

NOW = parse_rfc3339("2026-11-26T11:00:00Z")
KEY_A, KEY_B = Credentials("AK-SHOP", "sk-shop"), Credentials("AK-BANK", "sk-bank")
ENV = {"AK_A": KEY_A.access_key, "SK_A": KEY_A.secret_key}
ENV |= {"AK_B": KEY_B.access_key, "SK_B": KEY_B.secret_key}


def _raw(receiver: dict[str, Any], names: tuple[str, ...] = ("shop", "bank")) -> dict[str, Any]:
    accounts = [{"name": n, "source": "push", "templates": {"discover": True}} for n in names]
    return {"accounts": accounts, "receiver": {"store_path": "/x/push.db", **receiver}}


def _key(env_ak: str, env_sk: str, account: str | None = None) -> dict[str, Any]:
    key: dict[str, Any] = {"access_key": {"env": env_ak}, "secret_key": {"env": env_sk}}
    return key | ({"account": account} if account else {})


ACCOUNT_PATHS = {
    "single": "/push/{account}/status-report",
    "batch": "/push/{account}/status-reports",
    "sends": "/push/{account}/sends",
}


# --- configuration ---------------------------------------------------------------------------


def test_several_push_accounts_are_accepted_with_account_paths():
    config = parse_config(_raw({"paths": ACCOUNT_PATHS}), ENV)
    assert [a.source for a in config.accounts] == ["push", "push"]
    assert config.receiver is not None
    assert config.receiver.single_path == "/push/{account}/status-report"


def test_several_push_accounts_on_shared_paths_need_keys_bound_to_accounts():
    with pytest.raises(ConfigError) as info:
        parse_config(_raw({}), ENV)
    assert info.value.problems == [
        f"receiver.paths.{key}: several accounts use source: push: put {{account}} in the"
        f" path (/push/{{account}}/{leaf}), or bind every signing key to an account"
        " (receiver.signing.keys[].account)"
        for key, leaf in (
            ("single", "status-report"),
            ("batch", "status-reports"),
            ("sends", "sends"),
        )
    ]
    keys = [_key("AK_A", "SK_A", "shop"), _key("AK_B", "SK_B", "bank")]
    config = parse_config(_raw({"signing": {"keys": keys}}), ENV)
    assert config.receiver is not None
    assert config.receiver.key_accounts == (("AK-SHOP", "shop"), ("AK-BANK", "bank"))


def test_key_bindings_are_checked():
    keys = [_key("AK_A", "SK_A", "shop"), _key("AK_B", "SK_B", "nowhere")]
    keys += [_key("AK_A", "SK_A", "shop"), _key("AK_A", "SK_A", "shop")]
    with pytest.raises(ConfigError) as info:
        parse_config(_raw({"paths": ACCOUNT_PATHS, "signing": {"keys": keys}}), ENV)
    assert info.value.problems == [
        "receiver.signing.keys: at most two key pairs per account (the old and the new)",
        "receiver.signing.keys[1].account: no account 'nowhere' uses source: push",
    ]


def test_an_account_path_needs_a_push_account():
    raw = _raw({"paths": {"single": "/push/{account}/report"}}, names=())
    raw["accounts"] = [
        {"name": "api", "endpoint": "http://x", "project_id": "p", "templates": ["t"]}
    ]
    raw["accounts"][0]["credentials"] = {"token": {"env": "AK_A"}}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, ENV)
    assert info.value.problems == [
        "receiver.paths.single: {account} needs an account with source: push"
    ]


# --- the store -------------------------------------------------------------------------------


def test_each_account_reads_only_its_own_messages(open_store: Opener):
    with closing(open_store(clock=lambda: NOW)) as store:
        store.register(
            [
                SendRegistration("m1", "tpl-shop", NOW - 60, account="shop"),
                SendRegistration("m2", "tpl-bank", NOW - 60, account="bank"),
            ]
        )
        # A report pushed for the wrong account keeps the registration's account.
        store.add_reports(
            [StatusReport("m1", "DELIVRD", account="bank"), StatusReport("m3", "UNDELIV")]
        )
        window = DetailsQuery(NOW - 3600, NOW + 60, limit=100)
        ids = {
            name: [r.message_id for r in store.account_view(name).query(window).records]
            for name in ("shop", "bank", "")
        }
        templates = {
            name: [t.template_id for t in store.account_view(name).list_templates()]
            for name in ("shop", "bank")
        }
        everything = store.account_view(None).query(window)
    assert ids == {"shop": ["m1"], "bank": ["m2"], "": ["m3"]}
    assert templates == {"shop": ["tpl-shop"], "bank": ["tpl-bank"]}
    assert everything.total == 3


V0_SCHEMA = """
CREATE TABLE messages (
    message_id TEXT PRIMARY KEY, template_id TEXT NOT NULL, registered INTEGER NOT NULL,
    send_ms INTEGER NOT NULL, mobile TEXT NOT NULL, mobile_hash TEXT NOT NULL,
    segments INTEGER NOT NULL, result TEXT NOT NULL, status_code TEXT NOT NULL,
    status_desc TEXT NOT NULL, receive_ms INTEGER
);
CREATE INDEX messages_by_template ON messages (template_id, send_ms, message_id);
CREATE INDEX messages_by_time ON messages (send_ms, message_id);
CREATE TABLE segments (
    message_id TEXT NOT NULL, sequence INTEGER NOT NULL, total INTEGER NOT NULL,
    status TEXT NOT NULL, status_desc TEXT NOT NULL, update_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL, source TEXT NOT NULL, PRIMARY KEY (message_id, sequence)
) WITHOUT ROWID;
CREATE TABLE templates (template_id TEXT PRIMARY KEY, last_seen_ms INTEGER NOT NULL)
    WITHOUT ROWID;
"""


def test_a_store_written_before_accounts_is_migrated_in_place(tmp_path: Path):
    path = tmp_path / "push.db"
    send_ms = round((NOW - 60) * 1000)
    conn = sqlite3.connect(path)
    conn.executescript(V0_SCHEMA)
    conn.execute(
        "INSERT INTO messages VALUES ('m1', 'tpl', 1, ?, '', '', 1, 'success', 'DELIVRD', '', ?)",
        (send_ms, send_ms + 5000),
    )
    conn.execute("INSERT INTO segments VALUES ('m1', 1, 1, 'DELIVRD', '', ?, ?, '2')", (0, 0))
    conn.execute("INSERT INTO templates VALUES ('tpl', ?)", (send_ms,))
    conn.commit()
    conn.close()
    with PushStore(path, clock=lambda: NOW) as store:
        store.register([SendRegistration("m2", "tpl", NOW - 30, account="shop")])
        store.register([SendRegistration("m1", "tpl", NOW - 60, account="shop")])
        records = store.query(DetailsQuery(NOW - 3600, NOW, limit=10)).records
        templates = {
            name: [t.template_id for t in store.list_templates(account=name)]
            for name in ("", "shop")
        }
    conn = sqlite3.connect(path)
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    conn.close()
    assert [(r.message_id, r.send_result.value) for r in records] == [
        ("m1", "success"),
        ("m2", "sending"),
    ]
    assert templates == {"": ["tpl"], "shop": ["tpl"]}
    assert version == 3


# --- routing and the account label, through a running exporter ------------------------------


def _exporter_config(tmp_path: Path, receiver: dict[str, Any]) -> Any:
    raw = _raw({**receiver, "store_path": str(tmp_path / "push.db")})
    raw["settle_delay"] = "0"
    return parse_config(raw, ENV)


def _sends(template: str, *ids: str) -> bytes:
    sent = format_rfc3339(NOW - 600)
    items = [{"message_id": i, "template_id": template, "send_time": sent} for i in ids]
    return json.dumps(items).encode()


def _reports(*pairs: tuple[str, str]) -> bytes:
    update = format_rfc3339(NOW - 590)
    items = [{"smsMsgId": i, "status": s, "updateTime": update} for i, s in pairs]
    return json.dumps({"statusReportList": items}).encode()


def _post(http: httpx.Client, url: str, body: bytes, key: Credentials | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers = sign_request("POST", url, headers, body, key, datetime.fromtimestamp(NOW, UTC))
    return http.post(url, content=body, headers=headers).status_code


def _windows(exporter: Exporter) -> dict[str, dict[str, Any]]:
    exporter.poll_once()
    found = samples(exporter.exposition_text())
    by_account: dict[str, dict[str, Any]] = {}
    for name in ("shop", "bank"):
        only = {
            "msgsms_window_messages": {
                k: v for k, v in found["msgsms_window_messages"].items() if ("account", name) in k
            }
        }
        by_account[name] = exported_window(only)
    return by_account


def test_pushes_are_routed_by_path_and_exported_under_their_account(tmp_path: Path):
    config = _exporter_config(tmp_path, {"paths": ACCOUNT_PATHS})
    with Exporter(config, clock=lambda: NOW) as exporter, httpx.Client() as http:
        host, port = exporter.start("127.0.0.1", 0)
        base = f"http://{host}:{port}"
        assert _post(http, f"{base}/push/shop/sends", _sends("tpl-s", "s1", "s2", "s3")) == 200
        assert _post(http, f"{base}/push/bank/sends", _sends("tpl-b", "b1")) == 200
        shop = _reports(("s1", "DELIVRD"), ("s2", "UNDELIV"))
        assert _post(http, f"{base}/push/shop/status-reports", shop) == 200
        assert _post(http, f"{base}/push/bank/status-reports", _reports(("b1", "DELIVRD"))) == 200
        assert _post(http, f"{base}/push/status-reports", shop) == 404
        assert _post(http, f"{base}/push/other/status-reports", shop) == 404
        windows = _windows(exporter)
    codes: dict[str, int] = {}
    assert windows == {
        "shop": {"tpl-s": {"success": 1, "failed": 1, "sending": 1, "status_codes": codes}},
        "bank": {"tpl-b": {"success": 1, "failed": 0, "sending": 0, "status_codes": codes}},
    }


def test_pushes_on_shared_paths_are_routed_by_their_signing_key(tmp_path: Path):
    keys = [_key("AK_A", "SK_A", "shop"), _key("AK_B", "SK_B", "bank")]
    config = _exporter_config(tmp_path, {"signing": {"keys": keys}})
    with Exporter(config, clock=lambda: NOW) as exporter, httpx.Client() as http:
        host, port = exporter.start("127.0.0.1", 0)
        base = f"http://{host}:{port}"
        assert _post(http, f"{base}/push/sends", _sends("tpl-s", "s1"), KEY_A) == 200
        assert _post(http, f"{base}/push/sends", _sends("tpl-b", "b1", "b2"), KEY_B) == 200
        reports = _reports(("s1", "DELIVRD"), ("b1", "DELIVRD"))
        assert _post(http, f"{base}/push/status-reports", reports, KEY_B) == 200
        assert _post(http, f"{base}/push/status-reports", reports) == 401
        windows = _windows(exporter)
        rejected = exporter.receiver.stats.rejected if exporter.receiver else None
    codes: dict[str, int] = {}
    assert windows == {
        "shop": {"tpl-s": {"success": 1, "failed": 0, "sending": 0, "status_codes": codes}},
        "bank": {"tpl-b": {"success": 1, "failed": 0, "sending": 1, "status_codes": codes}},
    }
    assert rejected == {"signature": 1}


def test_a_key_bound_to_another_account_is_refused_on_an_account_path(tmp_path: Path):
    keys = [_key("AK_A", "SK_A", "shop"), _key("AK_B", "SK_B", "bank")]
    config = _exporter_config(tmp_path, {"paths": ACCOUNT_PATHS, "signing": {"keys": keys}})
    with Exporter(config, clock=lambda: NOW) as exporter, httpx.Client() as http:
        host, port = exporter.start("127.0.0.1", 0)
        url = f"http://{host}:{port}/push/shop/status-reports"
        body = _reports(("x1", "DELIVRD"))
        assert _post(http, url, body, KEY_B) == 403
        assert _post(http, url, body, KEY_A) == 200
        assert exporter.push_store is not None
        assert [
            r.message_id
            for r in exporter.push_store.account_view("shop")
            .query(DetailsQuery(0, 4e9, limit=10))
            .records
        ] == ["x1"]
