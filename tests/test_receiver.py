"""The push receiver: both push formats, signing, attribution, registrations, rejections."""

from __future__ import annotations

import gc
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.config import ReceiverConfig
from exporter.configfile import parse_config
from exporter.errors import ConfigError
from exporter.listener import WORKER_THREADS
from exporter.pushparse import parse_single, template_from_extend
from exporter.receiver import Receiver
from exporter.records import DetailsQuery, SendResult
from exporter.signing import Credentials, sign_request
from exporter.sqlitestore import PushStore
from exporter.timestamps import parse_rfc3339
from exporter.web import Request, Response, Router, WebServer

NOW = parse_rfc3339("2026-11-26T11:05:00Z")
FACTS_NOW = parse_rfc3339("2018-04-13T06:32:00Z")
"""The facts' example report is from 2018: tests that push it run the clock then."""
FORM = {"content-type": "application/x-www-form-urlencoded"}
JSON = {"content-type": "application/json"}
FACTS_BODY = (
    b"sequence=1&total=1&orgCode=000&updateTime=2018-04-13T06%3A31%3A46Z&source=2"
    b"&smsMsgId=b9d9b4fe-ad0e-4a2a-a2c7-445505b674ac_6&status=DELIVRD"
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PushStore]:
    # The facts' example report is from 2018: keep it past the default retention.
    with PushStore(tmp_path / "push.db", clock=lambda: NOW, retention=1e10) as s:
        yield s


def _receiver(store: PushStore, now: float = NOW, **overrides: object) -> tuple[Receiver, Router]:
    config = replace(ReceiverConfig(store_path=store.path), **overrides)  # type: ignore[arg-type]
    receiver = Receiver(config, store, clock=lambda: now)
    router = Router()
    receiver.add_routes(router)
    return receiver, router


def _post(
    router: Router, path: str, body: bytes, headers: dict[str, str], query: str = ""
) -> Response:
    params: dict[str, list[str]] = {}
    for part in filter(None, query.split("&")):
        name, _, value = part.partition("=")
        params.setdefault(name, []).append(value)
    return router.dispatch(Request("POST", path, params, headers, body))


def _records(store: PushStore) -> list:
    return store.query(DetailsQuery(0, 4e9, limit=100)).records


def _batch(*items: dict) -> bytes:
    return json.dumps({"statusReportList": list(items)}).encode()


def test_single_report_from_the_facts_is_stored_and_answered_empty(store: PushStore):
    receiver, router = _receiver(store, FACTS_NOW)
    response = _post(router, "/push/status-report", FACTS_BODY, FORM)
    assert (response.status, response.body) == (200, b"")
    (record,) = _records(store)
    assert record.message_id == "b9d9b4fe-ad0e-4a2a-a2c7-445505b674ac_6"
    assert (record.template_id, record.send_result) == ("unknown", SendResult.SUCCESS)
    assert record.receive_time == parse_rfc3339("2018-04-13T06:31:46Z")
    assert receiver.stats.reports[("", "single")] == 1
    assert receiver.stats.unattributed == 1


def test_batch_of_fifty_is_stored(store: PushStore):
    receiver, router = _receiver(store)
    items = [{"smsMsgId": f"m{i}", "status": "DELIVRD"} for i in range(50)]
    response = _post(router, "/push/status-reports", _batch(*items), JSON)
    assert (response.status, response.body) == (200, b"")
    assert store.message_count() == 50
    assert receiver.stats.reports[("", "batch")] == 50


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "reason"),
    [
        ("/push/status-report", b"status=DELIVRD", FORM, 400, "missing_field"),
        ("/push/status-report", b"smsMsgId=m1", FORM, 400, "missing_field"),
        ("/push/status-report", b"smsMsgId=m1&status=DELIVRD", JSON, 415, "content_type"),
        ("/push/status-report", b"smsMsgId=m\xff&status=X", FORM, 400, "bad_encoding"),
        ("/push/status-report", b"smsMsgId=m%FF&status=X", FORM, 400, "bad_encoding"),
        ("/push/status-report", b"smsMsgId=a&smsMsgId=b&status=X", FORM, 400, "bad_field"),
        ("/push/status-report", b"smsMsgId=a&status=X&total=1&sequence=2", FORM, 400, "bad_field"),
        ("/push/status-report", b"smsMsgId=a&status=X&updateTime=soon", FORM, 400, "bad_field"),
        ("/push/status-report", b"smsMsgId=" + b"x" * 65 + b"&status=X", FORM, 400, "bad_field"),
        ("/push/status-reports", b"{", JSON, 400, "bad_json"),
        ("/push/status-reports", b"\xff\xfe", JSON, 400, "bad_encoding"),
        ("/push/status-reports", b"[]", JSON, 400, "bad_shape"),
        ("/push/status-reports", b'{"statusReportList": []}', JSON, 400, "empty_batch"),
        ("/push/status-reports", b"{}", FORM, 415, "content_type"),
        (
            "/push/status-reports",
            _batch(*[{"smsMsgId": f"m{i}", "status": "DELIVRD"} for i in range(51)]),
            JSON,
            400,
            "too_many_items",
        ),
        ("/push/sends", b'{"code": "000000", "result": {}}', JSON, 400, "bad_shape"),
    ],
)
def test_bad_pushes_are_rejected_counted_and_store_nothing(
    store: PushStore, path, body, headers, status, reason
):
    receiver, router = _receiver(store)
    response = _post(router, path, body, headers)
    assert response.status == status
    assert json.loads(response.body)["reason"] == reason
    assert receiver.stats.rejected == {reason: 1}
    assert store.message_count() == 0


