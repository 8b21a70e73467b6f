"""The command line as an operator meets it: exit codes, located errors, signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt
import httpx
import pytest
from conftest import PROJECT, Simulator, self_signed
from exposition import samples
from health import free_port, stop

from exporter import cli, demo
from exporter.sharding import Shard, owns
from exporter.simulator.scenario import load_scenario


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def test_every_config_problem_is_reported_at_once_with_exit_1_and_no_traceback(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
accounts:
  - endpoint: http://127.0.0.1:1
    project_id: {PROJECT}
    credentials:
      access_key: {{env: NOT_SET_ANYWHERE}}
      secret_key: {{file: {tmp_path / "missing-sk"}}}
    templates: {{discover: true}}
    colour: blue
poll_interval: never
"""
    )
    result = _cli("--config.file", str(config), "--check-config")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "msgsms-exporter: invalid configuration:",
        f"  {config}:9: accounts[0].colour: unknown key",
        f"  {config}:6: accounts[0].credentials.access_key.env: environment variable NOT_SET_ANYWHERE is not set",
        f"  {config}:7: accounts[0].credentials.secret_key.file: cannot read {tmp_path / 'missing-sk'}: No such file or directory",
        f"  {config}:10: poll_interval: not a duration (use e.g. 30s, 5m, 1h): 'never'",
    ]
    assert "Traceback" not in result.stdout + result.stderr


def test_a_missing_config_file_and_a_bad_web_config_exit_1(tmp_path: Path) -> None:
    missing = _cli("--config.file", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1
    assert f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory" in missing.stderr
    config = tmp_path / "config.yaml"
    config.write_text(
        "accounts: [{endpoint: 'http://127.0.0.1:1', project_id: p, templates: [a],"
        " credentials: {token: {env: HOME}}}]\n"
    )
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users: {prom: plain}\n")
    result = _cli("--config.file", str(config), "--web.config.file", str(web))
    assert result.returncode == 1
    assert f"{web}:1: basic_auth_users.prom: expected a bcrypt hash" in result.stderr
    assert "Traceback" not in result.stderr


def test_sighup_reloads_and_sigterm_stops_within_seconds(
    manual_simulator: Simulator, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    body = f"""
accounts:
  - name: NAME
    endpoint: {manual_simulator.url}
    project_id: {PROJECT}
    credentials: {{access_key: {{env: SIM_AK}}, secret_key: {{env: SIM_SK}}}}
    templates: {{discover: true}}
"""
    config.write_text(body.replace("NAME", "first"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "SIM_AK": "demo-access-key", "SIM_SK": "demo-secret-key"}
    command = [sys.executable, "-m", "exporter", "--config.file", str(config)]
    command += ["--web.listen-address", f"127.0.0.1:{port}", "--log.level", "warning"]
    command += ["--web.shutdown-delay", "0s"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        exposition = _wait_for(url, 'msgsms_up{account="first"}')
        assert "msgsms_config_last_reload_successful 1.0" in exposition
        config.write_text(body.replace("NAME", "second"))
        proc.send_signal(signal.SIGHUP)
        _wait_for(url, 'msgsms_up{account="second"}')
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0  # exits cleanly, in seconds (the bound is generous)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
    assert "Traceback" not in stderr


def _wait_for(url: str, needle: str) -> str:
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=2) as http:  # one SSL context, not one a try
        while True:
            try:
                text = http.get(url).text
                if needle in text:
                    return text
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{needle} never appeared"
            time.sleep(0.1)


def test_help_lists_the_details_subcommand() -> None:
    result = _cli("--help")
    assert result.returncode == 0
    assert "subcommands:\n  details    print sending details" in result.stdout


def test_check_config_refuses_unsigned_pushes_off_loopback_as_the_start_would(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "accounts: [{name: push, source: push, templates: {discover: true}}]\n"
        f"receiver: {{store_path: {tmp_path / 'push.db'}}}\n"
    )
    checked = _cli("--config.file", str(config), "--check-config")
    assert checked.returncode == 1
    # Located as the file's other problems are: at the key that needs the fix.
    assert f"  {config}:2: receiver: the push paths on 0.0.0.0 would accept reports" in (
        checked.stderr
    )
    assert "set receiver.signing.keys" in checked.stderr
    on_loopback = _cli(
        *("--config.file", str(config), "--check-config", "--web.listen-address", "127.0.0.1:1")
    )
    assert (on_loopback.returncode, on_loopback.stdout) == (
        0,
        f"{config}: configuration is valid\n",
    )
    assert not (tmp_path / "push.db").exists(), "a check opens no store"


def _answers(url: str, auth: tuple[str, str]) -> bool:
    try:
        return httpx.get(url, auth=auth).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def _serving_demo(
    *args: str,
    host: str = "127.0.0.1",
    ready: str = "/-/ready",
    auth: tuple[str, str] = ("", ""),
    stderr: Path | None = None,
) -> Iterator[str]:
    """``--demo`` with ``args`` on a free port of ``host``, once ``ready`` answers 200 (with
    ``auth``); its URL on loopback. Its stderr goes to ``stderr`` (or nowhere)."""
    port = free_port()
    with stderr.open("w") if stderr else open(os.devnull, "w") as err:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "exporter", "--demo", *args),
                *("--web.listen-address", f"{host}:{port}", "--log.level", "warning"),
            ],
            stderr=err,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while not _answers(f"{url}{ready}", auth):
                assert proc.poll() is None and time.monotonic() < deadline, "the demo never served"
                time.sleep(0.2)
            yield url
        finally:
            stop(proc, timeout=10)


def test_the_demo_serves_behind_the_web_configs_basic_auth(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    web.write_text(f"basic_auth_users: {{prom: '{hashed}'}}\n")
    with _serving_demo(
        "--web.config.file", str(web), ready="/-/healthy", auth=("prom", "s3cret")
    ) as url:
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/metrics", auth=("prom", "s3cret")).status_code == 200


def test_the_demo_serves_its_details_page_on_every_address_without_naming_the_opt_in(
    tmp_path: Path,
) -> None:
    # Its records are made up: off loopback without basic auth /details is not withheld,
    # and no warning names --web.details-unauthenticated, a flag nobody passed.
    stderr = tmp_path / "stderr"
    with _serving_demo(host="0.0.0.0", stderr=stderr) as url:
        details = httpx.get(f"{url}/details", params={"result": "failed", "last": "1h"})
        assert details.status_code == 200
        assert 'id="records"' in details.text
    written = stderr.read_text()
    assert "the demo takes status reports without a signature" in written
    # Neither names a setting or flag the reader never wrote.
    assert "receiver.allow_unsigned" not in written
    assert "--web.details-unauthenticated" not in written


def test_the_demos_push_account_finds_a_registered_send_by_its_number() -> None:
    # Its store used to keep no searchable numbers: the search named receiver.mobile_key,
    # a key the demo's built-in config gives no way to set.
    with _serving_demo() as url:
        sent = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 120))
        send = {"message_id": "demo-search-1", "template_id": "t1", "send_time": sent}
        registered = httpx.post(f"{url}/push/sends", json=[{**send, "mobile": "4402000017"}])
        assert registered.status_code == 200, registered.text
        params = {"account": "push", "mobile": "4402000017", "last": "1h"}
        details = httpx.get(f"{url}/details", params=params)
        assert details.status_code == 200
        assert 'id="error"' not in details.text
        assert "demo-search-1" in details.text and "4402****17" in details.text


