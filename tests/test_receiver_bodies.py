"""Push bodies as real clients send them, over HTTP: charsets, byte order marks, content
codings, trailing slashes and the signer's non-ASCII headers. Each is stored once or
refused with a located message and a count."""

from __future__ import annotations

import gzip
import json
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest

from exporter.config import ReceiverConfig
from exporter.receiver import Receiver
from exporter.records import DetailsQuery
from exporter.signing import Credentials
from exporter.sqlitestore import PushStore
from exporter.web import Router, WebServer

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


@dataclass
class Push:
    """A receiver served on loopback, its store and an HTTP client."""

    url: str
    receiver: Receiver
    store: PushStore
    http: httpx.Client

    def post(self, path: str, body: bytes, content_type: str, **headers: str) -> httpx.Response:
        sent = {
            "Content-Type": content_type,
            **{k.replace("_", "-"): v for k, v in headers.items()},
        }
        return self.http.post(f"{self.url}{path}", content=body, headers=sent)

    def stored(self) -> dict[str, str]:
        """Each stored message's status description, by message id."""
        records = self.store.query(DetailsQuery(0, 4e9, limit=100)).records
        return {r.message_id: r.status_desc for r in records}


def _serve(tmp_path: Path, **overrides: object) -> Iterator[Push]:
    with PushStore(tmp_path / "push.db") as store:
        config = replace(ReceiverConfig(store_path=store.path), **overrides)  # type: ignore[arg-type]
        receiver = Receiver(config, store)
        router = Router()
        receiver.add_routes(router)
        server = WebServer(router, "127.0.0.1", 0)
        server.start()
        host, port = server.address
        try:
            with httpx.Client(timeout=30) as http:
                yield Push(f"http://{host}:{port}", receiver, store, http)
        finally:
            server.stop()


@pytest.fixture
def push(tmp_path: Path) -> Iterator[Push]:
    yield from _serve(tmp_path)


def _updated() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))


def _form(message_id: str, desc: bytes = b"") -> bytes:
    body = f"smsMsgId={message_id}&status=E200&updateTime={_updated()}".encode()
    return body + (b"&statusDesc=" + desc if desc else b"")


def _batch(message_id: str) -> bytes:
    item = {"smsMsgId": message_id, "status": "DELIVRD", "updateTime": _updated()}
    return json.dumps({"statusReportList": [item]}).encode()


def test_a_json_batch_with_a_byte_order_mark_is_stored(push: Push) -> None:
    answer = push.post("/push/status-reports", b"\xef\xbb\xbf" + _batch("bom-1"), JSON)
    assert (answer.status_code, answer.content) == (200, b"")
    assert list(push.stored()) == ["bom-1"]


def test_form_text_in_raw_utf8_or_a_declared_charset_is_stored_as_text(push: Push) -> None:
    desc = "用户关机"
    raw = push.post("/push/status-report", _form("raw-1", desc.encode()), FORM)
    gbk = "%".join(f"{b:02X}" for b in desc.encode("gbk"))
    declared = push.post(
        "/push/status-report", _form("gbk-1", b"%" + gbk.encode()), f"{FORM}; charset=GBK"
    )
    utf8 = push.post("/push/status-report", _form("utf8-1", desc.encode()), f"{FORM};charset=utf-8")
    assert [raw.status_code, declared.status_code, utf8.status_code] == [200, 200, 200]
    assert push.stored() == {"raw-1": desc, "gbk-1": desc, "utf8-1": desc}


def test_form_text_not_in_its_charset_is_refused_naming_the_field(push: Push) -> None:
    gbk = b"%D3%C3%BB%A7"  # GBK sent without saying so
    answer = push.post("/push/status-report", _form("gbk-2", gbk), FORM)
    assert answer.status_code == 400
    assert answer.json()["reason"] == "bad_encoding"
    assert answer.json()["message"].startswith("statusDesc's percent-escapes: not utf-8 text")
    unknown = push.post("/push/status-report", _form("x-1"), f"{FORM}; charset=klingon")
    assert (unknown.status_code, unknown.json()["reason"]) == (415, "content_type")
    assert push.receiver.stats.rejected == {"bad_encoding": 1, "content_type": 1}
    assert push.stored() == {}


def test_a_form_body_with_empty_parts_or_a_trailing_ampersand_is_stored(push: Push) -> None:
    body = _form("amp-1") + b"&&extend=&total&"
    assert push.post("/push/status-report", body, FORM).status_code == 200
    assert list(push.stored()) == ["amp-1"]