def test_a_batch_keeps_its_valid_items_and_lists_the_rejected_ones(store: PushStore):
    receiver, router = _receiver(store)
    body = _batch(
        {"smsMsgId": "ok1", "status": "DELIVRD"},
        {"status": "DELIVRD"},
        "not an object",
        {"smsMsgId": "ok2", "status": "UNDELIV", "total": 2, "sequence": 1},
    )
    response = _post(router, "/push/status-reports", body, JSON)
    assert response.status == 400
    assert json.loads(response.body) == {
        "reason": "invalid_items",
        "message": "2 of 4 reports rejected; the other 2 are stored",
        "stored": [0, 3],
        "duplicates": 0,
        "rejected": [
            {"index": 1, "reason": "missing_field", "message": "smsMsgId is required"},
            {"index": 2, "reason": "bad_shape", "message": "a report must be a JSON object"},
        ],
    }
    assert sorted(r.message_id for r in _records(store)) == ["ok1", "ok2"]
    assert receiver.stats.rejected == {"missing_field": 1, "bad_shape": 1}


def test_signed_batch_from_the_facts_known_answer_is_accepted(store: PushStore):
    keys = (Credentials("OLDKEY", "old-secret"), Credentials("AKEXAMPLE", "SKEXAMPLE"))
    _, router = _receiver(store, batch_path="/api/v1/status-reports", signing_keys=keys)
    body = b'{"statusReportList":[{"smsMsgId":"a_1","status":"DELIVRD"}]}'
    headers = {
        "content-type": "application/json",
        "x-sdk-date": "20261126T110500Z",
        "host": "127.0.0.1:9000",
        "authorization": "SDK-HMAC-SHA256 Access=AKEXAMPLE, SignedHeaders=content-type;host;"
        "x-sdk-date, Signature=3434057ea1f840e8e7af495f4eec39650b08d8e3df3b2ec1f04769409f78ecb9",
    }
    assert _post(router, "/api/v1/status-reports", body, headers).status == 200
    tampered = body.replace(b"DELIVRD", b"UNDELIV")
    response = _post(router, "/api/v1/status-reports", tampered, headers)
    assert response.status == 401
    assert json.loads(response.body)["message"] == "bad push signature: signature does not match"
    assert [r.status_code for r in _records(store)] == ["DELIVRD"]


@pytest.mark.parametrize("access", ["OLDKEY", "NEWKEY"])
def test_either_of_two_active_key_pairs_signs(store: PushStore, access: str):
    from datetime import UTC, datetime

    keys = (Credentials("OLDKEY", "old-secret"), Credentials("NEWKEY", "new-secret"))
    receiver, router = _receiver(store, FACTS_NOW, signing_keys=keys)
    secret = {k.access_key: k.secret_key for k in keys}[access]
    url = "http://exporter:9170/push/status-report"
    signed = sign_request(
        "POST",
        url,
        {"Content-Type": FORM["content-type"]},
        FACTS_BODY,
        Credentials(access, secret),
        datetime.fromtimestamp(FACTS_NOW, UTC),
    )
    headers = {k.lower(): v for k, v in signed.items()}
    assert _post(router, "/push/status-report", FACTS_BODY, headers).status == 200
    unsigned = _post(router, "/push/status-report", FACTS_BODY, FORM)
    assert unsigned.status == 401
    assert receiver.stats.rejected == {"signature": 1}


@pytest.mark.parametrize(
    ("extend", "mode", "key", "template"),
    [
        ("tplA", "extend", "", "tplA"),
        ("order=7;tpl=tplB", "extend_pair", "tpl", "tplB"),
        ("tpl=tplB&x=1", "extend_pair", "tpl", "tplB"),
        ('{"tpl": "tplC", "o": 1}', "extend_json", "tpl", "tplC"),
        ('{"tpl": 5}', "extend_json", "tpl", None),
        ("not json", "extend_json", "tpl", None),
        ("x=1", "extend_pair", "tpl", None),
        ("has space", "extend", "", None),
        ("tplA", "none", "", None),
    ],
)
def test_template_from_extend(extend, mode, key, template):
    assert template_from_extend(extend, mode, key) == template