def test_ctrl_c_before_serving_is_one_line_and_exit_130_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Ctrl-C while the demo generates its history (a second or two), before serve()
    # takes SIGINT over: KeyboardInterrupt reaches main().
    @contextmanager
    def interrupted_demo() -> Iterator[None]:
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(demo, "demo_session", interrupted_demo)
    assert cli.main(["--demo", "--log.level", "warning"]) == 130
    assert capsys.readouterr().err == "msgsms-exporter: interrupted\n"


def test_demo_with_check_config_is_refused_in_one_line_instead_of_serving() -> None:
    result = _cli("--demo", "--check-config")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "msgsms-exporter: error: argument --check-config: not allowed with argument --demo"
    )


@pytest.mark.parametrize(
    "args",
    [
        ("--demo", "--config.file", "config/msgsms-exporter.yaml"),
        ("--config.file=config/msgsms-exporter.yaml", "--demo", "--once"),
        ("--config", "config/msgsms-exporter.yaml", "--demo"),  # argparse's abbreviation
        ("details", "--demo", "--config.file", "config/msgsms-exporter.yaml"),
    ],
)
def test_demo_with_a_config_file_is_refused_instead_of_ignoring_the_file(
    args: tuple[str, ...],
) -> None:
    # The demo runs its own config: serving it while the operator's file is silently
    # ignored would show the simulator's data as if it were their account's.
    result = _cli(*args)
    program = "msgsms-exporter details" if args[0] == "details" else "msgsms-exporter"
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"{program}: error: argument --config.file: not allowed with argument --demo"
        " (the demo's config is built in; drop one of them)"
    )


def test_demo_once_polls_the_simulator_and_the_push_account_prints_and_exits() -> None:
    result = _cli("--demo", "--once", "--log.level", "warning")
    assert (result.returncode, result.stderr) == (0, "")
    assert 'msgsms_up{account="demo"} 1.0' in result.stdout
    assert 'msgsms_up{account="push"} 1.0' in result.stdout
    assert 'msgsms_window_messages{account="demo",' in result.stdout


