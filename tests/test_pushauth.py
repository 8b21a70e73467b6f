"""Who may push: safe by default on a reachable address; registrations by token or user."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import bcrypt
import httpx
import pytest
from structlog.testing import capture_logs

from exporter.app import Exporter
from exporter.cli import main
from exporter.config import (
    Config,
    ReceiverConfig,
    Secret,
    push_account,
)
from exporter.configfile import load_config, parse_config
from exporter.errors import ConfigError
from exporter.pushauth import is_loopback, unsigned_exposure
from exporter.pushstore import StatusReport, WriteDone
from exporter.signing import Credentials
from exporter.sqlitestore import PushStore
from exporter.timestamps import parse_rfc3339
from exporter.webconfig import WebConfig

NOW = parse_rfc3339("2026-11-26T11:05:00Z")
ACCOUNT = push_account("push")
SENDS = json.dumps(
    [{"message_id": "m1", "template_id": "tplA", "send_time": "2026-11-26T11:00:00Z"}]
).encode()
JSON = {"Content-Type": "application/json"}
REFUSAL = (
    "receiver: the push paths on 0.0.0.0 would accept reports and registrations from anyone:"
    " set receiver.signing.keys (and enable push signing in Huawei's console), or listen on"
    " 127.0.0.1 behind a proxy that authenticates, or set receiver.allow_unsigned: true to"
    " accept unsigned pushes"
)


def _config(tmp_path: Path, **receiver: object) -> Config:
    rc = replace(ReceiverConfig(store_path=str(tmp_path / "push.db")), **receiver)  # type: ignore[arg-type]
    return Config(accounts=(ACCOUNT,), receiver=rc)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("127.0.0.9", True),
        ("0.0.0.0", False),
        ("", False),
        ("::", False),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped loopback
        ("::ffff:10.0.0.5", False),
        ("10.0.0.5", False),
        ("exporter", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool):
    assert is_loopback(host) is loopback


def test_unsigned_pushes_on_a_reachable_address_are_a_problem_naming_the_fix(tmp_path: Path):
    rc = _config(tmp_path).receiver
    assert rc is not None
    assert unsigned_exposure(rc, "0.0.0.0", basic_auth=False) == REFUSAL
    assert unsigned_exposure(rc, "127.0.0.1", basic_auth=False) is None
    assert unsigned_exposure(rc, "0.0.0.0", basic_auth=True) is None
    signed = replace(rc, signing_keys=(Credentials("AK", "SK"),))
    assert unsigned_exposure(signed, "0.0.0.0", basic_auth=False) is None


def test_the_exporter_refuses_to_start_unsigned_on_a_reachable_address(tmp_path: Path):
    with (
        Exporter(_config(tmp_path), clock=lambda: NOW) as exporter,
        pytest.raises(ConfigError) as info,
    ):
        exporter.start("0.0.0.0", 0)
    assert info.value.problems == [REFUSAL]


def test_the_cli_refuses_too_and_says_how_to_fix_it(tmp_path: Path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(
        "accounts: [{name: push, source: push, templates: {discover: true}}]\n"
        f"receiver: {{store_path: {tmp_path / 'push.db'}}}\n"
    )
    argv = [
        "--config.file",
        str(config),
        "--web.listen-address",
        "0.0.0.0:0",
        "--log.level",
        "error",
    ]
    assert main(argv) == 1
    assert REFUSAL in capsys.readouterr().err


def test_allow_unsigned_starts_and_warns_at_start_and_reload(tmp_path: Path):
    config = _config(tmp_path, allow_unsigned=True)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        "accounts: [{name: push, source: push, templates: {discover: true}}]\n"
        f"receiver: {{store_path: {tmp_path / 'push.db'}, allow_unsigned: true}}\n"
    )
    assert (
        parse_config(
            {
                "accounts": [{"name": "push", "source": "push", "templates": {"discover": True}}],
                "receiver": {"store_path": str(tmp_path / "push.db"), "allow_unsigned": True},
            },
            {},
        ).receiver
        == config.receiver
    )
    with Exporter(config, clock=lambda: NOW) as exporter, capture_logs() as logs:
        exporter.config_file = str(config_file)
        exporter.start("0.0.0.0", 0)
        assert exporter.reload_from_file() == []
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == [
        "push paths accept unsigned reports from anyone (receiver.allow_unsigned)"
    ] * 2


@contextmanager
def _running(tmp_path: Path, web: WebConfig = WebConfig(), **receiver: object) -> Iterator[str]:  # noqa: B008
    with Exporter(_config(tmp_path, **receiver), clock=lambda: NOW) as exporter:
        host, port = exporter.start("127.0.0.1", 0, web=web)
        yield f"http://{host}:{port}"


def test_registrations_accept_a_token_and_refuse_a_wrong_one(tmp_path: Path):
    keys = (Credentials("AK", "SK"),)
    with (
        _running(tmp_path, signing_keys=keys, registration_token=Secret("s3cret-token")) as base,
        httpx.Client() as http,
    ):
        url = f"{base}/push/sends"
        ok = http.post(url, content=SENDS, headers={**JSON, "Authorization": "Bearer s3cret-token"})
        wrong = http.post(url, content=SENDS, headers={**JSON, "Authorization": "Bearer nope"})
        none = http.post(url, content=SENDS, headers=JSON)
        report = http.post(
            f"{base}/push/status-report",
            content=b"smsMsgId=m1&status=DELIVRD",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Authorization": "Bearer s3cret-token",
            },
        )
    assert (ok.status_code, ok.json()) == (200, {"registered": 1, "duplicates": 0})
    assert (wrong.status_code, wrong.json()["reason"]) == (401, "unauthorized")
    assert none.status_code == 401
    assert none.json()["message"] == (
        "send registrations need Authorization: Bearer <registration token>, basic auth or"
        " Huawei's push signature"
    )
    assert (report.status_code, report.json()["reason"]) == (401, "signature")  # not for reports


def test_registrations_accept_the_web_configs_basic_auth_when_pushes_are_signed(tmp_path: Path):
    web = WebConfig(users={"app": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4))})
    keys = (Credentials("AK", "SK"),)
    with _running(tmp_path, web, signing_keys=keys) as base, httpx.Client() as http:
        url = f"{base}/push/sends"
        ok = http.post(url, content=SENDS, headers=JSON, auth=("app", "pw"))
        wrong = http.post(url, content=SENDS, headers=JSON, auth=("app", "nope"))
        metrics = http.get(f"{base}/metrics")
    assert ok.status_code == 200
    assert (wrong.status_code, wrong.json()["reason"]) == (401, "unauthorized")
    assert metrics.status_code == 401  # the rest stays behind basic auth


def test_with_only_a_token_reports_stay_behind_basic_auth(tmp_path: Path):
    web = WebConfig(users={"app": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4))})
    with _running(tmp_path, web, registration_token=Secret("tok")) as base, httpx.Client() as http:
        sends = http.post(
            f"{base}/push/sends", content=SENDS, headers={**JSON, "Authorization": "Bearer tok"}
        )
        report = http.post(
            f"{base}/push/status-report",
            content=b"smsMsgId=m1&status=DELIVRD",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert (sends.status_code, report.status_code) == (200, 401)


def test_config_reads_the_new_receiver_settings():
    raw = {
        "accounts": [{"name": "push", "source": "push", "templates": {"discover": True}}],
        "receiver": {
            "store_path": "/x",
            "allow_unsigned": True,
            "registration_token": {"env": "TOKEN"},
            "max_templates": 50,
        },
    }
    rc = parse_config(raw, {"TOKEN": "t0k"}).receiver
    assert rc is not None
    assert (rc.allow_unsigned, rc.registration_token, rc.max_templates) == (
        True,
        Secret("t0k"),
        50,
    )
    assert "t0k" not in repr(rc)


def test_a_reload_that_drops_the_last_user_of_unsigned_pushes_is_rejected(tmp_path: Path):
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    web_file = tmp_path / "web.yml"
    web_file.write_text(f"basic_auth_users: {{app: '{hashed}'}}\n")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        "accounts: [{name: push, source: push, templates: {discover: true}}]\n"
        f"receiver: {{store_path: {tmp_path / 'push.db'}}}\n"
    )
    web = WebConfig(users={"app": hashed.encode()})
    with Exporter(_config(tmp_path), clock=lambda: NOW) as exporter:
        exporter.config_file, exporter.web_config_file = str(config_file), str(web_file)
        _, port = exporter.start("0.0.0.0", 0, web=web)  # behind basic auth: allowed
        web_file.write_text("{}\n")
        assert exporter.reload_from_file() == [REFUSAL]
        with httpx.Client() as http:  # the old users still guard the push paths
            answer = http.post(
                f"http://127.0.0.1:{port}/push/status-report",
                content=b"smsMsgId=m1&status=DELIVRD",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
    assert answer.status_code == 401


class _BrokenStore(PushStore):
    """A store with a bug in its write path: the receiver must answer, count and log it."""

    def add_reports_then(self, reports: Sequence[StatusReport], then: WriteDone) -> None:
        raise RuntimeError("a bug")


def test_a_bug_behind_a_push_is_a_counted_500_not_a_crash(tmp_path: Path):
    from exporter.receiver import Receiver
    from exporter.web import Router, WebServer

    with _BrokenStore(tmp_path / "push.db", clock=lambda: NOW) as store, capture_logs() as logs:
        receiver = Receiver(ReceiverConfig(store_path=store.path), store, clock=lambda: NOW)
        router = Router()
        receiver.add_routes(router)
        server = WebServer(router, "127.0.0.1", 0)
        server.start()
        try:
            host, port = server.address
            answer = httpx.post(
                f"http://{host}:{port}/push/status-report",
                content=b"smsMsgId=m1&status=DELIVRD",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        finally:
            server.stop()
    assert (answer.status_code, answer.json()["reason"]) == (500, "internal_error")
    assert receiver.stats.rejected == {"internal_error": 1}
    assert receiver.stats.requests == {("single", "500"): 1}
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["push request failed"]


def test_a_reload_rotates_the_push_keys_and_the_registration_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from datetime import UTC, datetime

    from exporter.signing import sign_request

    monkeypatch.setenv("OLD_AK", "OLD")
    monkeypatch.setenv("NEW_AK", "NEW")
    monkeypatch.setenv("OLD_SK", "old-secret")
    monkeypatch.setenv("NEW_SK", "new-secret")
    monkeypatch.setenv("TOKEN", "first-token")
    config_file = tmp_path / "config.yaml"

    def write(keys: str) -> None:
        config_file.write_text(
            "accounts: [{name: push, source: push, templates: {discover: true}}]\n"
            f"receiver: {{store_path: {tmp_path / 'push.db'}, registration_token: {{env: TOKEN}},"
            f" signing: {{keys: [{keys}]}}}}\n"
        )

    old = "{access_key: {env: OLD_AK}, secret_key: {env: OLD_SK}}"
    new = "{access_key: {env: NEW_AK}, secret_key: {env: NEW_SK}}"
    write(old)
    config = load_config(str(config_file))
    with Exporter(config, clock=lambda: NOW) as exporter, httpx.Client() as http:
        exporter.config_file = str(config_file)
        host, port = exporter.start("127.0.0.1", 0)
        url = f"http://{host}:{port}/push/status-report"

        def push(access: str, secret: str, message: str) -> int:
            body = f"smsMsgId={message}&status=DELIVRD".encode()
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            now = datetime.fromtimestamp(NOW, UTC)
            headers = sign_request("POST", url, form, body, Credentials(access, secret), now)
            return http.post(url, content=body, headers=headers).status_code

        def register(token: str) -> int:
            bearer = {**JSON, "Authorization": f"Bearer {token}"}
            return http.post(
                f"http://{host}:{port}/push/sends", content=SENDS, headers=bearer
            ).status_code

        assert (push("OLD", "old-secret", "m1"), register("first-token")) == (200, 200)
        write(f"{old}, {new}")  # the new pair beside the old, while Huawei takes it up
        assert exporter.reload_from_file() == []
        assert (push("OLD", "old-secret", "m2"), push("NEW", "new-secret", "m3")) == (200, 200)
        monkeypatch.setenv("TOKEN", "second-token")
        write(new)  # then the old pair goes, and the token changes
        assert exporter.reload_from_file() == []
        assert (push("OLD", "old-secret", "m4"), push("NEW", "new-secret", "m5")) == (401, 200)
        assert (register("first-token"), register("second-token")) == (401, 200)
        # Turning signing off (or the token) changes which paths need basic auth: a restart.
        write("")
        assert exporter.reload_from_file() == [
            "receiver.signing: turning push signing on or off needs a restart"
        ]
        assert push("NEW", "new-secret", "m6") == 200


def test_templates_a_reload_names_for_a_push_account_are_admitted_beyond_the_limit(
    tmp_path: Path,
):
    config_file = tmp_path / "config.yaml"

    def write(templates: str) -> None:
        config_file.write_text(
            f"accounts: [{{name: push, source: push, templates: {templates}}}]\n"
            f"receiver: {{store_path: {tmp_path / 'push.db'}, max_templates: 1}}\n"
        )

    def sends(template: str) -> bytes:
        return json.dumps(
            [
                {
                    "message_id": f"m-{template}",
                    "template_id": template,
                    "send_time": "2026-11-26T11:00:00Z",
                }
            ]
        ).encode()

    write("{discover: true}")
    with Exporter(load_config(str(config_file)), clock=lambda: NOW) as exporter:
        exporter.config_file = str(config_file)
        host, port = exporter.start("127.0.0.1", 0)
        url = f"http://{host}:{port}/push/sends"
        with httpx.Client() as http:
            assert http.post(url, content=sends("tplA"), headers=JSON).status_code == 200
            write("[tplB]")  # the limit is full (tplA): tplB is admitted as configured
            assert exporter.reload_from_file() == []
            assert http.post(url, content=sends("tplB"), headers=JSON).status_code == 200
            assert http.post(url, content=sends("tplC"), headers=JSON).status_code == 200
        assert exporter.push_store is not None
        stored = [t.template_id for t in exporter.push_store.list_templates()]
    assert stored == ["other", "tplA", "tplB"]