def test_reports_are_attributed_by_extend_when_configured(store: PushStore):
    receiver, router = _receiver(store, attribution="extend_pair", attribution_key="tpl")
    body = b"smsMsgId=m1&status=DELIVRD&extend=tpl%3DtplB%3Border%3D9&to=%2B4402000000"
    assert _post(router, "/push/status-report", body, FORM).status == 200
    assert [r.template_id for r in _records(store)] == ["tplB"]
    assert receiver.stats.unattributed == 0


def test_a_batchsendsms_response_registers_its_accepted_recipients(store: PushStore):
    receiver, router = _receiver(store)
    body = json.dumps(
        {
            "code": "E000510",
            "description": "Partial success",
            "result": [
                {
                    "originTo": "+4402000000",
                    "createTime": "2026-11-26T11:00:00Z",
                    "from": "sender",
                    "smsMsgId": "m1",
                    "status": "000000",
                    "total": 2,
                },
                {"originTo": "+44", "createTime": "2026-11-26T11:00:00Z", "status": "E200028"},
            ],
        }
    ).encode()
    response = _post(router, "/push/sends", body, JSON, query="templateId=tplA")
    assert response.status == 200
    assert json.loads(response.body) == {"registered": 1, "duplicates": 0}
    (record,) = _records(store)
    assert (record.template_id, record.send_time, record.mobile, record.segments) == (
        "tplA",
        parse_rfc3339("2026-11-26T11:00:00Z"),
        "4402****00",
        2,
    )
    assert _post(router, "/push/sends", body, JSON, query="templateId=tplA").status == 200
    assert receiver.stats.duplicates["registration"] == 1


def test_a_list_of_sends_registers_and_rejects_item_by_item(store: PushStore):
    _, router = _receiver(store)
    body = json.dumps(
        [
            {"message_id": "m1", "template_id": "tplA", "send_time": "2026-11-26T11:00:00.250Z"},
            {"message_id": "m2", "template_id": "bad id", "send_time": "2026-11-26T11:00:00Z"},
            {"message_id": "m3", "template_id": "tplA"},
        ]
    ).encode()
    response = _post(router, "/push/sends", body, JSON)
    assert response.status == 400
    answer = json.loads(response.body)
    assert (answer["stored"], answer["registered"]) == ([0], 1)
    assert [p["reason"] for p in answer["rejected"]] == ["bad_field", "missing_field"]
    assert [r.send_time for r in _records(store)] == [parse_rfc3339("2026-11-26T11:00:00.250Z")]


def test_batchsendsms_without_a_template_is_rejected(store: PushStore):
    _, router = _receiver(store)
    body = b'{"code":"000000","result":[{"smsMsgId":"m1","createTime":"2026-11-26T11:00:00Z"}]}'
    response = _post(router, "/push/sends", body, JSON)
    assert response.status == 400
    assert json.loads(response.body)["rejected"][0]["reason"] == "missing_field"


def test_parse_single_keeps_every_field():
    report = parse_single(FACTS_BODY + b"&statusDesc=ok&extend=x", FACTS_NOW)
    assert (report.sequence, report.total, report.source, report.extend) == (1, 1, "2", "x")


def test_store_failure_answers_503(tmp_path: Path):
    store = PushStore(tmp_path / "p.db")
    receiver, router = _receiver(store, FACTS_NOW)
    store.close()
    response = _post(router, "/push/status-report", FACTS_BODY, FORM)
    assert response.status == 503
    assert receiver.stats.rejected == {"store_unavailable": 1}


def test_collector_exposes_the_counts(store: PushStore):
    receiver, router = _receiver(store, FACTS_NOW)
    _post(router, "/push/status-report", FACTS_BODY, FORM)
    _post(router, "/push/status-report", FACTS_BODY, FORM)
    _post(router, "/push/status-report", b"status=X", FORM)
    registry = CollectorRegistry()
    registry.register(receiver.collector())
    text = generate_latest(registry).decode()
    for line in (
        'msgsms_push_requests_total{code="200",endpoint="single"} 2.0',
        'msgsms_push_requests_total{code="400",endpoint="single"} 1.0',
        'msgsms_push_rejected_total{reason="missing_field"} 1.0',
        'msgsms_push_reports_total{account="",kind="single"} 1.0',
        'msgsms_push_reports_total{account="",kind="batch"} 0.0',
        'msgsms_push_duplicates_total{kind="report"} 1.0',
        "msgsms_push_unattributed_reports_total 1.0",
        'msgsms_push_ack_duration_seconds_count{endpoint="single"} 3.0',
    ):
        assert line in text


def test_over_http_an_oversized_body_gets_413_and_the_server_keeps_serving(store: PushStore):
    _, router = _receiver(store, FACTS_NOW)
    server = WebServer(router, "127.0.0.1", 0)
    server.start()
    try:
        host, port = server.address
        url = f"http://{host}:{port}/push/status-report"
        with httpx.Client() as http:
            big = http.post(url, content=b"x" * (1024 * 1024 + 1), headers=FORM)
            assert big.status_code == 413
            ok = http.post(url, content=FACTS_BODY, headers=FORM)
            assert (ok.status_code, ok.content) == (200, b"")
    finally:
        server.stop()