def test_gzip_and_deflate_bodies_are_decompressed(push: Push) -> None:
    single = push.post(
        "/push/status-report", gzip.compress(_form("gz-1")), FORM, content_encoding="gzip"
    )
    batch = push.post(
        "/push/status-reports", zlib.compress(_batch("df-1")), JSON, content_encoding="deflate"
    )
    assert (single.status_code, batch.status_code) == (200, 200)
    assert sorted(push.stored()) == ["df-1", "gz-1"]


@pytest.mark.parametrize(
    ("coding", "body", "status", "reason"),
    [
        ("br", b"\x0b\x02\x80", 415, "content_encoding"),
        ("gzip", b"not gzip", 400, "bad_encoding"),
        ("gzip", gzip.compress(b"smsMsgId=t-1&status=DELIVRD")[:-6], 400, "bad_encoding"),
        (
            "gzip",
            gzip.compress(b"smsMsgId=b-1&status=DELIVRD&x=" + b"0" * 2_000_000),
            413,
            "body_too_large",
        ),
    ],
    ids=["brotli", "garbage", "truncated", "bomb"],
)
def test_a_body_in_an_unsupported_or_broken_coding_is_refused_and_counted(
    push: Push, coding: str, body: bytes, status: int, reason: str
) -> None:
    answer = push.post("/push/status-report", body, FORM, content_encoding=coding)
    assert (answer.status_code, answer.json()["reason"]) == (status, reason)
    assert push.receiver.stats.rejected == {reason: 1}
    assert push.stored() == {}


def test_push_paths_are_served_with_or_without_a_trailing_slash(push: Push) -> None:
    assert push.post("/push/status-report/", _form("slash-1"), FORM).status_code == 200
    assert push.post("/push/status-reports/", _batch("slash-2"), JSON).status_code == 200
    assert sorted(push.stored()) == ["slash-1", "slash-2"]


def test_a_push_path_given_with_a_trailing_slash_is_served_without_it(tmp_path: Path) -> None:
    for push in _serve(tmp_path, single_path="/hooks/report/"):
        assert push.post("/hooks/report", _form("slash-3"), FORM).status_code == 200
        assert push.post("/hooks/report/", _form("slash-4"), FORM).status_code == 200
        assert sorted(push.stored()) == ["slash-3", "slash-4"]


def test_a_header_with_non_ascii_text_signed_by_huaweis_signer_verifies(tmp_path: Path) -> None:
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.sdk_request import SdkRequest
    from huaweicloudsdkcore.signer.signer import Signer

    keys = (Credentials("AKEXAMPLE", "SKEXAMPLE"),)
    for push in _serve(tmp_path, signing_keys=keys):
        host = push.url.removeprefix("http://")
        body = _form("sig-1")
        request = SdkRequest(
            method="POST",
            schema="http",
            host=host,
            resource_path="/push/status-report",
            uri="/push/status-report",
            query_params=[],
            header_params={"Content-Type": FORM, "X-Note": "短信回执"},
            body=body,
        )
        Signer(BasicCredentials("AKEXAMPLE", "SKEXAMPLE")).sign(request)
        # The signer sends each header value's UTF-8 bytes (as Latin-1 text).
        headers = {k: v.encode("latin-1") for k, v in request.header_params.items()}
        answer = push.http.post(f"{push.url}/push/status-report", content=body, headers=headers)
        assert (answer.status_code, answer.content) == (200, b"")
        assert list(push.stored()) == ["sig-1"]


@pytest.mark.parametrize("path", ["/push/status-reports", "/push/sends"])
def test_json_nested_too_deeply_is_a_counted_400_not_an_internal_error(
    push: Push, path: str
) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    answer = push.post(path, deep, JSON)
    assert answer.status_code == 400
    assert answer.json() == {"reason": "bad_json", "message": "body is JSON nested too deeply"}
    assert push.receiver.stats.rejected == {"bad_json": 1}


@pytest.mark.parametrize("charset", ["utf-16", "utf-7", "punycode", "base64", "rot13"])
def test_a_charset_that_does_not_read_ascii_as_ascii_is_refused_with_415(
    push: Push, charset: str
) -> None:
    answer = push.post("/push/status-report", _form("cs-1"), f"{FORM}; charset={charset}")
    assert (answer.status_code, answer.json()["reason"]) == (415, "content_type")
    assert push.receiver.stats.rejected == {"content_type": 1}


