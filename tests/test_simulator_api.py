"""The simulator's HTTP surface, in process through ``SimulatorApp.handle`` (no sockets)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest

from exporter.records import parse_page
from exporter.signing import Credentials as SigningCredentials
from exporter.signing import sign_request
from exporter.simulator.api import QueryLimits
from exporter.simulator.app import SimulatorApp
from exporter.simulator.clock import ManualClock
from exporter.simulator.gate import Credentials
from exporter.simulator.scenario import load_scenario
from exporter.simulator.server import Request, Response
from exporter.simulator.store import MessageStore
from exporter.simulator.traffic import holds_for_hour
from exporter.timestamps import format_rfc3339, parse_rfc3339

NOW = parse_rfc3339("2026-11-26T12:00:00Z")
HOST = "127.0.0.1:9171"
PROJECT = "0123456789abcdef0123456789abcdef"
TOKEN = {"X-Auth-Token": "demo-token"}
WINDOW = {"start_time": "2026-11-26T11:00:00Z", "end_time": "2026-11-26T12:00:00Z"}


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def app(fake_time: FakeTime) -> SimulatorApp:
    store = MessageStore(load_scenario(), 3, round((NOW - 7200) * 1000))
    return SimulatorApp(
        store,
        ManualClock(NOW),
        Credentials(),
        QueryLimits(),
        rate_limit=5,
        seed=3,
        monotonic=fake_time.monotonic,
        sleep=fake_time.sleep,
    )


def call(
    app: SimulatorApp,
    path: str,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    body: Any = None,
) -> Response:
    raw = path + ("?" + urlencode(params) if params else "")
    data = b"" if body is None else json.dumps(body).encode()
    return app.handle(Request(method, raw, {"Host": HOST, **(headers or {})}, data))


def body_of(response: Response) -> Any:
    return json.loads(response.body)


def details(app: SimulatorApp, **params: Any) -> Response:
    return call(app, "/api/v1/send-details", {**WINDOW, **params}, TOKEN)


# -- the contract -----------------------------------------------------------------


def test_send_details_serves_the_contract_wire_format(app: SimulatorApp) -> None:
    response = details(app, limit=5, offset=2)
    assert response.status == 200
    body = body_of(response)
    assert (body["offset"], body["limit"], len(body["records"])) == (2, 5, 5)
    page = parse_page(body)
    assert page.rejected == []
    assert page.total == body["total"] > 1000


@pytest.mark.parametrize(
    ("params", "code", "message"),
    [
        (
            {"start_time": "yesterday"},
            "MSGSMS.0410",
            "start_time: not an RFC 3339 time (e.g. 2026-11-26T10:00:00Z): 'yesterday'",
        ),
        ({"end_time": "2026-11-26T10:00:00Z"}, "MSGSMS.0411", "end_time: must be after start_time"),
        (
            {"start_time": "2026-11-25T11:00:00Z"},
            "MSGSMS.0412",
            "end_time: the query spans more than 24 hours",
        ),
        (
            {"start_time": "2026-09-01T00:00:00Z", "end_time": "2026-09-01T01:00:00Z"},
            "MSGSMS.0413",
            "start_time: older than 60 days before now",
        ),
        ({"limit": "101"}, "MSGSMS.0414", "limit: expected an integer in [1, 100]"),
        ({"limit": "0"}, "MSGSMS.0414", "limit: expected an integer in [1, 100]"),
        ({"offset": "-1"}, "MSGSMS.0414", "offset: expected an integer in [0, 1000000000]"),
        (
            {"mobile": "+447700900000"},
            "MSGSMS.0415",
            "mobile: expected digits with the country code, no '+'",
        ),
        (
            {"send_result": "delivered"},
            "MSGSMS.0416",
            "send_result: expected success, failed or sending",
        ),
        ({"page": "2"}, "MSGSMS.0400", "page: unknown parameter"),
    ],
)
def test_each_violated_limit_is_400_with_its_own_code_naming_the_parameter(
    app: SimulatorApp, params: dict[str, str], code: str, message: str
) -> None:
    response = details(app, **params)
    assert response.status == 400
    assert body_of(response) == {"error_code": code, "error_msg": message}
    assert len(response.headers["X-Request-Id"]) == 32


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("offset", "9" * 5000),  # int() refuses over 4300 digits
        ("limit", "9" * 5000),
        ("offset", "\u00b2"),  # superscript two: str.isdigit() yet not int()
        ("offset", "\u0663"),  # Arabic-Indic three
        ("limit", "000000000000000000005"),
    ],
)
def test_page_numbers_nobody_writes_are_400_not_500(
    app: SimulatorApp, name: str, value: str
) -> None:
    response = details(app, **{name: value})
    expected = "limit: expected an integer in [1, 100]"
    if name == "offset":
        expected = "offset: expected an integer in [0, 1000000000]"
    if value.endswith("5"):
        assert response.status == 200 and body_of(response)["limit"] == 5
    else:
        assert (response.status, body_of(response)) == (
            400,
            {"error_code": "MSGSMS.0414", "error_msg": expected},
        )


@pytest.mark.parametrize(
    ("params", "code", "name"),
    [
        ({"start_time": "2026-11-26T11:00:00+99:99"}, "MSGSMS.0410", "start_time"),
        ({"start_time": "\u0662026-11-26T11:00:00Z"}, "MSGSMS.0410", "start_time"),
        ({"end_time": "2026-13-26T12:00:00Z"}, "MSGSMS.0410", "end_time"),
        ({"mobile": "4\uff14020000000"}, "MSGSMS.0415", "mobile"),  # a full-width digit
        # "$" matches before a final newline: neither is a time or a number with it.
        ({"start_time": "2026-11-26T11:00:00Z\n"}, "MSGSMS.0410", "start_time"),
        ({"end_time": "2026-11-26T12:00:00Z\n"}, "MSGSMS.0410", "end_time"),
        ({"mobile": "447700900000\n"}, "MSGSMS.0415", "mobile"),
        (
            {"start_time": "9999-12-31T22:00:00-23:59", "end_time": "9999-12-31T23:59:59-23:59"},
            "MSGSMS.0410",
            "start_time",
        ),
    ],
)
def test_impossible_times_and_foreign_digits_are_refused_in_the_contracts_words(
    app: SimulatorApp, params: dict[str, str], code: str, name: str
) -> None:
    response = details(app, **params)
    body = body_of(response)
    assert (response.status, body["error_code"]) == (400, code)
    assert body["error_msg"].startswith(f"{name}: ")
    assert "timedelta" not in body["error_msg"] and "isoformat" not in body["error_msg"]


@pytest.mark.parametrize(
    ("name", "shown"),
    [("a" * 3000, "a" * 40 + "..."), ("", "(a parameter without a name)")],
)
def test_an_unknown_parameter_is_named_briefly_even_when_long_or_blank(
    app: SimulatorApp, name: str, shown: str
) -> None:
    response = details(app, **{name: "1"})
    assert (response.status, body_of(response)) == (
        400,
        {"error_code": "MSGSMS.0400", "error_msg": f"{shown}: unknown parameter"},
    )


def test_a_huge_offset_on_the_template_list_is_invalid_parameter_not_500(
    app: SimulatorApp,
) -> None:
    for params in ({"offset": "9" * 5000}, {"limit": "\u00b2"}, {"region": ["cn", "intl"]}):
        raw = f"/v2/{PROJECT}/msgsms/templates?" + urlencode(params, doseq=True)
        response = app.handle(Request("GET", raw, {"Host": HOST, **TOKEN}, b""))
        body = body_of(response)
        assert (response.status, body["error_code"]) == (400, "MSGSMS.0002"), params
        assert body["error_msg"] == "Invalid Parameter."


@pytest.mark.parametrize("method", ["PUT", "PATCH", "OPTIONS", "POST", "DELETE"])
def test_a_wrong_method_on_an_api_is_405_naming_the_allowed_one(
    app: SimulatorApp, method: str
) -> None:
    for path in ("/api/v1/send-details", f"/v2/{PROJECT}/msgsms/templates"):
        response = call(app, path, WINDOW, TOKEN, method=method)
        assert response.status == 405, (method, path)
        assert body_of(response)["error_code"] == "MSGSMS.0405"
        assert response.headers["Allow"] == "GET, HEAD"


def test_head_is_answered_like_get(app: SimulatorApp) -> None:
    response = call(app, "/api/v1/send-details", WINDOW, TOKEN, method="HEAD")
    assert response.status == 200


def test_missing_time_range_is_400(app: SimulatorApp) -> None:
    response = call(app, "/api/v1/send-details", {"end_time": WINDOW["end_time"]}, TOKEN)
    assert body_of(response)["error_msg"] == (
        "start_time: required (RFC 3339, e.g. 2026-11-26T10:00:00Z)"
    )


def test_query_limits_are_configurable(app: SimulatorApp) -> None:
    app.limits = QueryLimits(max_span_seconds=600, lookback_seconds=7 * 86400, max_limit=500)
    assert body_of(details(app, limit=500))["error_msg"] == (
        "end_time: the query spans more than 10 minutes"
    )
    assert details(app, start_time="2026-11-26T11:55:00Z", limit=500).status == 200
    old = {"start_time": "2026-11-01T00:00:00Z", "end_time": "2026-11-01T00:05:00Z"}
    assert body_of(details(app, **old))["error_msg"] == "start_time: older than 7 days before now"


# -- auth -------------------------------------------------------------------------


def signed(
    path: str, params: dict[str, str], secret: str = "demo-secret-key", when: float = NOW
) -> tuple[str, dict[str, str]]:
    raw = path + "?" + urlencode(params)
    headers = sign_request(
        "GET",
        f"http://{HOST}{raw}",
        {"Content-Type": "application/json"},
        b"",
        SigningCredentials("demo-access-key", secret),
        datetime.fromtimestamp(when, tz=UTC),
    )
    return raw, headers


def test_a_request_signed_by_the_exporter_signer_is_accepted(app: SimulatorApp) -> None:
    raw, headers = signed("/api/v1/send-details", WINDOW)
    assert app.handle(Request("GET", raw, headers, b"")).status == 200


def test_a_wrong_signature_is_401(app: SimulatorApp) -> None:
    raw, headers = signed("/api/v1/send-details", WINDOW, secret="not-the-secret")
    response = app.handle(Request("GET", raw, headers, b""))
    assert response.status == 401
    assert body_of(response) == {
        "error_code": "APIG.0301",
        "error_msg": "signature rejected: signature does not match",
        "request_id": response.headers["X-Request-Id"],
    }


def test_the_gateways_refusals_name_the_request_in_their_body_as_huaweis_gateway_does(
    app: SimulatorApp,
) -> None:
    # The service's own refusals keep the contract's two fields.
    assert set(body_of(details(app, limit="0"))) == {"error_code", "error_msg"}
    refusals = [
        call(app, "/api/v1/send-details", WINDOW),  # unsigned
        call(app, "/api/v1/send-details", WINDOW, {"X-Auth-Token": "nope"}),
        call(app, "/api/v2/send-details", WINDOW, TOKEN),  # no such API
        *(details(app) for _ in range(5)),  # the limit of 5, one spent above
    ]
    assert [r.status for r in refusals] == [401, 401, 404, 200, 200, 200, 200, 429]
    gateway = [r for r in refusals if r.status != 200]
    assert [(r.status, body_of(r)["error_code"]) for r in gateway] == [
        (401, "APIG.0301"),
        (401, "APIG.0307"),
        (404, "APIG.0101"),
        (429, "APIG.0308"),
    ]
    for response in gateway:
        assert body_of(response)["request_id"] == response.headers["X-Request-Id"]
    assert body_of(gateway[2])["error_msg"] == (
        "The API does not exist or has not been published in the environment."
    )


def test_a_tampered_query_is_401(app: SimulatorApp) -> None:
    raw, headers = signed("/api/v1/send-details", WINDOW)
    response = app.handle(Request("GET", raw + "&limit=50", headers, b""))
    assert response.status == 401


def test_a_stale_signature_date_is_401(app: SimulatorApp) -> None:
    raw, headers = signed("/api/v1/send-details", WINDOW, when=NOW - 3600)
    response = app.handle(Request("GET", raw, headers, b""))
    assert (response.status, body_of(response)["error_code"]) == (401, "APIG.0303")


def test_missing_credentials_and_a_wrong_token_are_401(app: SimulatorApp) -> None:
    none = call(app, "/api/v1/send-details", WINDOW)
    assert (none.status, body_of(none)["error_code"]) == (401, "APIG.0301")
    bad = call(app, "/api/v1/send-details", WINDOW, {"X-Auth-Token": "nope"})
    assert (bad.status, body_of(bad)["error_code"]) == (401, "APIG.0307")


def test_a_blank_authorization_is_a_missing_signature_not_a_push_hint(app: SimulatorApp) -> None:
    blank = call(app, "/api/v1/send-details", WINDOW, {"Authorization": "  "})
    assert (blank.status, body_of(blank)["error_code"]) == (401, "APIG.0301")
    assert "push" not in body_of(blank)["error_msg"]
    assert body_of(blank)["error_msg"].startswith("missing Authorization")


def test_the_rate_limit_throttles_per_credential(app: SimulatorApp, fake_time: FakeTime) -> None:
    statuses = [details(app, limit=1).status for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    throttled = details(app, limit=1)
    assert body_of(throttled)["error_code"] == "APIG.0308"
    assert throttled.headers.keys() == {"Retry-After", "X-Request-Id"}
    assert throttled.headers["Retry-After"] == "1"
    fake_time.now += 1.0
    assert details(app, limit=1).status == 200


# -- template list ----------------------------------------------------------------


def templates(app: SimulatorApp, **params: Any) -> Response:
    return call(app, f"/v2/{PROJECT}/msgsms/templates", params, TOKEN)


def test_an_unknown_project_is_404_with_a_huawei_body(app: SimulatorApp) -> None:
    response = call(app, "/v2/ffff/msgsms/templates", {}, TOKEN)
    assert response.status == 404
    assert set(body_of(response)) == {"error_code", "error_msg", "error_detail"}


# -- control ------------------------------------------------------------------------


def test_the_clock_moves_only_forward(app: SimulatorApp) -> None:
    moved = call(app, "/-/clock", method="POST", body={"advance_seconds": 90})
    assert body_of(moved) == {"now": "2026-11-26T12:01:30.000Z"}
    assert call(app, "/-/clock", method="POST", body={"advance_seconds": -1}).status == 400
    assert body_of(call(app, "/-/clock"))["now"] == "2026-11-26T12:01:30.000Z"


@pytest.mark.parametrize("step", [float("nan"), float("inf"), 1e300, 7 * 86400 + 1])
def test_a_clock_step_that_is_not_a_finite_week_or_less_is_400_and_the_clock_keeps_going(
    app: SimulatorApp, step: float
) -> None:
    refused = call(app, "/-/clock", method="POST", body={"advance_seconds": step})
    assert (refused.status, body_of(refused)["error_code"]) == (400, "SIM.BAD_REQUEST")
    assert body_of(refused)["error_msg"].startswith("advance_seconds: expected a number in [0, ")
    assert body_of(call(app, "/-/clock"))["now"] == "2026-11-26T12:00:00.000Z"
    assert details(app).status == 200


def test_truth_over_every_representable_year_answers_the_generated_traffic(
    app: SimulatorApp,
) -> None:
    everything = {"start_time": "0001-01-01T00:00:00Z", "end_time": "9999-12-31T23:59:59Z"}
    wide = body_of(call(app, "/-/truth", everything))["templates"]
    narrow = body_of(call(app, "/-/truth", {**WINDOW, "start_time": "2026-11-26T09:00:00Z"}))
    assert wide == narrow["templates"]


@pytest.mark.parametrize("template_id", [["a"], {"a": 1}, 7])
def test_an_incident_for_a_template_id_that_is_not_a_string_is_400(
    app: SimulatorApp, template_id: object
) -> None:
    body = {"template_id": template_id, "failure_share": 0.5, "category": "expired"}
    refused = call(app, "/-/incidents", method="POST", body=body)
    assert (refused.status, body_of(refused)["error_code"]) == (400, "SIM.BAD_REQUEST")
    assert body_of(refused)["error_msg"].startswith("template_id: ")


def test_truth_covers_every_template(app: SimulatorApp) -> None:
    body = body_of(call(app, "/-/truth", WINDOW))
    assert body["now"] == "2026-11-26T12:00:00.000Z"
    assert set(body["templates"]) == {t.template_id for t in app.store.scenario.templates}
    assert call(app, "/-/truth", {"start_time": "x", "end_time": "y"}).status == 400


def test_the_senders_truth_counts_messages_held_for_review_as_sending(app: SimulatorApp) -> None:
    # The first hold after now: while it lasts, the console shows none of its messages,
    # but the application that sent them knows them (sending) from the send API's answer.
    hour = round(NOW) // 3600
    hold = min(
        (h for k in range(4) for h in holds_for_hour(app.store.scenario, 3, hour + k)),
        key=lambda h: h.start_ms,
    )
    assert hold.start_ms >= NOW * 1000
    step = {"advance_seconds": (hold.start_ms + 60_000) / 1000 - NOW}
    assert call(app, "/-/clock", method="POST", body=step).status == 200
    template = app.store.scenario.templates[hold.template].template_id
    span = {
        "start_time": format_rfc3339(hold.start_ms / 1000),
        "end_time": format_rfc3339(hold.start_ms / 1000 + 60),
    }
    console = body_of(call(app, "/-/truth", span))["templates"][template]
    sender = body_of(call(app, "/-/truth", {**span, "view": "sender"}))["templates"][template]
    assert (
        console
        == body_of(call(app, "/-/truth", {**span, "view": "console"}))["templates"][template]
    )
    assert (console["success"], console["failed"], console["sending"]) == (0, 0, 0)
    assert sender["sending"] > 0 and sender["success"] == sender["failed"] == 0
    refused = call(app, "/-/truth", {**span, "view": "pushed"})
    assert (refused.status, body_of(refused)["error_msg"]) == (
        400,
        "view: expected one of console, sender",
    )


def test_faults_inject_errors_latency_and_malformed_bodies(
    app: SimulatorApp, fake_time: FakeTime
) -> None:
    plan = {"error_share": {"503": 1.0}, "latency_seconds": 0.25, "endpoints": ["send-details"]}
    assert call(app, "/-/faults", method="POST", body=plan).status == 200
    failed = details(app)
    assert (failed.status, failed.headers["Retry-After"]) == (503, "1")
    assert fake_time.slept == [0.25]
    assert templates(app).status == 200
    call(app, "/-/faults", method="POST", body={"malformed_share": 1.0})
    for _ in range(4):
        fake_time.now += 1
        with pytest.raises(Exception):  # noqa: B017 - truncated JSON or the wrong shape
            parse_page(json.loads(details(app).body))
    call(app, "/-/faults", method="DELETE")
    fake_time.now += 1
    assert details(app).status == 200


def test_bad_fault_plans_are_400(app: SimulatorApp) -> None:
    response = call(app, "/-/faults", method="POST", body={"error_share": {"200": 0.5}})
    assert body_of(response)["error_msg"] == "error_share.200: expected an HTTP status 400..599"


def test_incidents_are_started_and_listed(app: SimulatorApp) -> None:
    body = {"category": "blacklisted", "failure_share": 0.2, "duration_seconds": 60}
    created = call(app, "/-/incidents", method="POST", body=body)
    assert created.status == 201
    assert body_of(created)["id"] == 1
    listed = body_of(call(app, "/-/incidents"))["incidents"]
    assert listed == [body_of(created)]


def test_stats_count_requests_by_endpoint_and_status(app: SimulatorApp) -> None:
    details(app)
    details(app, limit="x")
    call(app, "/nowhere")
    assert body_of(call(app, "/-/stats"))["requests"] == {
        "other": {"404": 1},
        "send-details": {"200": 1, "400": 1},
    }


def test_the_openapi_document_is_served(app: SimulatorApp) -> None:
    response = call(app, "/api/v1/openapi.yaml")
    assert (response.status, response.content_type) == (200, "application/yaml")
    assert b"/api/v1/send-details" in response.body