def _config(receiver: dict, **account: object) -> dict:
    return {
        "accounts": [
            {"name": "push", "source": "push", "templates": {"discover": True}, **account}
        ],
        "receiver": receiver,
    }


def test_config_reads_the_receiver_section():
    raw = _config(
        {
            "store_path": "/var/lib/push.db",
            "paths": {"single": "/hw/report", "batch": "/hw/reports", "sends": "/hw/sends"},
            "retention": "80h",
            "synchronous": "full",
            "signing": {"keys": [{"access_key": {"env": "AK"}, "secret_key": {"env": "SK"}}]},
            "attribution": {"from": "extend_json", "key": "tpl"},
            "details_api": True,
        }
    )
    config = parse_config(raw, {"AK": "ak", "SK": "sk"})
    assert config.accounts[0].source == "push"
    assert config.receiver == ReceiverConfig(
        store_path="/var/lib/push.db",
        single_path="/hw/report",
        batch_path="/hw/reports",
        sends_path="/hw/sends",
        retention=80 * 3600.0,
        synchronous="full",
        signing_keys=(Credentials("ak", "sk"),),
        attribution="extend_json",
        attribution_key="tpl",
        details_api=True,
    )


def test_config_reports_every_receiver_problem():
    raw = _config(
        {
            "paths": {"single": "relative"},
            "synchronous": "off",
            "signing": {"keys": [{"access_key": {"env": "AK"}}]},
            "attribution": {"from": "extend_pair"},
            "details_api": "yes",
        },
        endpoint="http://x",
    )
    with pytest.raises(ConfigError) as info:
        parse_config(raw, {"AK": "ak"})
    assert info.value.problems == [
        "accounts[0].endpoint: not used with source: push",
        "receiver: give store_path (SQLite) or store_url (PostgreSQL), one",
        "receiver.paths.single: expected an absolute URL path such as /push/status-report",
        "receiver.synchronous: expected 'normal' or 'full'"
        " (SQLite's off is not offered: a power loss could lose reports)",
        "receiver.signing.keys[0]: give access_key and secret_key",
        "receiver.attribution.key: is required with from: extend_pair",
        "receiver.details_api: expected true or false",
    ]


def test_config_needs_a_receiver_for_a_push_account():
    raw = _config({"store_path": "/x"})
    del raw["receiver"]
    with pytest.raises(ConfigError) as info:
        parse_config(raw, {})
    assert info.value.problems == ["receiver: is required: account 'push' uses source: push"]


@contextmanager
def _serve(router: Router) -> Iterator[str]:
    server = WebServer(router, "127.0.0.1", 0)
    server.start()
    host, port = server.address
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_unstorable_items_among_concurrent_batches_lose_no_valid_report(store: PushStore):
    from concurrent.futures import ThreadPoolExecutor

    receiver, router = _receiver(store)
    poison = _batch({"smsMsgId": "p", "status": "UNDELIV", "statusDesc": "\ud800"})

    def valid(n: int) -> bytes:
        return _batch(*({"smsMsgId": f"b{n}-{i}", "status": "DELIVRD"} for i in range(50)))

    bodies = [valid(n) for n in range(400)]
    for k in range(30):
        bodies.insert(k * 13, poison.replace(b'"p"', f'"p{k}"'.encode()))
    # No client-side closing: httpcore 1.0.9's pool closes "surplus idle" connections
    # (it compares max_keepalive_connections with all of them) and may close one it has
    # just handed to another thread, whose read then fails: httpx.ReadError, Bad file
    # descriptor (encode/httpcore#1110). Unbounded, it keeps one connection a thread.
    limits = httpx.Limits(
        max_connections=None, max_keepalive_connections=None, keepalive_expiry=None
    )
    with _serve(router) as base, httpx.Client(timeout=60, limits=limits) as http:

        def post(body: bytes) -> int:
            return http.post(f"{base}/push/status-reports", content=body, headers=JSON).status_code

        with ThreadPoolExecutor(32) as pool:
            codes = list(pool.map(post, bodies))
    assert codes.count(200) == 400
    assert store.message_count() == 400 * 50
    assert receiver.stats.reports[("", "batch")] == 400 * 50
    assert codes.count(400) == 30


# -- issue 11: what Huawei's signer sends, bad input, hostile traffic -------------------

