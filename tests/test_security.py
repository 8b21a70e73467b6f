"""The exporter's own endpoints locked down: TLS, basic auth, limits, hung clients, no leaks."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest
from conftest import Simulator, config_for

from exporter.app import Exporter
from exporter.web import Response, Router, ServerLimits, WebServer, text
from exporter.webconfig import parse_web_config

PASSWORD = "scrape-pass-4d1f"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


def _router() -> Router:
    router = Router()
    router.add("/metrics", lambda _r: text(200, "metrics"))
    router.add("/-/healthy", lambda _r: text(200, "OK"))
    router.add("/echo", lambda r: Response(200, r.body), methods=("POST",))
    return router


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[str]:
    """A web server with basic auth, health paths open, a short client timeout."""
    tls = getattr(request, "param", None)
    web = parse_web_config({"basic_auth_users": {"prom": HASH}})
    server = WebServer(
        _router(),
        "127.0.0.1",
        0,
        tls=tls,
        auth=web.auth(),
        open_paths={"/-/healthy"},
        limits=ServerLimits(head_timeout=1.0),
    )
    server.start()
    host, port = server.address
    yield f"http://{host}:{port}"
    server.stop()


def test_wrong_or_missing_credentials_get_401_with_www_authenticate(server: str) -> None:
    for auth in (None, ("prom", "wrong"), ("nobody", PASSWORD)):
        response = httpx.get(f"{server}/metrics", auth=auth)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith('Basic realm="msgsms-exporter"')
        assert PASSWORD not in response.text
    garbage = httpx.get(f"{server}/metrics", headers={"Authorization": "Basic !!!"})
    assert garbage.status_code == 401
    assert httpx.get(f"{server}/metrics", auth=("prom", PASSWORD)).text == "metrics\n"


def test_health_can_be_left_open(server: str) -> None:
    assert httpx.get(f"{server}/-/healthy").status_code == 200


def test_headers_and_bodies_are_bounded(server: str) -> None:
    many = {f"x-h{i}": "v" for i in range(150)}
    assert httpx.get(f"{server}/-/healthy", headers=many).status_code == 431
    big = httpx.post(f"{server}/echo", content=b"x" * (1024 * 1024 + 1), auth=("prom", PASSWORD))
    assert big.status_code == 413


def test_a_hung_client_does_not_stop_metrics_and_is_timed_out(server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as hung:
        hung.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finishes
        # Served while the hung client holds its connection (well inside its 10 s timeout).
        metrics = httpx.get(f"{server}/metrics", auth=("prom", PASSWORD), timeout=5)
        assert metrics.status_code == 200
        hung.settimeout(10)
        answer = b""
        while chunk := hung.recv(1024):  # until the server closes, after the head deadline
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")


def test_tls_serves_https_and_answers_plain_http_with_a_counted_400(
    tls_files: tuple[str, str],
) -> None:
    cert, key = tls_files
    web = parse_web_config(
        {
            "tls_server_config": {"cert_file": cert, "key_file": key, "min_version": "TLS13"},
            "basic_auth_users": {"prom": HASH},
        }
    )
    assert web.tls is not None
    server = WebServer(
        _router(),
        "127.0.0.1",
        0,
        tls=web.tls.context(),
        auth=web.auth(),
        limits=ServerLimits(head_timeout=1.0),
    )
    server.start()
    try:
        _, port = server.address
        url = f"https://127.0.0.1:{port}"
        trusted = ssl.create_default_context(cafile=cert)
        with socket.create_connection(("127.0.0.1", port)):  # never sends a ClientHello
            response = httpx.get(f"{url}/metrics", verify=trusted, auth=("prom", PASSWORD))
            assert response.status_code == 200
        old = ssl.create_default_context(cafile=cert)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/metrics", verify=old)
        plain = httpx.get(f"http://127.0.0.1:{port}/metrics")  # http:// to the https port
        assert (plain.status_code, plain.text) == (
            400,
            "this port speaks HTTPS: send the request over TLS\n",
        )
        assert server.stats.snapshot()[0] == {"plain_http": 1}
        # The port still speaks TLS to the next client.
        again = httpx.get(f"{url}/metrics", verify=trusted, auth=("prom", PASSWORD))
        assert again.status_code == 200
    finally:
        server.stop()


@contextlib.contextmanager
def _tls_server(tls_files: tuple[str, str]) -> Iterator[WebServer]:
    """A TLS server on a free port whose request heads are due within a second."""
    cert, key = tls_files
    web = parse_web_config({"tls_server_config": {"cert_file": cert, "key_file": key}})
    assert web.tls is not None
    server = WebServer(
        _router(), "127.0.0.1", 0, tls=web.tls.context(), limits=ServerLimits(head_timeout=1.0)
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_silent_clients_of_the_tls_port_are_dropped_once_each_as_no_request(
    tls_files: tuple[str, str],
) -> None:
    with _tls_server(tls_files) as server:
        silent = [socket.create_connection(server.address) for _ in range(3)]
        for sock in silent:  # closed by the server after the head deadline, unanswered
            sock.settimeout(10)
            assert sock.recv(1024) == b""
            sock.close()
        _, dropped = server.stats.snapshot()
        assert dropped == {"no_request": 3}


def test_clients_stalled_in_their_tls_handshake_are_dropped_once_each(
    tls_files: tuple[str, str],
) -> None:
    with _tls_server(tls_files) as server:
        stalled = [socket.create_connection(server.address) for _ in range(3)]
        for sock in stalled:  # a handshake record begins, and never goes on
            sock.sendall(b"\x16\x03\x01")
        for sock in stalled:
            sock.settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1024) == b""
            sock.close()
        deadline = time.monotonic() + 10
        while server.stats.connections:
            assert time.monotonic() < deadline, "the stalled connections were never closed"
            time.sleep(0.05)
        _, dropped = server.stats.snapshot()
        # The head deadline (no_request) or the handshake's own (tls_handshake): one each.
        assert set(dropped) <= {"no_request", "tls_handshake"}
        assert sum(dropped.values()) == 3


def test_turning_upstream_verification_off_warns_at_every_start(
    manual_simulator: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataclasses import replace

    config = config_for(manual_simulator.url)
    config = replace(config, accounts=(replace(config.accounts[0], tls_verify=False),))
    for _ in range(2):
        Exporter(config).stop()
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count("upstream TLS verification is off") == 2


# -- no secret anywhere -------------------------------------------------------------

SK = "sk-sim-7Q2x9LmZ"
AK = "ak-sim-31"
MOBILE = "4402000000123"
MOBILE_KEY = "mk-3f9a1c77e2b04d6a9c5e8f1a2b3c4d5e"
UNKEYED_HASH = hashlib.sha256(MOBILE.encode()).hexdigest()
"""What the push store kept for a number before its hashes were keyed."""


def test_secrets_and_full_numbers_never_reach_any_output(tmp_path: Path) -> None:
    """Run the real CLI at debug level with known secrets and read every channel."""
    from simulator_process import simulator_process

    sim_env = {"MSGSMS_SIMULATOR_AK": AK, "MSGSMS_SIMULATOR_SK": SK}
    # A minute ago: /details shows the last hour of records, whatever today's date.
    start = time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(time.time() - 60))
    args = ("--clock", "manual", "--start-time", start, "--history", "1h")
    with simulator_process(*args, "--scale", "0.02", env=sim_env) as sim_url:
        sk_file = tmp_path / "sk"
        sk_file.write_text(SK)
        config = tmp_path / "config.yaml"
        config.write_text(
            f"""