def test_a_body_its_declared_codec_cannot_read_is_a_400_not_an_internal_error(
    push: Push,
) -> None:
    # IDNA reads ASCII as ASCII but refuses most text with a UnicodeError of its own.
    answer = push.post("/push/status-report", b"smsMsgId=\xff" + b"a" * 70, f"{FORM}; charset=idna")
    assert (answer.status_code, answer.json()["reason"]) == (400, "bad_encoding")
    assert push.receiver.stats.rejected == {"bad_encoding": 1}


@pytest.mark.parametrize("path", ["/push/status-reports", "/push/sends"])
def test_an_empty_json_body_is_told_it_is_empty(push: Push, path: str) -> None:
    answer = push.post(path, b"", JSON)
    assert answer.status_code == 400
    assert answer.json() == {"reason": "bad_json", "message": "the body is empty: expected JSON"}


def test_a_report_sent_to_the_other_push_path_is_told_where_it_goes(push: Push) -> None:
    batch = push.post("/push/status-report", _batch("wrong-1"), JSON)
    single = push.post("/push/status-reports", _form("wrong-2"), FORM)
    assert (batch.status_code, single.status_code) == (415, 415)
    assert batch.json()["message"] == (
        f"Content-Type must be {FORM} (it is {JSON}; {JSON} goes to /push/status-reports)"
    )
    assert single.json()["message"] == (
        f"Content-Type must be {JSON} (it is {FORM}; {FORM} goes to /push/status-report)"
    )


def test_a_form_body_ending_in_a_line_end_is_stored_under_the_bare_id(push: Push) -> None:
    body = b"status=DELIVRD&updateTime=" + _updated().encode() + b"&smsMsgId=nl-1\r\n"
    assert push.post("/push/status-report", body, FORM).status_code == 200
    assert list(push.stored()) == ["nl-1"]


@pytest.mark.parametrize("escaped", [b"nl-2%0A", b"nl-2%0D%0A"])
def test_an_id_with_an_escaped_line_end_is_refused(push: Push, escaped: bytes) -> None:
    body = b"status=DELIVRD&smsMsgId=" + escaped
    answer = push.post("/push/status-report", body, FORM)
    assert (answer.status_code, answer.json()["reason"]) == (400, "bad_field")
    assert push.stored() == {}


@pytest.mark.parametrize("method", ["GET", "PUT", "OPTIONS"])
def test_another_method_on_a_push_path_is_a_json_405_allowing_post(push: Push, method: str) -> None:
    answer = push.http.request(method, f"{push.url}/push/status-report/")
    assert (answer.status_code, answer.headers["allow"]) == (405, "POST")
    assert answer.json()["reason"] == "method_not_allowed"
    head = push.http.head(f"{push.url}/push/status-reports")
    assert (head.status_code, head.headers["allow"], head.content) == (405, "POST", b"")


def test_a_field_we_do_not_read_may_repeat_and_one_we_read_may_repeat_unchanged(
    push: Push,
) -> None:
    repeated = b"&orgCode=000&orgCode=001&to=1&to=2&smsMsgId=rep-1&status=E200"
    assert push.post("/push/status-report", _form("rep-1") + repeated, FORM).status_code == 200
    conflicting = push.post("/push/status-report", _form("rep-2") + b"&status=E201", FORM)
    assert (conflicting.status_code, conflicting.json()["reason"]) == (400, "bad_field")
    assert "status" in conflicting.json()["message"]
    assert list(push.stored()) == ["rep-1"]


def test_report_field_names_are_read_whatever_their_case(push: Push) -> None:
    form = f"SMSMSGID=case-1&Status=DELIVRD&UPDATETIME={_updated()}&statusdesc=ok".encode()
    assert push.post("/push/status-report", form, FORM).status_code == 200
    item = {"SmsMsgId": "case-2", "STATUS": "E200", "StatusDesc": "busy"}
    batch = json.dumps({"StatusReportList": [item]}).encode()
    assert push.post("/push/status-reports", batch, JSON).status_code == 200
    assert push.stored() == {"case-1": "ok", "case-2": "busy"}


