"""Push mode in Huawei's format, captured by a real HTTP server on loopback."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from capture_server import Captured, capturing_server
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from exporter.signing import Credentials, verify_request
from exporter.simulator.clock import ManualClock
from exporter.simulator.push import (
    SEGMENT_SPREAD_SECONDS,
    Due,
    PushConfig,
    Pusher,
    due_reports,
    report_items,
)
from exporter.simulator.scenario import parse_scenario
from exporter.simulator.store import MessageStore
from exporter.status_codes import is_platform_code
from exporter.timestamps import parse_rfc3339

T0 = parse_rfc3339("2026-11-26T10:00:00Z")
WALL = T0 + 3 * 3600.0
"""The wall clock of these pushes: hours after the simulated one, as a manual clock may be."""
HUAWEI_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
KEYS = Credentials("push-ak", "push-sk")
SCENARIO = {
    "review_holds": {"per_hour": 0},
    "late_reports": {"share": 0.2, "min_seconds": 1200, "max_seconds": 7200},
    "failure_mix": {"platform_config": 1, "blacklisted": 1, "carrier_rejected": 1},
    "templates": [
        {"template_id": "INTL", "rate_per_hour": 600, "failure_share": 0.4},
        {
            "template_id": "CN",
            "type": "VERIFY_CODE_TYPE",
            "rate_per_hour": 900,
            "failure_share": 0.4,
        },
    ],
}


@pytest.fixture
def receiver() -> Iterator[tuple[str, Captured]]:
    with capturing_server() as served:
        yield served


def push(url: str, mode: str) -> None:
    store = MessageStore(parse_scenario(SCENARIO), 5, round((T0 - 600) * 1000))
    config = PushConfig(url=url, mode=mode, credentials=KEYS)
    with httpx.Client(timeout=10) as http:
        Pusher(store, ManualClock(T0), config, http, wall=lambda: WALL).catch_up(T0)


def test_reports_and_registrations_carry_huaweis_formats(receiver: tuple[str, Captured]) -> None:
    url, captured = receiver
    push(url, "batch")
    reports = [
        report
        for path, _, body in captured.posts
        if path == "/push/status-reports"
        for report in json.loads(body)["statusReportList"]
    ]
    sends = [
        result
        for path, _, body in captured.posts
        if path.startswith("/push/sends")
        for result in json.loads(body)["result"]
    ]
    assert reports and sends
    assert all(HUAWEI_TIME.match(s["createTime"]) for s in sends)
    assert all(HUAWEI_TIME.match(r["updateTime"]) for r in reports)
    sources = {(is_platform_code(r["status"]), r["source"]) for r in reports}
    assert sources == {(True, "3"), (False, "2")}
    international = {r["smsMsgId"] for r in reports if "orgCode" in r}
    by_template = {
        s["smsMsgId"]: path for path, _, body in captured.posts for s in _results(path, body)
    }
    assert international == {m for m, path in by_template.items() if "INTL" in path} & {
        r["smsMsgId"] for r in reports
    }
    assert {r["orgCode"] for r in reports if r["status"] == "DELIVRD" and "orgCode" in r} == {"000"}
    assert all(re.match(r"^\d{3}$", r["orgCode"]) for r in reports if "orgCode" in r)
    # A carrier report due hours later is announced by a non-final ACCEPTD at once.
    accepted = [r for r in reports if r["status"] == "ACCEPTD"]
    final = {r["smsMsgId"] for r in reports if r["status"] != "ACCEPTD"}
    assert accepted and all(r["source"] == "2" and "updateTime" in r for r in accepted)
    assert not {r["smsMsgId"] for r in accepted} & final


def _segment_times(due: Due) -> dict[str, int]:
    """Each segment's report of ``due``: its updateTime by sequence (epoch seconds)."""
    return {
        r["sequence"]: round(parse_rfc3339(r["updateTime"]))
        for d in due_reports(due)
        for r in report_items(d)
    }


def test_a_long_sms_has_each_segment_reported_at_its_own_time() -> None:
    send_ms = round(T0 * 1000)
    spread: set[int] = set()
    for n in range(40):
        base = Due(
            send_ms + 60_000, f"id-{n}_1", "INTL", "DELIVRD", 3, "447700900123", send_ms, True
        )
        delivered = _segment_times(base)
        failed = _segment_times(Due(**{**_fields(base), "code": "UNDELIV"}))
        platform = _segment_times(Due(**{**_fields(base), "code": "E200018"}))
        assert sorted(delivered) == sorted(failed) == ["1", "2", "3"]
        # Delivered once its last segment is; failed on its first; the message's time.
        assert max(delivered.values()) == min(failed.values()) == T0 + 60
        assert max(delivered.values()) - min(delivered.values()) <= SEGMENT_SPREAD_SECONDS
        assert max(failed.values()) - min(failed.values()) <= SEGMENT_SPREAD_SECONDS
        assert set(platform.values()) == {T0 + 60}  # the platform fails the whole message
        spread.add(max(delivered.values()) - min(delivered.values()))
        assert _segment_times(base) == delivered  # the same message, the same times
    assert len(spread) > 1