SIGNED_FORM = (
    b"sequence=1&total=1&orgCode=000&updateTime=2026-11-26T11%3A04%3A46Z&source=2"
    b"&smsMsgId=b9d9b4fe-ad0e-4a2a-a2c7-445505b674ac_6&status=DELIVRD"
)
SIGNED_FORM_HEADERS = {
    "Host": "127.0.0.1:9000",
    "Content-Type": "application/x-www-form-urlencoded",
    "X-Sdk-Date": "20261126T110500Z",
    "X-Sdk-Content-Sha256": "UNSIGNED-PAYLOAD",
    # Produced with huaweicloudsdkcore 3.1.219's Signer (AKEXAMPLE / SKEXAMPLE).
    "Authorization": "SDK-HMAC-SHA256 Access=AKEXAMPLE, SignedHeaders=content-type;host;"
    "x-sdk-content-sha256;x-sdk-date, "
    "Signature=8e63b6d15fbb132f14a4fd6eb845f034c87dcf389a56f81d7ea6808aa46b5cf7",
}
EXAMPLE_KEYS = (Credentials("AKEXAMPLE", "SKEXAMPLE"),)


def test_a_form_report_signed_as_unsigned_payload_is_accepted_over_http(store: PushStore):
    receiver, router = _receiver(store, signing_keys=EXAMPLE_KEYS)
    with _serve(router) as base, httpx.Client() as http:
        url = f"{base}/push/status-report"
        answer = http.post(url, content=SIGNED_FORM, headers=SIGNED_FORM_HEADERS)
        assert (answer.status_code, answer.content) == (200, b"")
        wrong_date = {**SIGNED_FORM_HEADERS, "X-Sdk-Date": "20261126T110501Z"}
        assert http.post(url, content=SIGNED_FORM, headers=wrong_date).status_code == 401
        hashed = {**SIGNED_FORM_HEADERS, "X-Sdk-Content-Sha256": "0" * 64}
        refused = http.post(url, content=SIGNED_FORM, headers=hashed)
        assert refused.json()["message"] == (
            "bad push signature: X-Sdk-Content-Sha256 does not match the body"
        )
    assert [r.message_id for r in _records(store)] == ["b9d9b4fe-ad0e-4a2a-a2c7-445505b674ac_6"]
    assert receiver.stats.rejected == {"signature": 2}


def _sdk_signed(
    url: str, body: bytes, content_type: str, query: list[tuple[str, str]] | None = None
) -> dict[str, str]:
    """Headers from Huawei's own signer (huaweicloudsdkcore), the way the gateway signs."""
    from urllib.parse import urlsplit

    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.sdk_request import SdkRequest
    from huaweicloudsdkcore.signer.signer import Signer

    parts = urlsplit(url)
    request = SdkRequest(
        method="POST",
        schema=parts.scheme,
        host=parts.netloc,
        resource_path=parts.path,
        uri=parts.path,
        query_params=list(query or []),
        header_params={
            "Content-Type": content_type,
            "X-Sdk-Date": datetime.fromtimestamp(NOW, UTC).strftime("%Y%m%dT%H%M%SZ"),
        },
        body=body,
    )
    Signer(BasicCredentials("AKEXAMPLE", "SKEXAMPLE")).sign(request)
    return dict(request.header_params)


def test_reports_signed_by_huaweis_own_signer_are_accepted_form_and_json(store: PushStore):
    receiver, router = _receiver(store, signing_keys=EXAMPLE_KEYS)
    batch = _batch({"smsMsgId": "j1", "status": "DELIVRD"})
    with _serve(router) as base, httpx.Client() as http:
        single_url, batch_url = f"{base}/push/status-report", f"{base}/push/status-reports"
        form_headers = _sdk_signed(single_url, SIGNED_FORM, FORM["content-type"])
        assert form_headers["X-Sdk-Content-Sha256"] == "UNSIGNED-PAYLOAD"
        assert http.post(single_url, content=SIGNED_FORM, headers=form_headers).status_code == 200
        json_headers = _sdk_signed(batch_url, batch, JSON["content-type"])
        assert "X-Sdk-Content-Sha256" not in json_headers  # JSON bodies are hashed
        assert http.post(batch_url, content=batch, headers=json_headers).status_code == 200
        tampered = batch.replace(b"DELIVRD", b"UNDELIV")
        assert http.post(batch_url, content=tampered, headers=json_headers).status_code == 401
        # The documented trade-off: an unsigned payload is not covered by the signature.
        replayed = SIGNED_FORM.replace(b"_6&", b"_7&")
        assert http.post(single_url, content=replayed, headers=form_headers).status_code == 200
    assert sorted(r.message_id for r in _records(store))[-1] == "j1"
    assert receiver.stats.rejected == {"signature": 1}