def test_an_update_time_whose_plus_was_sent_unescaped_is_read(push: Push) -> None:
    local = time.strftime("%Y-%m-%dT%H:%M:%S+08:00", time.gmtime(time.time() + 8 * 3600 - 60))
    form = f"smsMsgId=plus-1&status=DELIVRD&updateTime={local}".encode()  # "+" decodes to " "
    assert push.post("/push/status-report", form, FORM).status_code == 200
    (record,) = push.store.query(DetailsQuery(0, 4e9, limit=100)).records
    assert record.receive_time is not None
    assert abs(record.receive_time - (time.time() - 60)) < 5


@pytest.mark.parametrize("path", ["//push/status-report", "/push//status-report/"])
def test_a_signed_push_to_a_path_with_a_doubled_slash_is_stored_behind_basic_auth(
    tmp_path: Path, path: str
) -> None:
    """A callback URL built as ``https://host/`` + ``/push/...``: routed as nginx merges
    slashes, still exempt from basic auth, and verified against the path as signed."""
    import bcrypt
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.sdk_request import SdkRequest
    from huaweicloudsdkcore.signer.signer import Signer

    from exporter.webconfig import parse_web_config

    hashed = bcrypt.hashpw(b"pass", bcrypt.gensalt(4)).decode()
    web = parse_web_config({"basic_auth_users": {"prom": hashed}})
    with PushStore(tmp_path / "push.db") as store:
        keys = (Credentials("AKEXAMPLE", "SKEXAMPLE"),)
        config = ReceiverConfig(store_path=store.path, signing_keys=keys)
        receiver = Receiver(config, store)
        router = Router()
        receiver.add_routes(router)
        server = WebServer(
            router, "127.0.0.1", 0, auth=web.auth(), open_paths=receiver.push_paths()
        )
        server.start()
        host = "{}:{}".format(*server.address)
        try:
            body = _form("double-1")
            request = SdkRequest(
                method="POST",
                schema="http",
                host=host,
                resource_path=path,
                uri=path,
                query_params=[],
                header_params={"Content-Type": FORM},
                body=body,
            )
            Signer(BasicCredentials("AKEXAMPLE", "SKEXAMPLE")).sign(request)
            answer = httpx.post(
                f"http://{host}{path}", content=body, headers=request.header_params, timeout=30
            )
            assert (answer.status_code, answer.content) == (200, b""), answer.text
            unsigned = httpx.get(f"http://{host}//metrics", timeout=30)
            assert unsigned.status_code == 401, "other paths stay behind basic auth"
            records = store.query(DetailsQuery(0, 4e9, limit=100)).records
            assert [r.message_id for r in records] == ["double-1"]
        finally:
            server.stop()


def test_the_longest_rfc_3339_times_are_read(push: Push) -> None:
    at = time.gmtime(time.time() + 8 * 3600 - 60)
    update = time.strftime("%Y-%m-%dT%H:%M:%S.123456789%%2B08:00", at)
    form = f"smsMsgId=long-time-1&status=DELIVRD&updateTime={update}".encode()
    assert push.post("/push/status-report", form, FORM).status_code == 200
    send = {
        "message_id": "long-time-2",
        "template_id": "T",
        "send_time": update.replace("%2B", "+"),
    }
    sends = push.post("/push/sends", json.dumps([send]).encode(), JSON)
    assert sends.json() == {"registered": 1, "duplicates": 0}
    assert sorted(push.stored()) == ["long-time-1", "long-time-2"]


def test_an_offset_written_without_a_colon_is_read(push: Push) -> None:
    # ISO 8601's basic offset, as Java's "Z" pattern writes it (2026-11-26T18:00:00+0800).
    at = time.time() - 60
    update = time.strftime("%Y-%m-%dT%H:%M:%S%%2B0800", time.gmtime(at + 8 * 3600))
    form = f"smsMsgId=basic-zone-1&status=DELIVRD&updateTime={update}".encode()
    assert push.post("/push/status-report", form, FORM).status_code == 200
    sent = time.strftime("%Y-%m-%dT%H:%M:%S-0500", time.gmtime(at - 5 * 3600))
    send = {"message_id": "basic-zone-2", "template_id": "T", "send_time": sent}
    sends = push.post("/push/sends", json.dumps([send]).encode(), JSON)
    assert sends.json() == {"registered": 1, "duplicates": 0}
    records = push.store.query(DetailsQuery(0, 4e9, limit=10)).records
    assert {r.message_id: r.send_time for r in records} == {
        "basic-zone-1": float(int(at)),
        "basic-zone-2": float(int(at)),
    }