def test_demo_polls_only_the_simulated_templates_its_shard_owns() -> None:
    # --shard beside --demo used to be ignored: every shard exported every template.
    result = _cli("--demo", "--once", "--shard", "1/2", "--log.level", "warning")
    assert (result.returncode, result.stderr) == (0, "")
    exported = {
        dict(labels)["template"]
        for labels in samples(result.stdout.encode())["msgsms_window_messages"]
        if dict(labels)["account"] == "demo"
    }
    templates = {t.template_id for t in load_scenario().templates}
    owned = {t for t in templates if owns(Shard(1, 2), "demo", t)}
    assert exported == owned and set() < owned < templates


def test_demo_with_a_shard_out_of_range_is_a_located_error_not_a_demo() -> None:
    result = _cli("--demo", "--shard", "2/2")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.splitlines() == [
        "msgsms-exporter: invalid configuration:",
        "  --shard: shard index 2 is out of range for 2 shards (0..1)",
    ]


def test_a_busy_address_is_one_line_and_exit_1_for_the_exporter_and_the_simulator(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "accounts: [{endpoint: 'http://127.0.0.1:1', project_id: p, templates: [a],"
        " credentials: {token: {env: HOME}}}]\n"
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        runs = {
            "msgsms-exporter": [
                ["--config.file", str(config), "--web.listen-address", address],
                ["--demo", "--web.listen-address", address],
            ],
            "msgsms-simulator": [["--web.listen-address", address]],
        }
        for program, variants in runs.items():
            module = "exporter" if program == "msgsms-exporter" else "exporter.simulator.cli"
            for args in variants:
                result = subprocess.run(
                    [sys.executable, "-m", module, *args, "--log.level", "warning"],
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                assert (result.returncode, result.stderr) == (
                    1,
                    f"{program}: cannot listen on {address}: Address already in use\n",
                ), args


def test_details_demo_prints_a_page_of_the_embedded_simulators_records() -> None:
    result = _cli(
        *("details", "--demo", "--template", "Payment confirmation"),
        *("--result", "failed", "--last", "1h"),
    )
    assert (result.returncode, result.stderr) == (0, "")
    title, header, *rows = result.stdout.splitlines()
    assert " records sent " in title and title.endswith(
        " · account demo · page 1 of " + title.split()[-1]
    )
    assert header.split()[:3] == ["SEND", "TIME", "TEMPLATE"]
    assert len(rows) == 10
    assert all("Payment confirmation" in row and " Failed " in row for row in rows)


@contextmanager
def untrusted_tls_server(folder: Path) -> Iterator[int]:
    """A loopback TLS listener with a self-signed certificate; yields its port."""
    cert, key = self_signed(folder, "gateway")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: the test is over
            try:
                context.wrap_socket(conn, server_side=True).close()
            except (OSError, ssl.SSLError):
                conn.close()  # the client refused the certificate, as expected

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(timeout=10)


def _failed_poll_error(config: Path, endpoint: str) -> str:
    config.write_text(
        f"accounts: [{{endpoint: '{endpoint}', project_id: p, templates: [a],"
        " credentials: {token: {env: HOME}}}]\n"
    )
    result = _cli("--config.file", str(config), "--once", "--log.format", "json")
    assert result.returncode == 1
    failures = [line for line in result.stderr.splitlines() if '"poll failed"' in line]
    assert failures, result.stderr
    return str(json.loads(failures[0])["error"])


def test_a_poll_that_cannot_connect_says_why_refused_or_the_certificate(tmp_path: Path) -> None:
    # "templates: ConnectError" alone left a newcomer guessing between a wrong port, a
    # wrong host and a gateway whose certificate needs accounts[].tls.ca_file.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = closed.getsockname()[1]
    error = _failed_poll_error(tmp_path / "refused.yaml", f"http://127.0.0.1:{refused}")
    assert error == "templates: ConnectError: [Errno 111] Connection refused"
    with untrusted_tls_server(tmp_path) as port:
        error = _failed_poll_error(tmp_path / "tls.yaml", f"https://127.0.0.1:{port}")
    assert error.startswith(
        "templates: ConnectError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
    ), error


def test_no_config_file_anywhere_says_to_pass_one_or_try_the_demo() -> None:
    if Path(cli.DEFAULT_CONFIG).exists():
        pytest.skip(f"this machine has {cli.DEFAULT_CONFIG}")
    result = _cli("--check-config")
    assert (result.returncode, result.stderr.splitlines()) == (
        1,
        [
            "msgsms-exporter: invalid configuration:",
            f"  {cli.DEFAULT_CONFIG}: cannot read: No such file or directory",
            "  (no --config.file given, and none at the default path: pass one, or try --demo)",
        ],
    )
    named = _cli("--config.file", cli.DEFAULT_CONFIG, "--check-config")
    assert named.returncode == 1
    assert "try --demo" not in named.stderr, "a file the operator named needs no hint"
    details = _cli("details", "--last", "1h")  # it had no hint: only "cannot read"
    assert (details.returncode, details.stderr.splitlines()) == (1, result.stderr.splitlines())