def test_a_callback_query_signed_by_huaweis_own_signer_is_accepted_in_either_order(
    store: PushStore,
):
    # The Python SDK sorts query names before encoding them ("aZ" < "a["); the gateway's
    # documentation sorts the encoded ones ("a%5B" < "aZ"). Both orders are accepted.
    receiver, router = _receiver(store, signing_keys=EXAMPLE_KEYS)
    query = [("aZ", "2"), ("a[", "1"), ("tag", "shop eu")]
    with _serve(router) as base, httpx.Client() as http:
        url = f"{base}/push/status-report"
        sdk = _sdk_signed(url, SIGNED_FORM, FORM["content-type"], query)
        target = f"{url}?aZ=2&a%5B=1&tag=shop%20eu"
        assert http.post(target, content=SIGNED_FORM, headers=sdk).status_code == 200
        ours = sign_request(
            "POST", target, FORM, SIGNED_FORM, EXAMPLE_KEYS[0], datetime.fromtimestamp(NOW, UTC)
        )
        assert http.post(target, content=SIGNED_FORM, headers=ours).status_code == 200
        other_value = target.replace("tag=shop", "tag=bank")
        assert http.post(other_value, content=SIGNED_FORM, headers=sdk).status_code == 401
    assert receiver.stats.rejected == {"signature": 1}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"smsMsgId=m1&status=DELIVRD&total=%C2%B2", "bad_field"),  # "²"
        (b"smsMsgId=m1&status=DELIVRD&total=%D9%A2", "bad_field"),  # Arabic-Indic two
        (b"smsMsgId=" + b"x" * 51 + b"&status=DELIVRD", "bad_field"),
        (b"smsMsgId=m1&status=" + b"S" * 17, "bad_field"),  # over 16 characters
        (b"smsMsgId=m1&status=DELIVRD&updateTime=9999-12-31T23%3A59%3A59Z", "implausible_time"),
    ],
)
def test_bad_single_reports_get_400_over_http_and_are_counted(store: PushStore, body, reason):
    receiver, router = _receiver(store)
    with _serve(router) as base, httpx.Client() as http:
        answer = http.post(f"{base}/push/status-report", content=body, headers=FORM)
    assert (answer.status_code, answer.json()["reason"]) == (400, reason)
    assert receiver.stats.rejected == {reason: 1}
    assert store.message_count() == 0


def test_json_members_given_twice_differently_are_refused_not_read_as_the_last(
    store: PushStore,
):
    # json.loads keeps the last of a repeated name; which one Huawei meant is unknown.
    items = (
        b'{"smsMsgId": "d1", "smsMsgId": "d2", "status": "DELIVRD"},'
        b'{"smsMsgId": "s1", "smsMsgId": "s1", "status": "DELIVRD"},'
        b'{"smsMsgId": "n1", "status": "DELIVRD", "total": NaN, "TOTAL": NaN},'
        b'{"smsMsgId": "u1", "status": "DELIVRD", "orgCode": "1", "orgCode": "2"}'
    )
    sends = (
        b'[{"message_id": "r1", "template_id": "t1", "template_id": "t2",'
        b' "send_time": "2026-11-26T11:00:00Z"}]'
    )
    receiver, router = _receiver(store)
    with _serve(router) as base, httpx.Client() as http:
        batch = http.post(
            f"{base}/push/status-reports",
            content=b'{"statusReportList": [%s]}' % items,
            headers=JSON,
        )
        twice = http.post(
            f"{base}/push/status-reports",
            content=b'{"statusReportList": [], "statusReportList": [%s]}' % items,
            headers=JSON,
        )
        registration = http.post(f"{base}/push/sends", content=sends, headers=JSON)
    assert batch.status_code == 400
    assert batch.json()["stored"] == [1, 3]
    assert batch.json()["rejected"] == [
        {
            "index": 0,
            "reason": "bad_field",
            "message": "smsMsgId is given more than once, differently",
        },
        {"index": 2, "reason": "bad_field", "message": "total must be a string"},
    ]
    assert (twice.status_code, twice.json()["reason"]) == (400, "bad_shape")
    assert twice.json()["message"] == "statusReportList is given more than once, differently"
    assert registration.json()["rejected"] == [
        {
            "index": 0,
            "reason": "bad_field",
            "message": "template_id is given more than once, differently",
        }
    ]
    assert sorted(r.message_id for r in _records(store)) == ["s1", "u1"]
    assert receiver.stats.rejected == {"bad_field": 3, "bad_shape": 1}


def test_acceptd_then_delivrd_counts_one_delivered_message_over_http(store: PushStore):
    receiver, router = _receiver(store)
    with _serve(router) as base, httpx.Client() as http:
        url = f"{base}/push/status-report"
        for status, stamp in (("ACCEPTD", "11%3A00%3A05Z"), ("DELIVRD", "11%3A00%3A09Z")):
            body = f"smsMsgId=m1&status={status}&updateTime=2026-11-26T{stamp}".encode()
            assert http.post(url, content=body, headers=FORM).status_code == 200
            (record,) = _records(store)
            if status == "ACCEPTD":
                assert record.send_result is SendResult.SENDING
        late = b"smsMsgId=m1&status=ACCEPTD&updateTime=2026-11-26T11%3A00%3A10Z"
        assert http.post(url, content=late, headers=FORM).status_code == 200
    assert (record.send_result, record.status_code) == (SendResult.SUCCESS, "DELIVRD")
    # As msgsms_push_reports_total's help says: both reports were stored (the final one
    # replaced the other), the non-final one after it is a duplicate; one segment is kept.
    assert receiver.stats.reports[("", "single")] == 2
    assert receiver.stats.duplicates["report"] == 1
    assert store.segment_rows() == [("m1", 1)]


