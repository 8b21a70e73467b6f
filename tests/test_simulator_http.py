"""``msgsms-simulator`` as a real subprocess on loopback, spoken to over HTTP."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from exporter.records import SendResult, parse_page
from exporter.signing import Credentials, sign_request
from exporter.simulator import SimulatorConfig, start_simulator
from exporter.timestamps import parse_rfc3339
from tests.health import stop
from tests.simulator_process import READY_PREFIX, simulator_process

START = "2026-11-26T10:00:00Z"
TOKEN = {"X-Auth-Token": "sim-token"}
ENV = {
    "MSGSMS_SIMULATOR_AK": "sim-ak",
    "MSGSMS_SIMULATOR_SK": "sim-sk",
    "MSGSMS_SIMULATOR_TOKEN": "sim-token",
}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    args = ("--clock", "manual", "--start-time", START, "--history", "1h", "--rate-limit", "0")
    with simulator_process(*args, env=ENV) as base:
        yield base


def get_details(url: str, params: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{url}/api/v1/send-details", params=params, headers=TOKEN, timeout=30)


def test_a_signed_query_over_http_is_accepted_and_a_wrong_key_is_not(url: str) -> None:
    query = urlencode({"start_time": "2026-11-26T09:30:00Z", "end_time": START, "limit": "3"})
    target = f"{url}/api/v1/send-details?{query}"
    when = datetime.fromtimestamp(parse_rfc3339(START), tz=UTC)
    good = sign_request("GET", target, {}, b"", Credentials("sim-ak", "sim-sk"), when)
    response = httpx.get(target, headers=good)
    assert response.status_code == 200
    assert len(parse_page(response.json()).records) == 3
    bad = sign_request("GET", target, {}, b"", Credentials("sim-ak", "demo-secret-key"), when)
    response = httpx.get(target, headers=bad)
    assert response.status_code == 401
    assert response.json()["error_code"] == "APIG.0301"


def test_head_wrong_methods_and_an_overlong_url_get_json_errors_not_html(url: str) -> None:
    params = {"start_time": "2026-11-26T09:30:00Z", "end_time": START}
    head = httpx.head(f"{url}/api/v1/send-details", params=params, headers=TOKEN, timeout=30)
    assert (head.status_code, head.content) == (200, b"")
    assert int(head.headers["Content-Length"]) > 0
    put = httpx.put(f"{url}/api/v1/send-details", params=params, headers=TOKEN, timeout=30)
    assert (put.status_code, put.json()["error_code"]) == (405, "MSGSMS.0405")
    # httpx refuses to send a URL this long; http.client sends what it is given.
    connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=30)
    connection.request("GET", f"/api/v1/send-details?template_id={'a' * 70_000}", headers=TOKEN)
    long = connection.getresponse()
    assert long.status == 414
    assert json.loads(long.read())["error_code"] == "APIG.0201"
    connection.close()


def test_truth_equals_paging_every_record_after_the_clock_moves(url: str) -> None:
    assert httpx.post(f"{url}/-/clock", json={"advance_seconds": 300}).json() == {
        "now": "2026-11-26T10:05:00.000Z"
    }
    window = {"start_time": "2026-11-26T09:50:00Z", "end_time": "2026-11-26T10:05:00Z"}
    records = []
    with httpx.Client(headers=TOKEN, timeout=30) as http:  # one SSL context for every page
        while True:
            params = {**window, "limit": "100", "offset": str(len(records))}
            page = http.get(f"{url}/api/v1/send-details", params=params).json()
            records.extend(parse_page(page).records)
            if len(records) >= page["total"]:
                break
    truth = httpx.get(f"{url}/-/truth", params=window).json()
    assert truth["now"] == "2026-11-26T10:05:00.000Z"
    for template_id, counts in truth["templates"].items():
        mine = [r for r in records if r.template_id == template_id]
        assert counts["success"] == sum(r.send_result is SendResult.SUCCESS for r in mine)
        assert counts["failed"] == sum(r.send_result is SendResult.FAILED for r in mine)
        assert counts["sending"] == sum(r.send_result is SendResult.SENDING for r in mine)
        assert sum(counts["status_codes"].values()) == counts["success"] + counts["failed"]


def signed_details(url: str, params: dict[str, str]) -> httpx.Response:
    target = f"{url}/api/v1/send-details?{urlencode(params)}"
    now = datetime.now(UTC)
    headers = sign_request("GET", target, {}, b"", Credentials("sim-ak", "sim-sk"), now)
    return httpx.get(target, headers=headers, timeout=30)


@pytest.mark.parametrize(
    "clients",
    [(get_details, get_details), (signed_details, get_details)],
    ids=["token-and-token", "aksk-and-token"],
)
def test_a_second_query_of_the_account_in_flight_is_refused_with_retry_after(
    url: str, clients: tuple[object, object]
) -> None:
    # One query at a time per account: its AK/SK and its token are the same user.
    plan = {"latency_seconds": 0.5, "endpoints": ["send-details"]}
    assert httpx.post(f"{url}/-/faults", json=plan).status_code == 200
    barrier = threading.Barrier(2)
    answers: list[httpx.Response] = []

    def query(client: object) -> None:
        barrier.wait()
        params = {"start_time": "2026-11-26T09:00:00Z", "end_time": START}
        answers.append(client(url, params))  # type: ignore[operator]

    threads = [threading.Thread(target=query, args=(client,)) for client in clients]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        httpx.delete(f"{url}/-/faults")
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 429]
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error_code"] == "MSGSMS.0429"
    request_ids = {a.headers["X-Request-Id"] for a in answers}
    assert len(request_ids) == 2 and all(len(i) == 32 for i in request_ids)


def test_the_template_list_and_openapi_are_served(url: str) -> None:
    listed = httpx.get(
        f"{url}/v2/0123456789abcdef0123456789abcdef/msgsms/templates",
        params={"limit": "500"},
        headers=TOKEN,
    ).json()
    assert listed["total"] == len(listed["results"]) == 6
    spec = httpx.get(f"{url}/api/v1/openapi.yaml")
    assert spec.status_code == 200
    assert spec.text.startswith("openapi: 3")


def test_stats_count_what_was_served(url: str) -> None:
    assert httpx.get(f"{url}/-/healthy").status_code == 200
    stats = httpx.get(f"{url}/-/stats").json()
    assert stats["requests"]["healthy"]["200"] >= 1
    assert stats["messages_generated"] > 0


def test_the_real_clock_cannot_be_moved() -> None:
    with simulator_process("--clock", "real") as base:
        response = httpx.post(f"{base}/-/clock", json={"advance_seconds": 1})
        assert response.status_code == 409


def test_sigterm_stops_the_simulator_cleanly() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter.simulator.cli", "--web.listen-address", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    with proc.stdout:
        assert proc.stdout.readline().startswith(READY_PREFIX)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_a_bad_scenario_exits_1_naming_the_problem(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text("templates:\n  - template_id: x\n    rate_per_hour: fast\n")
    result = subprocess.run(
        [sys.executable, "-m", "exporter.simulator.cli", f"--scenario.file={scenario}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"msgsms-simulator: {scenario}:3: templates[0].rate_per_hour: "
        "expected a number in [0, 1e+08]\n"
    )


def test_the_python_api_serves_in_process_with_history() -> None:
    config = SimulatorConfig(history_seconds=600, access_key="k", secret_key="s", token="t")
    with start_simulator(config) as running:
        now = datetime.fromtimestamp(running.clock.now(), tz=UTC)
        params = {
            "start_time": f"{now - timedelta(minutes=10):%Y-%m-%dT%H:%M:%SZ}",
            "end_time": f"{now:%Y-%m-%dT%H:%M:%SZ}",
        }
        response = httpx.get(
            f"{running.url}/api/v1/send-details", params=params, headers={"X-Auth-Token": "t"}
        )
        assert response.status_code == 200
        assert response.json()["total"] > 0


def exchange(netloc: str, head: str, body: bytes = b"") -> tuple[int, dict[str, str]]:
    """Send raw bytes, read one answer; the status and the JSON body (its request_id
    checked against the header and left out)."""
    host, port = netloc.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = http.client.HTTPResponse(conn)
        answer.begin()
        body = json.loads(answer.read())
        if "request_id" in body:
            assert body.pop("request_id") == answer.getheader("X-Request-Id")
        return answer.status, body


@pytest.mark.parametrize(
    ("framing", "status", "message"),
    [
        ("Content-Length: abc", 400, "Content-Length: expected a number of bytes"),
        ("Content-Length: -1", 400, "Content-Length: expected a number of bytes"),
        ("Content-Length: 1_0", 400, "Content-Length: expected a number of bytes"),
        ("Content-Length: 2\nContent-Length: 3", 400, "Content-Length: give it once"),
        ("Content-Length: 99999999999", 413, "Content-Length: at most 1048576 bytes"),
        (
            "Transfer-Encoding: chunked",
            411,
            "Transfer-Encoding: not supported; send Content-Length",
        ),
    ],
)
def test_a_body_the_simulator_cannot_frame_is_a_located_error_not_a_traceback(
    tmp_path: Path, framing: str, status: int, message: str
) -> None:
    errors = tmp_path / "stderr"
    with errors.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter.simulator.cli", "--web.listen-address", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert proc.stdout is not None
    try:
        netloc = urlsplit(proc.stdout.readline().removeprefix(READY_PREFIX).strip()).netloc
        head = f"POST /-/clock HTTP/1.1\nHost: {netloc}\n{framing}\n"
        assert exchange(netloc, head, b"2\r\n{}\r\n0\r\n\r\n") == (
            status,
            {"error_code": "APIG.0201", "error_msg": message},
        )
        # Still serving, and nothing was printed.
        assert exchange(netloc, f"GET /-/clock HTTP/1.1\nHost: {netloc}\n")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:  # a failed assertion must not leave the simulator running
        stop(proc, timeout=10)
        proc.stdout.close()
    assert "Traceback" not in errors.read_text()
