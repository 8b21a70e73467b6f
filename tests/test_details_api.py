"""The push store's ``GET /api/v1/send-details`` over HTTP, as clients we did not write call
it: every refusal is the contract's JSON error, odd parameters are located 400s, and pages
walk the window without a record lost or repeated."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import httpx
import jsonschema
import pytest
import yaml
from conftest import Opener

from exporter.config import ReceiverConfig
from exporter.pushstore import ReportStore
from exporter.receiver import Receiver
from exporter.records import DETAILS_PATH
from exporter.timestamps import format_rfc3339, parse_rfc3339
from exporter.web import Router, WebServer
from exporter.webconfig import parse_web_config

SPEC = Path(__file__).resolve().parent.parent / "exporter" / "openapi.yaml"
NOW = parse_rfc3339("2026-11-26T11:05:00Z")
WINDOW = {"start_time": "2026-11-26T10:00:00Z", "end_time": "2026-11-26T11:00:00Z"}
PASSWORD = "details-pass-7c2e"
AUTH = ("prom", PASSWORD)


def _error_schema() -> dict[str, object]:
    schema: dict[str, object] = yaml.safe_load(SPEC.read_text())["components"]["schemas"]["Error"]
    return schema


@dataclass
class Api:
    """An exporter web server with basic auth and a receiver serving its store."""

    url: str
    store: ReportStore
    http: httpx.Client

    def get(self, path: str = DETAILS_PATH, **params: str | list[str]) -> httpx.Response:
        return self.http.get(f"{self.url}{path}", params=params, auth=AUTH)


@pytest.fixture
def api(open_store: Opener) -> Iterator[Api]:
    """On SQLite and on PostgreSQL: both answer the contract the same."""
    web = parse_web_config(
        {"basic_auth_users": {"prom": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()}}
    )
    with closing(open_store(clock=lambda: NOW)) as store:
        config = ReceiverConfig(store_path="push.db", details_api=True)
        receiver = Receiver(config, store, clock=lambda: NOW)
        router = Router()
        receiver.add_routes(router)
        server = WebServer(router, "127.0.0.1", 0, auth=web.auth())
        server.start()
        host, port = server.address
        try:
            with httpx.Client(timeout=30) as http:
                yield Api(f"http://{host}:{port}", store, http)
        finally:
            server.stop()


def _contract_error(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert len(response.headers["x-request-id"]) == 32, "every answer names itself"
    body: dict[str, str] = response.json()
    jsonschema.validate(body, _error_schema())
    assert body["error_code"] == code
    return body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_a_method_other_than_get_is_a_json_405_naming_get(api: Api, method: str) -> None:
    response = api.http.request(method, f"{api.url}{DETAILS_PATH}", params=WINDOW, auth=AUTH)
    body = _contract_error(response, 405, "MSGSMS.0405")
    assert response.headers["allow"] == "GET, HEAD"
    assert "GET" in body["error_msg"]


@pytest.mark.parametrize("path", [f"{DETAILS_PATH}/", "/api/v1/send-detail", "/api/v2/x"])
def test_an_unknown_path_under_api_is_a_json_404(api: Api, path: str) -> None:
    _contract_error(api.get(path, **WINDOW), 404, "APIG.0101")


def test_missing_credentials_are_a_json_401_with_the_basic_challenge(api: Api) -> None:
    response = httpx.get(f"{api.url}{DETAILS_PATH}", params=WINDOW)
    _contract_error(response, 401, "APIG.0301")
    assert response.headers["www-authenticate"].startswith("Basic ")
    assert api.get(**WINDOW).status_code == 200


def test_head_answers_like_get_without_a_body(api: Api) -> None:
    response = api.http.head(f"{api.url}{DETAILS_PATH}", params=WINDOW, auth=AUTH)
    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["content-type"] == "application/json"


def test_a_store_that_cannot_answer_is_a_json_503_saying_when_to_retry(api: Api) -> None:
    api.store.close()
    response = api.get(**WINDOW)
    _contract_error(response, 503, "MSGSMS.0503")
    assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"template_id": "a\x00b"}, "MSGSMS.0400"),
        ({"template_id": "a\nb"}, "MSGSMS.0400"),
        ({"template_id": ""}, "MSGSMS.0400"),
        ({"limit": ["10", "10"]}, "MSGSMS.0400"),
        ({"offset": ""}, "MSGSMS.0414"),
        ({"limit": "0"}, "MSGSMS.0414"),
        ({"limit": "101"}, "MSGSMS.0414"),
        ({"offset": "1000000001"}, "MSGSMS.0414"),
        ({"_": "1700000000"}, "MSGSMS.0400"),
        ({"end_time": "2026-11-27T10:00:00.001Z"}, "MSGSMS.0412"),
        (
            {"start_time": "2026-09-27T11:04:59.999Z", "end_time": "2026-09-27T12:00:00Z"},
            "MSGSMS.0413",
        ),
    ],
)
def test_an_odd_parameter_is_a_located_400_never_a_store_error(
    api: Api, params: dict[str, str | list[str]], code: str
) -> None:
    body = _contract_error(api.get(**{**WINDOW, **params}), 400, code)
    assert body["error_msg"].split(":")[0] in params
    assert api.get(**WINDOW).status_code == 200, "the store is not marked down"


@pytest.mark.parametrize(
    "window",
    [
        {"start_time": "2026-11-26T10:00:00Z", "end_time": "2026-11-27T10:00:00Z"},  # 24 h
        {"start_time": "2026-09-27T11:05:00Z", "end_time": "2026-09-27T12:00:00Z"},  # 60 d
        {"start_time": "2026-11-26T10:00:00+08:00", "end_time": "2026-11-26T11:00:00+08:00"},
    ],
)
def test_windows_at_the_limits_or_with_an_offset_are_answered(
    api: Api, window: dict[str, str]
) -> None:
    response = api.get(**window)
    assert response.status_code == 200, response.text
    assert len(response.headers["x-request-id"]) == 32
    # Sent unescaped, as a hand-written URL does: the "+" arrives as a space.
    query = "&".join(f"{k}={v}" for k, v in window.items())
    unescaped = api.http.get(f"{api.url}{DETAILS_PATH}?{query}", auth=AUTH)
    assert unescaped.json() == response.json()


def test_pages_walk_the_window_once_in_order_past_the_end(api: Api) -> None:
    sends = [
        {
            "message_id": f"m{i:03d}",
            "template_id": "TPL_A",
            "send_time": format_rfc3339(NOW - 3000 + i // 3),  # three per millisecond
        }
        for i in range(230)
    ]
    posted = api.http.post(f"{api.url}/push/sends", json=sends, auth=AUTH)
    assert posted.json() == {"registered": 230, "duplicates": 0}
    window = {"start_time": format_rfc3339(NOW - 3600), "end_time": format_rfc3339(NOW)}
    seen: list[str] = []
    for offset in range(0, 260, 7):
        page = api.get(**window, offset=str(offset), limit="7").json()
        assert (page["total"], page["offset"], page["limit"]) == (230, offset, 7)
        seen += [r["message_id"] for r in page["records"]]
    assert seen == [s["message_id"] for s in sends]