def test_one_post_of_ten_thousand_templates_is_folded_into_other(store: PushStore):
    receiver, router = _receiver(store, max_templates=20)
    sends = [
        {"message_id": f"m{i}", "template_id": f"t{i}", "send_time": "2026-11-26T11:00:00Z"}
        for i in range(10_000)
    ]
    with _serve(router) as base, httpx.Client(timeout=60) as http:
        answer = http.post(f"{base}/push/sends", content=json.dumps(sends), headers=JSON)
        extend = b"smsMsgId=x1&status=DELIVRD&extend=t9999"
        assert http.post(f"{base}/push/status-report", content=extend, headers=FORM).is_success
    assert answer.json() == {"registered": 10_000, "duplicates": 0}
    templates = [t.template_id for t in store.list_templates()]
    assert templates == sorted([*(f"t{i}" for i in range(20)), "other", "unknown"])
    assert receiver.stats.folded == {"registration": 9_980}
    assert store.query(DetailsQuery(0, 4e9, template_id="other")).total == 9_980


def test_the_template_limit_holds_when_its_refresh_reads_the_store_mid_request(
    store: PushStore,
):
    # A minute after start, the post that fills the limit also starts the refresh of the
    # stored templates; it must not forget the templates it admitted but has not stored.
    from exporter.pushtemplates import REFRESH_SECONDS

    now = [NOW]
    config = ReceiverConfig(store_path=store.path, max_templates=3)
    receiver = Receiver(config, store, clock=lambda: now[0])
    router = Router()
    receiver.add_routes(router)
    now[0] += REFRESH_SECONDS

    def sends(first: int) -> bytes:
        return json.dumps(
            [
                {"message_id": f"m{i}", "template_id": f"t{i}", "send_time": "2026-11-26T11:00:00Z"}
                for i in range(first, first + 10)
            ]
        ).encode()

    with _serve(router) as base, httpx.Client(timeout=60) as http:
        for first in (0, 10, 20):
            answer = http.post(f"{base}/push/sends", content=sends(first), headers=JSON)
            assert answer.json() == {"registered": 10, "duplicates": 0}
            deadline = time.monotonic() + 30
            while receiver.templates._reading:  # the refresh, on a thread of its own
                assert time.monotonic() < deadline, "the refresh never finished"
                time.sleep(0.01)
    templates = [t.template_id for t in store.list_templates()]
    assert templates == ["other", "t0", "t1", "t2"]
    assert receiver.stats.folded == {"registration": 27}


def test_two_replicas_sharing_a_store_hold_the_template_limit_between_them(
    store: PushStore,
):
    # Each replica admits templates below its limit; a minute on, a new template makes it
    # read the shared store, so the other replica's templates count too.
    from exporter.pushtemplates import REFRESH_SECONDS

    now = [NOW]
    config = ReceiverConfig(store_path=store.path, max_templates=3)
    with PushStore(store.path, clock=lambda: NOW, retention=1e10) as other_store:
        replicas = []
        for replica_store in (store, other_store):
            receiver = Receiver(config, replica_store, clock=lambda: now[0])
            router = Router()
            receiver.add_routes(router)
            replicas.append((receiver, router))

        def sends(*templates: str) -> bytes:
            return json.dumps(
                [
                    {"message_id": f"m-{t}", "template_id": t, "send_time": "2026-11-26T11:00:00Z"}
                    for t in templates
                ]
            ).encode()

        (_, first_router), (second, second_router) = replicas
        with _serve(first_router) as a, _serve(second_router) as b, httpx.Client() as http:
            assert (
                http.post(
                    f"{a}/push/sends", content=sends("t0", "t1", "t2"), headers=JSON
                ).status_code
                == 200
            )
            now[0] += REFRESH_SECONDS
            assert http.post(f"{b}/push/sends", content=sends("x"), headers=JSON).status_code == 200
            deadline = time.monotonic() + 30
            while second.templates._reading:
                assert time.monotonic() < deadline, "the refresh never finished"
                time.sleep(0.01)
            assert (
                http.post(f"{b}/push/sends", content=sends("y", "z"), headers=JSON).status_code
                == 200
            )
    templates = [t.template_id for t in store.list_templates()]
    assert templates == ["other", "t0", "t1", "t2", "x"]  # x: admitted as the read began
    assert second.stats.folded == {"registration": 2}


def test_extend_beyond_the_limit_is_folded_too(store: PushStore):
    receiver, router = _receiver(store, max_templates=1, attribution="extend", attribution_key="")
    for i in range(3):
        body = f"smsMsgId=m{i}&status=DELIVRD&extend=tpl{i}".encode()
        assert _post(router, "/push/status-report", body, FORM).status == 200
    assert [r.template_id for r in _records(store)] == ["tpl0", "other", "other"]
    assert receiver.stats.folded == {"report": 2}