def test_a_body_without_content_type_is_read_as_its_paths_format(push: Push) -> None:
    single = push.http.post(f"{push.url}/push/status-report", content=_form("untyped-1"))
    batch = push.http.post(f"{push.url}/push/status-reports", content=_batch("untyped-2"))
    assert "content-type" not in single.request.headers
    assert (single.status_code, batch.status_code) == (200, 200)
    assert sorted(push.stored()) == ["untyped-1", "untyped-2"]


def test_json_labelled_text_plain_is_read_as_json_and_other_labels_as_written(
    push: Push,
) -> None:
    plain = push.post("/push/status-reports", _batch("plain-1"), "text/plain; charset=UTF-8")
    cased = push.post(
        "/push/status-report",
        _form("cased-1"),
        'Application/X-WWW-Form-Urlencoded; Charset="UTF-8"',
    )
    not_json = push.post("/push/status-reports", _form("plain-2"), "text/plain")
    form_as_plain = push.post("/push/status-report", _form("plain-3"), "text/plain")
    assert (plain.status_code, cased.status_code) == (200, 200)
    assert (not_json.status_code, not_json.json()["reason"]) == (400, "bad_json")
    assert (form_as_plain.status_code, form_as_plain.json()["reason"]) == (415, "content_type")
    assert sorted(push.stored()) == ["cased-1", "plain-1"]
    assert push.receiver.stats.rejected == {"bad_json": 1, "content_type": 1}


def test_a_form_separated_by_semicolons_is_refused_saying_so(push: Push) -> None:
    body = f"smsMsgId=semi-1;status=DELIVRD;updateTime={_updated()}".encode()
    answer = push.post("/push/status-report", body, FORM)
    assert (answer.status_code, answer.json()) == (
        400,
        {
            "reason": "bad_field",
            "message": (
                "smsMsgId is longer than 50 characters:"
                " fields are separated by '&', not ';' as in this body"
            ),
        },
    )
    short = push.post("/push/status-report", b"smsMsgId=semi-2;status=DELIVRD", FORM)
    assert short.json()["message"] == (
        "status is required: fields are separated by '&', not ';' as in this body"
    )
    assert push.stored() == {}
    assert push.receiver.stats.rejected == {"bad_field": 1, "missing_field": 1}


def _send_response(message_id: str, **extra: str) -> bytes:
    sent = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    result = [{"smsMsgId": message_id, "createTime": sent, "status": "000000"}]
    return json.dumps({"code": "000000", "result": result, **extra}).encode()


def _templates(push: Push) -> dict[str, str]:
    records = push.store.query(DetailsQuery(0, 4e9, limit=100)).records
    return {r.message_id: r.template_id for r in records}


def test_a_registrations_template_named_twice_differently_is_refused_not_guessed(
    push: Push,
) -> None:
    sends = f"{push.url}/push/sends"
    twice = push.http.post(
        f"{sends}?templateId=tplA&templateId=tplB",
        content=_send_response("r1"),
        headers={"Content-Type": JSON},
    )
    assert (twice.status_code, twice.json()) == (
        400,
        {
            "reason": "bad_field",
            "message": "templateId is given more than once, differently: 'tplA', 'tplB'",
        },
    )
    both = push.http.post(
        f"{sends}?templateId=tplA",
        content=_send_response("r2", templateId="tplB"),
        headers={"Content-Type": JSON},
    )
    assert both.json() == {
        "reason": "bad_field",
        "message": "templateId differs between the query and the body: 'tplA', 'tplB'",
    }
    assert push.receiver.stats.rejected == {"bad_field": 2}
    # The same value twice, a name in another case, or the body alone are read as meant.
    for query, message_id, body_extra in (
        ("templateId=tplA&template_id=tplA", "r3", {}),
        ("TEMPLATEID=tplA", "r4", {}),
        ("templateId=tplA", "r5", {"templateId": "tplA"}),
        ("", "r6", {"templateId": "tplA"}),
    ):
        answer = push.http.post(
            f"{sends}?{query}",
            content=_send_response(message_id, **body_extra),
            headers={"Content-Type": JSON},
        )
        assert answer.json() == {"registered": 1, "duplicates": 0}, query
    assert _templates(push) == {f"r{n}": "tplA" for n in (3, 4, 5, 6)}
