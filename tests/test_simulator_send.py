"""Huawei's sending API on the simulator, ``POST /sms/batchSendSms/v1``, over loopback HTTP.

A message sent through it is part of the simulated world: in the sending details, in
the truth and the exporter's window, and its status report is pushed to its
``statusCallback`` (or, without one, by the pusher like generated traffic).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from capture_server import Captured, capturing_server
from conftest import config_for
from exposition import exported_window
from exposition import samples as parse_samples
from receiver_server import serving_receiver
from simulator_process import simulator_process

from exporter.app import Exporter
from exporter.config import Config, ReceiverConfig, Secret, TemplateSelection, push_account
from exporter.poller import Poller
from exporter.receiver import Receiver
from exporter.records import DetailsQuery, SendResult, parse_page
from exporter.signing import Credentials, sign_request, verify_request
from exporter.simulator import RunningSimulator, SimulatorConfig, start_simulator
from exporter.simulator.api import QueryLimits
from exporter.simulator.gate import wsse_headers
from exporter.simulator.push import SEGMENT_SPREAD_SECONDS, PushConfig, Pusher
from exporter.simulator.scenario import parse_scenario
from exporter.simulator.store import MIN_RETENTION_MS, Footprint
from exporter.sqlitestore import PushStore
from exporter.timestamps import format_rfc3339, parse_rfc3339
from exporter.web import Router, WebServer

AK, SK = "demo-access-key", "demo-secret-key"
SEND = "/sms/batchSendSms/v1"
LONG = "x" * 180  # "Order <180> is ready." is 196 GSM characters: 2 segments
# QUIET generates no traffic: whatever it counts was sent through the API. Its carrier
# answers in exactly 60 s (sigma 0), half of its messages fail.
SCENARIO = {
    "review_holds": {"per_hour": 0},
    "late_reports": {"share": 0},
    "never_reported_share": 0,
    "delivery_delay": {"median_seconds": 60, "sigma": 0},
    "failure_mix": {"carrier_rejected": 1},
    "templates": [
        {
            "template_id": "QUIET",
            "rate_per_hour": 0,
            "failure_share": 0.5,
            "content": "Order ${TXT_200} is ready.",
        },
        {"template_id": "BUSY", "rate_per_hour": 600},
        {"template_id": "DRAFT", "rate_per_hour": 0, "flow_status": "Reviewing"},
    ],
}


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    """A simulator on a manual clock that starts at the current whole minute."""
    config = SimulatorConfig(
        scenario=parse_scenario(SCENARIO),
        seed=11,
        manual_clock=True,
        start_time=time.time() // 60 * 60,
        history_seconds=600,
        rate_limit=0,
    )
    with start_simulator(config) as running:
        yield running


def wsse(secret: str = SK, created: datetime | None = None) -> dict[str, str]:
    return wsse_headers(AK, secret, created or datetime.now(UTC), uuid.uuid4().hex)


def send(sim: RunningSimulator, form: dict[str, str], headers: dict[str, str] | None = None):
    return httpx.post(
        f"{sim.url}{SEND}", data=form, headers=wsse() if headers is None else headers, timeout=30
    )


def order(to: str, **extra: str) -> dict[str, str]:
    return {
        "from": "csms12345678",
        "to": to,
        "templateId": "QUIET",
        "templateParas": '["A-1"]',
    } | extra


def advance(sim: RunningSimulator, seconds: float) -> None:
    httpx.post(f"{sim.url}/-/clock", json={"advance_seconds": seconds}).raise_for_status()


def details(sim: RunningSimulator, template_id: str, **filters: str) -> list[Any]:
    now = sim.clock.now()
    params = {
        "start_time": format_rfc3339(now - 3600),
        "end_time": format_rfc3339(now),
        "template_id": template_id,
        "limit": "100",
        **filters,
    }
    target = f"{sim.url}/api/v1/send-details?{urlencode(params)}"
    headers = sign_request("GET", target, {}, b"", Credentials(AK, SK), datetime.now(UTC))
    response = httpx.get(target, headers=headers, timeout=30)
    response.raise_for_status()
    return list(parse_page(response.json()).records)


def test_a_sent_message_is_in_the_sending_details_as_sending_then_final(
    sim: RunningSimulator,
) -> None:
    response = send(sim, order("+447700900123,+447700900124"))
    assert response.status_code == 200
    body = response.json()
    assert (body["code"], body["description"]) == ("000000", "Success")
    sent_at = datetime.fromtimestamp(sim.clock.now() // 1, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [(r["originTo"], r["status"], r["from"], r["total"]) for r in body["result"]] == [
        ("+447700900123", "000000", "csms12345678", 1),
        ("+447700900124", "000000", "csms12345678", 1),
    ]
    assert {r["createTime"] for r in body["result"]} == {sent_at}
    ids = [r["smsMsgId"] for r in body["result"]]
    assert len(set(ids)) == 2

    advance(sim, 1)  # visible once the clock passes its send time
    records = details(sim, "QUIET")
    assert [(r.message_id, r.send_result, r.mobile) for r in records] == [
        (ids[0], SendResult.SENDING, "4477******23"),
        (ids[1], SendResult.SENDING, "4477******24"),
    ]

    advance(sim, 60)  # the carrier answered 60 s after sending
    final = details(sim, "QUIET")
    assert [r.message_id for r in final] == ids
    assert all(r.send_result is not SendResult.SENDING for r in final)
    assert all(r.receive_time == r.send_time + 60 for r in final)
    assert {r.status_code for r in final} <= {"DELIVRD", "REJECTD", "DELETED", "DJ:0255", "SGIP:13"}


def test_a_message_sent_with_a_busy_templates_traffic_is_merged_in_time_order(
    sim: RunningSimulator,
) -> None:
    advance(sim, 30)
    form = order("+447700900555") | {"templateId": "BUSY", "templateParas": '["Ann", "R-1"]'}
    [result] = send(sim, form).json()["result"]
    advance(sim, 1)
    records = details(sim, "BUSY", limit="100") + details(sim, "BUSY", limit="100", offset="100")
    assert result["smsMsgId"] in [r.message_id for r in records]
    assert [r.send_time for r in records] == sorted(r.send_time for r in records)
    [mine] = details(sim, "BUSY", mobile="447700900555")
    assert (mine.message_id, mine.send_result) == (result["smsMsgId"], SendResult.SENDING)
    sending = details(sim, "BUSY", send_result="sending")
    assert result["smsMsgId"] in [r.message_id for r in sending]
    assert all(r.send_result is SendResult.SENDING for r in sending)


def test_the_exporters_window_counts_sent_messages_as_the_truth_does(
    sim: RunningSimulator, request: pytest.FixtureRequest
) -> None:
    exporter = Exporter(config_for(sim.url), clock=sim.clock.now)
    request.addfinalizer(exporter.stop)
    numbers = ",".join(f"+4477009{n:05d}" for n in range(40))
    assert send(sim, order(numbers)).json()["code"] == "000000"
    advance(sim, 20)
    assert send(sim, order("+8613800000001,+8613800000002")).json()["code"] == "000000"
    for _ in range(6):  # past the default 3 min settle delay and the 60 s carrier delay
        advance(sim, 60)
        assert exporter.poll_once()
    samples = parse_samples(exporter.exposition_text())
    start = next(iter(samples["msgsms_window_start_timestamp_seconds"].values()))
    end = next(iter(samples["msgsms_window_end_timestamp_seconds"].values()))
    truth = httpx.get(
        f"{sim.url}/-/truth",
        params={"start_time": format_rfc3339(start), "end_time": format_rfc3339(end)},
    ).json()["templates"]
    quiet = truth["QUIET"]
    assert quiet["success"] + quiet["failed"] + quiet["sending"] == 42
    assert quiet["success"] > 0 and quiet["failed"] > 0  # half of them fail
    exported = exported_window(samples)
    for template_id in ("QUIET", "BUSY"):
        t = truth[template_id]
        assert exported[template_id] == {
            "success": t["success"],
            "failed": t["failed"],
            "sending": t["sending"],
            "status_codes": t["status_codes"],
        }


def test_the_same_sends_at_the_same_simulated_times_give_the_same_messages() -> None:
    def run() -> list[Any]:
        start = time.time() // 60 * 60
        config = SimulatorConfig(
            scenario=parse_scenario(SCENARIO), seed=3, manual_clock=True, start_time=start
        )
        with start_simulator(config) as running:
            answers = [send(running, order("+447700900001,+447700900002")).json()]
            advance(running, 7)
            answers.append(send(running, order("+33612345678")).json())
            advance(running, 120)
            records = [
                (r.message_id, r.status_code, r.receive_time) for r in details(running, "QUIET")
            ]
            return [[r["smsMsgId"] for a in answers for r in a["result"]], records]

    assert run() == run()


@pytest.mark.parametrize(
    ("form", "status", "code", "description"),
    [
        (
            {"to": "+447700900123", "templateId": "QUIET"},
            400,
            "E000503",
            "The parameter format is incorrect. from: required",
        ),
        (
            order(",".join(f"+4477009{n:05d}" for n in range(501))),
            400,
            "E200015",
            "The number of SMS messages to be sent exceeds the upper limit."
            " to: 501 numbers, at most 500",
        ),
        (
            order("+447700900123", templateId="NOPE"),
            400,
            "E200030",
            "The template is not activated. templateId: no such template",
        ),
        (
            order("+447700900123", templateId="DRAFT"),
            400,
            "E200030",
            "The template is not activated. templateId: the template is Reviewing, not Adopted",
        ),
        (
            order("+447700900123", templateParas="A-1"),
            400,
            "E000503",
            'The parameter format is incorrect. templateParas: expected a JSON array of strings, e.g. ["1"]',
        ),
        (
            order("+447700900123", templateParas='["A-1", "B-2"]'),
            400,
            "E200028",
            "Template variable verification failed."
            " templateParas: the template has 1 variables, 2 given",
        ),
        (
            order("+447700900123", templateParas=json.dumps(["x" * 201])),
            400,
            "E200028",
            "Template variable verification failed. templateParas[0]: at most 200 characters",
        ),
        (
            order("+447700900123", statusCallback="ftp://example.com/cb"),
            400,
            "E000503",
            "The parameter format is incorrect. statusCallback: expected an http or https URL",
        ),
        (
            order("+447700900123", extend="e" * 129),
            400,
            "E000503",
            "The parameter format is incorrect. extend: at most 128 characters",
        ),
    ],
    ids=[
        "no-from",
        "501-numbers",
        "unknown-template",
        "template-in-review",
        "paras-not-json",
        "paras-count",
        "paras-too-long",
        "callback-not-http",
        "extend-too-long",
    ],
)
def test_a_bad_send_is_refused_with_huaweis_code_naming_the_parameter(
    sim: RunningSimulator, form: dict[str, str], status: int, code: str, description: str
) -> None:
    response = send(sim, form)
    assert response.status_code == status
    assert response.json() == {"code": code, "description": description}
    assert sim.store.sent == 0


def test_a_json_body_is_refused_not_guessed(sim: RunningSimulator) -> None:
    response = httpx.post(
        f"{sim.url}{SEND}", json=order("+447700900123"), headers=wsse(), timeout=30
    )
    assert response.status_code == 400
    assert response.json() == {
        "code": "E000503",
        "description": "The parameter format is incorrect."
        " Content-Type: expected application/x-www-form-urlencoded",
    }


def test_bad_and_repeated_numbers_get_their_own_status_and_the_rest_are_sent(
    sim: RunningSimulator,
) -> None:
    body = send(sim, order("+447700900123,0044770090,+447700900123,+8613800000001")).json()
    assert (body["code"], body["description"]) == (
        "E000510",
        "The SMS fails to be sent. Check the status of each number.",
    )
    assert [(r["originTo"], r["status"], bool(r["smsMsgId"])) for r in body["result"]] == [
        ("+447700900123", "000000", True),
        ("0044770090", "E000503", False),
        ("+447700900123", "E200041", False),
        ("+8613800000001", "000000", True),
    ]
    assert sim.store.sent == 2


def test_a_send_without_valid_credentials_is_refused(sim: RunningSimulator) -> None:
    stale = datetime.now(UTC) - timedelta(minutes=20)
    wrong_realm = wsse() | {"Authorization": 'WSSE realm="X",profile="UsernameToken",type="Appkey"'}
    cases = [
        ({}, "E000001", "Authorization is not contained in the HTTP header."),
        (
            {"X-Auth-Token": "demo-token"},
            "E000001",
            "Authorization is not contained in the HTTP header.",
        ),
        (wsse(secret="wrong"), "E000105", "Invalid PasswordDigest."),
        (wsse(created=stale), "E000110", "Created is more than 15 minutes from the server clock."),
        (wrong_realm, "E000004", "The value of realm in Authorization must be SDP."),
        (
            {"Authorization": wsse()["Authorization"]},
            "E000020",
            "X-WSSE is not contained in the HTTP header.",
        ),
    ]
    for headers, code, description in cases:
        response = send(sim, order("+447700900123"), headers)
        assert (response.status_code, response.json()) == (
            401,
            {"code": code, "description": description},
        ), code
    assert sim.store.sent == 0


def _signed(sim: RunningSimulator, secret: str) -> httpx.Response:
    target = f"{sim.url}{SEND}"
    body = urlencode(order("+447700900123")).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    signed = sign_request("POST", target, headers, body, Credentials(AK, secret), datetime.now(UTC))
    return httpx.post(target, content=body, headers=signed, timeout=30)


def test_a_send_signed_with_sdk_hmac_sha256_is_accepted_and_a_wrong_signature_is_not(
    sim: RunningSimulator,
) -> None:
    assert _signed(sim, SK).json()["code"] == "000000"
    refused = _signed(sim, "wrong")
    assert refused.status_code == 401
    assert refused.json()["error_code"] == "APIG.0301"
    assert refused.json()["request_id"] == refused.headers["X-Request-Id"]
    assert sim.store.sent == 1


@pytest.fixture
def receiver() -> Iterator[tuple[str, Captured]]:
    with capturing_server() as served:
        yield served


def test_status_reports_reach_the_status_callback_one_per_segment(
    sim: RunningSimulator, receiver: tuple[str, Captured]
) -> None:
    url, captured = receiver
    form = order("+447700900123", templateParas=json.dumps([LONG]), extend="order-7")
    form["statusCallback"] = f"{url}/callback?shop=1"
    body = send(sim, form).json()
    assert body["code"] == "000000"
    [result] = body["result"]
    assert result["total"] == 2
    advance(sim, 30)
    sim.callbacks.catch_up()
    assert captured.posts == []  # not due before the carrier answers
    advance(sim, 31 + SEGMENT_SPREAD_SECONDS)  # a segment's report may trail by 3 s
    with captured.arrived:  # the simulator's callback thread POSTs them
        assert captured.arrived.wait_for(lambda: len(captured.posts) == 2, timeout=60)
    reports = []
    for path, headers, raw in captured.posts:
        assert path == "/callback?shop=1"
        assert headers["Content-Type"] == "application/x-www-form-urlencoded"
        reports.append(dict(parse_qsl(raw.decode())))
    [record] = details(sim, "QUIET")
    assert sorted(r["sequence"] for r in reports) == ["1", "2"]
    for report in reports:
        assert report["smsMsgId"] == result["smsMsgId"] == record.message_id
        assert report["status"] == record.status_code
        assert report["total"] == "2"
        assert report["extend"] == "order-7"
        assert report["to"] == "+447700900123"
        assert report["orgCode"]  # an international template's report
    # Each segment at its own time: delivered with the last one, failed with the first.
    times = sorted(parse_rfc3339(r["updateTime"]) for r in reports)
    assert times[-1] - times[0] <= SEGMENT_SPREAD_SECONDS
    assert record.receive_time == (times[-1] if record.status_code == "DELIVRD" else times[0])
    assert sim.callbacks.stats == {"200": 2}


@pytest.mark.parametrize("keys_from", ["push_signing", "push"])
def test_status_callbacks_are_signed_as_huaweis_signer_signs_forms_dated_by_the_wall_clock(
    receiver: tuple[str, Captured], keys_from: str
) -> None:
    """Signed with the push signing keys alone, or with those of ``push`` (to a push URL);
    dated by the wall clock although the simulated one is two hours ahead."""
    url, captured = receiver
    keys = Credentials("push-ak", "push-sk")
    config = SimulatorConfig(
        scenario=parse_scenario(SCENARIO),
        manual_clock=True,
        start_time=time.time() // 60 * 60 + 2 * 3600,
        push=PushConfig(url=url, credentials=keys, interval=3600) if keys_from == "push" else None,
        push_signing=keys if keys_from == "push_signing" else None,
    )
    with start_simulator(config) as running:
        send(running, order("+447700900123") | {"statusCallback": f"{url}/callback"})
        advance(running, 61)
        running.callbacks.catch_up()
        [(path, headers, body)] = [p for p in captured.posts if p[0] == "/callback"]
        assert headers["X-Sdk-Content-Sha256"] == "UNSIGNED-PAYLOAD"
        secrets = {"push-ak": "push-sk"}
        assert verify_request("POST", url + path, headers, body, secrets, datetime.now(UTC))
        update_time = dict(parse_qsl(body.decode()))["updateTime"]
        sent_at = running.clock.now() - 61  # the carrier answered 60 s after sending
        assert update_time == format_rfc3339(sent_at + 60).replace(".000", "")


def test_signed_status_callbacks_hours_ahead_on_a_manual_clock_are_all_stored_by_the_receiver(
    tmp_path: Path,
) -> None:
    """``msgsms-simulator --push.sign`` without ``--push.url`` signs the statusCallback
    reports; a receiver checking signatures on its own (wall) clock stores every one."""
    keys = Credentials("push-ak", "push-sk")
    store = PushStore(tmp_path / "push.db")
    config = ReceiverConfig(
        store_path="", signing_keys=(keys,), registration_token=Secret("reg-token")
    )
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(json.dumps(SCENARIO))  # JSON is YAML
    start = format_rfc3339(time.time() // 60 * 60)
    env = {"MSGSMS_PUSH_ACCESS_KEY": "push-ak", "MSGSMS_PUSH_SECRET_KEY": "push-sk"}
    args = ("--clock", "manual", "--start-time", start, "--scenario.file", str(scenario))
    with (
        serving_receiver(config, store) as (server, receiver),
        simulator_process(*args, "--push.sign", "--rate-limit", "0", env=env) as url,
        httpx.Client(timeout=30) as http,
    ):
        base = f"http://127.0.0.1:{server.address[1]}"
        numbers = ",".join(f"+4477009{n:05d}" for n in range(10))
        form = order(numbers) | {"statusCallback": f"{base}/push/status-report"}
        ids: list[str] = []
        for _ in range(3):  # the third hour's reports are dated 2 h past the wall clock
            answer = http.post(f"{url}{SEND}", data=form, headers=wsse()).json()
            assert answer["code"] == "000000"
            ids += [r["smsMsgId"] for r in answer["result"]]
            registered = http.post(
                f"{base}/push/sends?templateId=QUIET",
                json=answer,
                headers={"Authorization": "Bearer reg-token"},
            )
            assert registered.status_code == 200
            http.post(f"{url}/-/clock", json={"advance_seconds": 3600}).raise_for_status()
        for _ in range(600):  # the simulator's callback thread POSTs them: 3 + 30 requests
            if receiver.stats.requests.total() == 3 + len(ids):
                break
            time.sleep(0.1)
        callbacks = http.get(f"{url}/-/stats").json().get("status_callbacks")
    stored = store.query(DetailsQuery(0, 4e9, limit=100)).records
    store.close()
    assert receiver.stats.rejected == {}  # none refused: no 401
    assert {status for (_, status) in receiver.stats.requests} == {"200"}
    assert sorted(r.message_id for r in stored) == sorted(ids)
    assert all(r.send_result is not SendResult.SENDING for r in stored)
    assert callbacks == {"pending": 0, "posted": {"200": 30}}


def test_without_a_callback_the_pusher_registers_and_reports_an_api_send(
    sim: RunningSimulator, receiver: tuple[str, Captured]
) -> None:
    url, captured = receiver
    body = send(sim, order("+447700900123", extend="order-8")).json()
    called_back = send(sim, order("+447700900124") | {"statusCallback": f"{url}/callback"}).json()
    ids = [body["result"][0]["smsMsgId"], called_back["result"][0]["smsMsgId"]]
    with httpx.Client() as http:
        pusher = Pusher(sim.store, sim.clock, PushConfig(url=url), http)
        advance(sim, 61)
        pusher.catch_up()
        pusher.close()
    registered = [
        item["smsMsgId"]
        for path, _, raw in captured.posts
        if path.startswith("/push/sends?templateId=QUIET")
        for item in json.loads(raw)["result"]
    ]
    assert registered == ids  # both are the application's sends
    reports = [
        item
        for path, _, raw in captured.posts
        if path == "/push/status-reports"
        for item in json.loads(raw)["statusReportList"]
        if item["smsMsgId"] in ids
    ]
    # Only the one without a statusCallback is reported in the application's batches.
    assert [(r["smsMsgId"], r["extend"], r["to"]) for r in reports] == [
        (ids[0], "order-8", "+447700900123")
    ]


def test_the_documented_example_sends_through_the_simulator() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "simulator.md").read_text()
    [example] = re.findall(r"```python\n(.*?)```", text, re.S)
    config = SimulatorConfig(manual_clock=True, start_time=time.time() // 60 * 60)
    with start_simulator(config) as running:
        namespace: dict[str, Any] = {}
        exec(example.replace("http://127.0.0.1:9171", running.url), namespace)
        assert namespace["answer"]["code"] == "000000"
        assert [r["status"] for r in namespace["answer"]["result"]] == ["000000", "000000"]
        assert running.store.sent == 2


def test_an_application_flow_through_the_exporters_receiver_gives_the_truths_window(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """Send through the simulator, register its answer and take the reports at the
    exporter's receiver (the statusCallback): the push account's window is the truth."""
    keys = Credentials("push-ak", "push-sk")
    store = PushStore(tmp_path / "push.db", clock=sim.clock.now)
    config = ReceiverConfig(
        store_path="", signing_keys=(keys,), registration_token=Secret("reg-token")
    )
    receiver = Receiver(config, store, clock=sim.clock.now)
    router = Router()
    receiver.add_routes(router)
    web = WebServer(router, "127.0.0.1", 0)
    web.start()
    sim.callbacks.credentials = keys  # Huawei signs its pushes with the push keys
    try:
        host, port = web.address
        base = f"http://{host}:{port}"
        numbers = ",".join(f"+4477009{n:05d}" for n in range(30))
        form = order(numbers) | {"statusCallback": f"{base}/push/status-report"}
        answer = send(sim, form).json()
        assert answer["code"] == "000000"
        registered = httpx.post(
            f"{base}/push/sends?templateId=QUIET",
            json=answer,
            headers={"Authorization": "Bearer reg-token"},
            timeout=30,
        )
        assert registered.status_code == 200
        account = push_account("push", TemplateSelection(ids=("QUIET",)))
        poller = Poller(
            account, Config(accounts=(account,), settle_delay=0), store, clock=sim.clock.now
        )
        for _ in range(3):
            advance(sim, 60)
            sim.callbacks.catch_up()
            snapshot = poller.poll()
        assert sim.callbacks.stats == {"200": 30}
        [window] = snapshot.windows
        truth = httpx.get(
            f"{sim.url}/-/truth",
            params={
                "start_time": format_rfc3339(window.start),
                "end_time": format_rfc3339(window.end),
                "view": "sender",  # what an application fed by the pushes knows
            },
        ).json()["templates"]["QUIET"]
        [counted] = window.templates
        assert (counted.success, counted.failed, counted.sending) == (
            truth["success"],
            truth["failed"],
            truth["sending"],
        )
        assert counted.success + counted.failed == 30
        assert {c.status_code: c.count for c in counted.codes} == truth["status_codes"]
    finally:
        web.stop()
        store.close()


def test_a_sustained_send_load_keeps_what_the_simulator_holds_bounded_by_its_retention(
    receiver: tuple[str, Captured],
) -> None:
    """Eight simulated days of hourly sends with a statusCallback and an extend, beside
    generated traffic: what the store keeps (minutes, messages, the requests' callbacks
    and extends, review holds) and the callbacks pending stop growing at the retention."""
    url, _ = receiver
    config = SimulatorConfig(
        scenario=parse_scenario(SCENARIO),
        manual_clock=True,
        start_time=time.time() // 60 * 60,
        limits=QueryLimits(lookback_seconds=86400),  # kept: 73 h, the floor
        rate_limit=0,
    )
    step, retention = 3600, MIN_RETENTION_MS // 1000
    numbers = ",".join(f"+4477009{n:05d}" for n in range(5))
    form = order(numbers, extend="order-1") | {"statusCallback": f"{url}/callback"}
    daily: list[Footprint] = []
    with start_simulator(config) as running:
        for n in range(1, 8 * 24 + 1):
            assert send(running, form).json()["code"] == "000000"
            advance(running, step)
            running.callbacks.catch_up()
            # Each report is due 60 s after its send: none waits past the next step.
            assert running.callbacks.pending == 0
            if n % 24 == 0:
                daily.append(running.store.footprint())
        now = running.clock.now()
        stats = httpx.get(f"{running.url}/-/stats").json()
        kept_truth, gone_truth = (
            httpx.get(
                f"{running.url}/-/truth",
                params={"start_time": format_rfc3339(start), "end_time": format_rfc3339(end)},
            ).json()["templates"]
            for start, end in ((now - retention, now), (now - 7 * 86400, now - retention - 60))
        )
        assert running.store.sent == 5 * 8 * 24
    assert stats["status_callbacks"] == {"pending": 0, "posted": {"200": 5 * 8 * 24}}
    last = daily[-1]
    assert stats["kept"] == {
        "since": format_rfc3339(last.first_minute_ms / 1000),
        "messages": last.messages,
        "blocks": last.blocks,
        "send_requests": last.requests,
    }
    assert now - retention - 60 <= last.first_minute_ms / 1000 <= now - retention
    # From day 4 on, past the retention, the same time of day holds the same amounts.
    sends_kept = retention // step + 1
    for footprint in daily[3:]:
        assert footprint.requests <= sends_kept
        assert footprint.blocks <= retention // 60 + 1 + sends_kept  # BUSY's and QUIET's
        assert footprint.hold_hours <= retention // 3600 + 3
        assert footprint.messages <= daily[3].messages * 1.05
    # What is kept is what a query reaches; like Huawei's details, the rest is gone.
    assert sum(t["success"] + t["failed"] + t["sending"] for t in kept_truth.values()) == (
        last.messages
    )
    assert all(t["success"] + t["failed"] + t["sending"] == 0 for t in gone_truth.values())