def _fields(due: Due) -> dict[str, Any]:
    return {name: getattr(due, name) for name in Due.__slots__}


def _results(path: str, body: bytes) -> list[dict[str, Any]]:
    return json.loads(body)["result"] if path.startswith("/push/sends") else []


def test_single_pushes_are_signed_with_an_unsigned_payload_at_the_wall_clocks_time(
    receiver: tuple[str, Captured],
) -> None:
    # Dated by the simulated clock, a receiver would refuse them once it is 15 min away.
    url, captured = receiver
    push(url, "single")
    singles = [(h, b) for path, h, b in captured.posts if path == "/push/status-report"]
    sends = [(p, h, b) for p, h, b in captured.posts if p != "/push/status-report"]
    assert singles and sends
    for headers, body in singles:
        assert headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert headers["X-Sdk-Content-Sha256"] == "UNSIGNED-PAYLOAD"
        assert "x-sdk-content-sha256" in headers["Authorization"]
        update_time = dict(parse_qsl(body.decode()))["updateTime"]
        assert HUAWEI_TIME.match(update_time) and parse_rfc3339(update_time) <= T0  # simulated
        when = datetime.fromtimestamp(WALL, UTC)
        assert headers["X-Sdk-Date"] == when.strftime("%Y%m%dT%H%M%SZ")
        target = f"{url}/push/status-report"
        assert verify_request("POST", target, headers, body, {"push-ak": "push-sk"}, when)
        assert headers["Authorization"] == huawei_authorization(url, target, headers, body)
    for path, headers, body in sends:  # JSON bodies are hashed, as the SDK's signer does
        assert "X-Sdk-Content-Sha256" not in headers
        assert headers["Authorization"] == huawei_authorization(url, path, headers, body)


def huawei_authorization(url: str, target: str, headers: dict[str, str], body: bytes) -> str:
    """The Authorization Huawei's own signer gives the same request."""
    signed = {
        name: headers[name]
        for name in ("Content-Type", "Host", "X-Sdk-Date")
        if name in headers  # the SDK adds X-Sdk-Content-Sha256 itself, when due
    }
    parts = urlsplit(target)
    request = SdkRequest(
        method="POST",
        schema="http",
        host=url.removeprefix("http://"),
        resource_path=parts.path,
        query_params=parse_qsl(parts.query),
        header_params=signed,
        body=body,
    )
    signer = Signer(BasicCredentials(KEYS.access_key, KEYS.secret_key))
    return str(signer.sign(request).header_params["Authorization"])


def test_a_step_posts_its_batches_concurrently_after_its_registrations() -> None:
    """``connections``: batches in flight together (a slow answer does not hold the rest)."""
    four_in_flight = threading.Event()
    in_flight: list[str] = []
    order: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        order.append(request.url.path)
        if request.url.path == "/push/status-reports":
            in_flight.append(request.url.path)
            if len(in_flight) == 4:
                four_in_flight.set()
            # The first batches are answered only once four were in flight at once.
            if not four_in_flight.wait(timeout=10):
                return httpx.Response(503)
        return httpx.Response(200)

    store = MessageStore(parse_scenario(SCENARIO), 5, round((T0 - 600) * 1000))
    config = PushConfig(url="http://receiver", connections=4, keep_acknowledged=True)
    with httpx.Client(transport=httpx.MockTransport(answer)) as http:
        pusher = Pusher(store, ManualClock(T0), config, http)
        pusher.catch_up(T0)
        pusher.close()
    assert four_in_flight.is_set() and pusher.failed == 0, dict(pusher.stats)
    assert pusher.reports_acknowledged == sum(pusher.acknowledged.values()) > 150
    first_report = order.index("/push/status-reports")
    assert all(path == "/push/sends" for path in order[:first_report])
    assert "/push/sends" not in order[first_report:], "registrations go first"


def test_push_connections_are_checked() -> None:
    with pytest.raises(ValueError, match="connections"):
        PushConfig(url="http://x", connections=0)