@pytest.mark.parametrize(
    "path", ["/metrics", "/-/reload", "/-/anything", "/", "/details", "/metrics/"]
)
def test_config_rejects_receiver_paths_that_take_the_exporters_own(path: str):
    raw = _config({"store_path": "/x", "paths": {"batch": path}})
    with pytest.raises(ConfigError) as info:
        parse_config(raw, {})
    assert info.value.problems == [
        f"receiver.paths.batch: {path} is one of the exporter's own paths"
    ]


@pytest.mark.parametrize(
    ("paths", "problem"),
    [
        # Served as /push/x/ too, the single path would take the batch path's requests.
        (
            {"single": "/push/x", "batch": "/push/x/"},
            "receiver.paths: single, batch and sends need different paths (a final / aside)",
        ),
        # Routed with runs of "/" merged, or resolved by the client: never reached.
        *(
            (
                {"sends": path},
                "receiver.paths.sends: expected a path without //, /./ or /../,"
                " such as /push/status-report",
            )
            for path in ("/push//sends", "//metrics", "/push/./sends", "/push/../metrics")
        ),
    ],
)
def test_config_rejects_receiver_paths_that_would_never_be_reached(paths: dict, problem: str):
    with pytest.raises(ConfigError) as info:
        parse_config(_config({"store_path": "/x", "paths": paths}), {})
    assert info.value.problems == [problem]


def test_a_single_path_and_a_batch_path_that_differ_by_a_final_slash_both_work(
    store: PushStore,
):
    # Paths that differ otherwise may each be written with or without a final slash.
    _, router = _receiver(store, single_path="/push/x/", batch_path="/push/y")
    with _serve(router) as base, httpx.Client() as http:
        single = http.post(f"{base}/push/x", content=b"smsMsgId=m1&status=DELIVRD", headers=FORM)
        batch = http.post(
            f"{base}/push/y/", content=_batch({"smsMsgId": "m2", "status": "X"}), headers=JSON
        )
    assert (single.status_code, batch.status_code) == (200, 200)


def test_config_rejects_an_account_path_that_becomes_an_exporter_route():
    raw = _config({"store_path": "/x", "paths": {"sends": "/{account}"}})
    raw["accounts"][0]["name"] = "metrics"
    with pytest.raises(ConfigError) as info:
        parse_config(raw, {})
    assert info.value.problems == [
        "receiver.paths.sends: /metrics is one of the exporter's own paths"
    ]


def test_pushes_waiting_for_a_slow_disk_hold_no_thread_each_and_are_all_answered(
    store: PushStore,
):
    _, router = _receiver(store)
    router.add("/-/healthy", lambda _r: Response(200, b"OK\n"))
    # Another connection holds the database's write lock: the group commit waits for it,
    # as it would for a disk that stalls.
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    waiting = WORKER_THREADS + 100
    with _serve(router) as url, closing(blocker):
        host, port = httpx.URL(url).host, httpx.URL(url).port
        assert port is not None
        clients = []
        try:
            for i in range(waiting):
                body = f"smsMsgId=slow-{i}&status=DELIVRD".encode()
                client = socket.create_connection((host, port), timeout=60)
                client.sendall(
                    b"POST /push/status-report HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/x-www-form-urlencoded\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                clients.append(client)
            assert httpx.get(f"{url}/-/healthy", timeout=30).status_code == 200
            threads = threading.active_count()
        finally:
            blocker.execute("COMMIT")
        answers = [_status_line(c) for c in clients]
    assert threads < WORKER_THREADS, f"{threads} threads for {waiting} waiting pushes"
    assert answers == [b"HTTP/1.1 200 OK"] * waiting
    assert store.message_count() == waiting


def _status_line(client: socket.socket) -> bytes:
    with closing(client), client.makefile("rb") as answer:
        return answer.readline().rstrip()


def test_pushes_leave_no_garbage_for_the_cycle_collector(store: PushStore):
    # Objects a push leaves in reference cycles wait for the cyclic collector, whose
    # passes over them then stall the server: a push's objects are freed as it ends.
    _, router = _receiver(store)
    with _serve(router) as url:
        client = socket.create_connection((httpx.URL(url).host, httpx.URL(url).port or 80))
        with closing(client), client.makefile("rb") as answers:
            gc.collect()
            gc.disable()
            try:
                for i in range(200):
                    body = f"smsMsgId=gc-{i}&status=DELIVRD".encode()
                    client.sendall(
                        b"POST /push/status-report HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/x-www-form-urlencoded\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                    assert answers.readline().rstrip() == b"HTTP/1.1 200 OK"
                    while answers.readline() != b"\r\n":
                        pass  # the headers; the body is empty
                garbage = gc.collect()  # what only the cycle collector could free
            finally:
                gc.enable()
    assert store.message_count() == 200
    assert garbage < 100, f"{garbage} objects of 200 pushes left in reference cycles"
