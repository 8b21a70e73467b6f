"""The OpenAPI contract is a valid OpenAPI 3 document and the simulator answers by it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml
from conftest import DEMO_AK, DEMO_SK, PROJECT, Simulator
from openapi_spec_validator import validate
from prometheus_client import CollectorRegistry, generate_latest

from exporter.config import ReceiverConfig
from exporter.receiver import Receiver
from exporter.records import DETAILS_PATH, DetailsQuery, SendResult
from exporter.signing import Credentials, sign_request
from exporter.sqlitestore import PushStore
from exporter.timestamps import parse_rfc3339
from exporter.web import Request, Router, WebServer

SPEC_PATH = Path(__file__).resolve().parent.parent / "exporter" / "openapi.yaml"


def _spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


def _json_schema(node: object) -> object:
    """OpenAPI 3.0 schema → JSON Schema: ``nullable: true`` becomes a ``null`` type."""
    if isinstance(node, dict):
        out = {k: _json_schema(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable") and "type" in node:
            out["type"] = [node["type"], "null"]
        return out
    if isinstance(node, list):
        return [_json_schema(v) for v in node]
    return node


def _schema(name: str) -> dict:
    """A component schema, resolvable against the whole document."""
    components = _json_schema(_spec()["components"])
    return {"$ref": f"#/components/schemas/{name}", "components": components}


def _signed_get(sim: Simulator, path: str, params: dict[str, str]) -> httpx.Response:
    request = httpx.Request("GET", f"{sim.url}{path}", params=params)
    headers = sign_request(
        "GET", str(request.url), {}, b"", Credentials(DEMO_AK, DEMO_SK), _now(sim)
    )
    return sim.http.get(str(request.url), headers=headers)


def _now(sim: Simulator) -> datetime:
    return datetime.fromtimestamp(sim.now(), tz=UTC)


def test_the_contract_is_a_valid_openapi_3_document():
    validate(_spec())


def test_send_details_answers_match_the_contract_schema(manual_simulator: Simulator):
    now = manual_simulator.now()
    for result in (None, "success", "failed", "sending"):
        query = DetailsQuery(now - 3600, now, limit=100)
        params = query.params() | ({"send_result": result} if result else {})
        response = _signed_get(manual_simulator, DETAILS_PATH, params)
        assert response.status_code == 200
        body = response.json()
        jsonschema.validate(body, _schema("DetailsPage"))
        assert body["records"], result
        for record in body["records"]:
            assert parse_rfc3339(record["send_time"]) >= now - 3600


def test_errors_match_the_contract_schema(manual_simulator: Simulator):
    now = manual_simulator.now()
    bad_span = DetailsQuery(now - 25 * 3600, now).params()
    response = _signed_get(manual_simulator, DETAILS_PATH, bad_span)
    assert response.status_code == 400
    jsonschema.validate(response.json(), _schema("Error"))
    unsigned = manual_simulator.http.get(f"{manual_simulator.url}{DETAILS_PATH}", params=bad_span)
    assert unsigned.status_code == 401
    jsonschema.validate(unsigned.json(), _schema("Error"))


def test_the_template_list_matches_the_contract_schema(manual_simulator: Simulator):
    path = f"/v2/{PROJECT}/msgsms/templates"
    response = _signed_get(manual_simulator, path, {"limit": "2", "offset": "0"})
    assert response.status_code == 200
    body = response.json()
    assert len(body["results"]) == 2
    for item in body["results"]:
        jsonschema.validate(item, _schema("Template"))


@pytest.fixture
def store_api(tmp_path: Path) -> Iterator[tuple[str, PushStore, CollectorRegistry]]:
    """The exporter's web server with a receiver whose store answers the contract."""
    now = parse_rfc3339("2026-11-26T11:05:00Z")
    with PushStore(tmp_path / "push.db", clock=lambda: now) as store:
        config = ReceiverConfig(store_path=store.path, details_api=True)
        receiver = Receiver(config, store, clock=lambda: now)
        router = Router()
        receiver.add_routes(router)
        server = WebServer(router, "127.0.0.1", 0)
        server.start()
        host, port = server.address
        registry = CollectorRegistry()
        registry.register(receiver.collector())
        try:
            yield f"http://{host}:{port}", store, registry
        finally:
            server.stop()


def test_the_receivers_store_answers_the_contract_over_http(store_api) -> None:
    url, store, registry = store_api
    sends = [
        {
            "message_id": f"m{i:02d}",
            "template_id": "TPL_A" if i % 3 else "TPL_B",
            "send_time": f"2026-11-26T10:{i:02d}:00Z",
            "mobile": "4402000000",
            "segments": 1,
        }
        for i in range(30)
    ]
    assert httpx.post(f"{url}/push/sends", json=sends).status_code == 200
    reports = [{"smsMsgId": f"m{i:02d}", "status": "DELIVRD"} for i in range(0, 30, 2)]
    assert httpx.post(f"{url}/push/status-reports", json={"statusReportList": reports}).is_success
    params = {
        "start_time": "2026-11-26T10:00:00Z",
        "end_time": "2026-11-26T11:00:00Z",
        "template_id": "TPL_A",
        "send_result": "sending",
        "limit": "5",
        "offset": "2",
    }
    response = httpx.get(f"{url}{DETAILS_PATH}", params=params)
    assert response.status_code == 200
    body = response.json()
    jsonschema.validate(body, _schema("DetailsPage"))
    # The same answer the store gives in process, in the contract's form.
    query = DetailsQuery(
        parse_rfc3339("2026-11-26T10:00:00Z"),
        parse_rfc3339("2026-11-26T11:00:00Z"),
        "TPL_A",
        send_result=SendResult.SENDING,
        offset=2,
        limit=5,
    )
    direct = store.query(query)
    assert body["total"] == direct.total == 10
    assert [r["message_id"] for r in body["records"]] == [r.message_id for r in direct.records]
    assert all(r["mobile"] != "4402000000" for r in body["records"])  # masked

    bad = httpx.get(f"{url}{DETAILS_PATH}", params={**params, "end_time": "2026-11-27T11:00:00Z"})
    assert bad.status_code == 400
    jsonschema.validate(bad.json(), _schema("Error"))
    assert bad.json()["error_msg"] == "end_time: the query spans more than 24 hours"
    exposition = generate_latest(registry).decode()
    assert 'msgsms_push_rejected_total{reason="bad_parameter"} 1.0' in exposition
    assert 'msgsms_push_requests_total{code="400",endpoint="details"} 1.0' in exposition


def test_the_receivers_store_refuses_page_numbers_nobody_writes_and_counts_them(
    store_api,
) -> None:
    url, _store, registry = store_api
    window = {"start_time": "2026-11-26T10:00:00Z", "end_time": "2026-11-26T11:00:00Z"}
    for params in ({"offset": "9" * 5000}, {"limit": "\u00b2"}, {"mobile": "4\uff14020000000"}):
        response = httpx.get(f"{url}{DETAILS_PATH}", params={**window, **params})
        assert response.status_code == 400, params
        jsonschema.validate(response.json(), _schema("Error"))
        assert response.json()["error_msg"].startswith(next(iter(params)) + ": ")
    exposition = generate_latest(registry).decode()
    assert 'msgsms_push_rejected_total{reason="bad_parameter"} 3.0' in exposition


def test_the_store_is_not_served_unless_asked(tmp_path: Path) -> None:
    with PushStore(tmp_path / "push.db") as store:
        router = Router()
        Receiver(ReceiverConfig(store_path=store.path), store).add_routes(router)
        request = Request("GET", DETAILS_PATH, {}, {})
        assert router.dispatch(request).status == 404