accounts:
  - name: leak
    endpoint: {sim_url}
    project_id: 0123456789abcdef0123456789abcdef
    credentials:
      access_key: {{env: LEAK_AK}}
      secret_key: {{file: {sk_file}}}
    templates: {{discover: true}}
poll_interval: 1s
receiver:
  store_path: {tmp_path / "push.db"}
  details_api: true
  mobile_key: {{env: LEAK_MOBILE_KEY}}
"""
        )
        web = tmp_path / "web.yml"
        web.write_text(f"basic_auth_users:\n  prom: '{HASH}'\n")
        channels = _run_exporter_and_collect(config, web, tmp_path)
    leaks = {
        name: [s for s in (SK, PASSWORD, HASH, MOBILE, MOBILE_KEY, UNKEYED_HASH) if s in text_]
        for name, text_ in channels.items()
    }
    assert leaks == {name: [] for name in channels}
    assert "poll finished" in channels["stderr"]  # the logs really were captured
    message_ids = re.findall(
        r"<td class=\"l\">([0-9a-f-]{36}_\d+)</td>", channels["/details records"]
    )
    assert message_ids, "the records page showed no message id"
    logged = [m for m in message_ids if m in channels["stderr"] + channels["stdout"]]
    assert logged == []


def _run_exporter_and_collect(config: Path, web: Path, tmp_path: Path) -> dict[str, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "exporter",
        "--config.file",
        str(config),
        "--web.config.file",
        str(web),
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--log.level",
        "debug",
        "--log.format",
        "json",
        "--web.shutdown-delay",
        "0s",
    ]
    env = {**os.environ, "LEAK_AK": AK, "LEAK_MOBILE_KEY": MOBILE_KEY}
    out = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed below
    err = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(command, stdout=out, stderr=err, env=env)
    channels: dict[str, str] = {}
    try:
        base = f"http://127.0.0.1:{port}"
        auth = ("prom", PASSWORD)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/-/ready", auth=auth, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "exporter never became ready"
            time.sleep(0.1)
        channels["/metrics"] = httpx.get(f"{base}/metrics", auth=auth).text
        channels["/"] = httpx.get(f"{base}/", auth=auth).text
        details = httpx.get(f"{base}/details", params={"mobile": MOBILE, "last": "1h"}, auth=auth)
        # The form keeps what the operator typed (the query's own input); every record
        # shown is masked.
        channels["/details"] = details.text.replace(f'value="{MOBILE}"', 'value=""', 1)
        # Every record of the last hour: the page shows message ids; no log may.
        channels["/details records"] = httpx.get(
            f"{base}/details", params={"last": "1h"}, auth=auth
        ).text
        channels.update(_register_and_search_a_number(base, auth))
        channels["401"] = httpx.get(f"{base}/metrics", auth=("prom", "wrong")).text
        channels["404"] = httpx.get(f"{base}/nowhere", auth=auth).text
        # SIGHUP reads the web config again: the new user is in, the old one out.
        web.write_text(f"basic_auth_users:\n  ops: '{HASH}'\n")
        proc.send_signal(signal.SIGHUP)
        auth = ("ops", PASSWORD)
        while httpx.get(f"{base}/metrics", auth=auth).status_code != 200:
            assert time.monotonic() < deadline + 30, "the new web config never applied"
            time.sleep(0.1)
        old_user = httpx.get(f"{base}/metrics", auth=("prom", PASSWORD))
        assert old_user.status_code == 401
        channels["401 after reload"] = old_user.text
        broken = config.read_text().replace("secret_key:", "secret_key_typo:")
        config.write_text(broken)
        channels["reload"] = httpx.post(f"{base}/-/reload", auth=auth).text
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.seek(0)
        err.seek(0)
        channels["stdout"] = out.read()
        channels["stderr"] = err.read()
        out.close()
        err.close()
    assert "configuration reload rejected" in channels["stderr"]
    return channels


def _register_and_search_a_number(base: str, auth: tuple[str, str]) -> dict[str, str]:
    """A send registered with its number, found by the number (with the store's key), and
    the answers that refuse a search: what each said."""
    now = time.time()
    window = {
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600)),
        "end_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 60)),
    }
    send_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60))
    sends = [{"message_id": "pushed-1", "template_id": "tpl", "send_time": send_time}]
    sends[0]["mobile"] = MOBILE
    registered = httpx.post(f"{base}/push/sends", json=sends, auth=auth)
    assert registered.status_code == 200, registered.text
    api = f"{base}/api/v1/send-details"
    found = httpx.get(api, params={**window, "mobile": MOBILE}, auth=auth)
    assert [r["message_id"] for r in found.json()["records"]] == ["pushed-1"]
    refused = httpx.get(api, params={**window, "mobile": f"+{MOBILE}"}, auth=auth)
    assert refused.status_code == 400
    return {"/push/sends": registered.text, "send-details": found.text, "400": refused.text}


def test_basic_auth_header_with_a_colon_in_the_password(server: str) -> None:
    token = base64.b64encode(b"prom:" + PASSWORD.encode()).decode()
    ok = httpx.get(f"{server}/metrics", headers={"Authorization": f"Basic {token}"})
    assert ok.status_code == 200
