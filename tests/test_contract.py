"""The OpenAPI contract is a valid OpenAPI 3 document and the simulator answers by it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import jsonschema
import yaml
from conftest import DEMO_AK, DEMO_SK, PROJECT, Simulator
from openapi_spec_validator import validate

from exporter.records import DETAILS_PATH, DetailsQuery
from exporter.signing import Credentials, sign_request
from exporter.timestamps import parse_rfc3339

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
