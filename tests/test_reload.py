"""Hot reload: a valid config is applied keeping counters, an invalid one changes nothing."""

from __future__ import annotations

import ssl
from dataclasses import replace
from pathlib import Path

import bcrypt
import httpx
import pytest
from conftest import (
    PROJECT,
    Simulator,
    account_for,
    config_for,
    self_signed,
)
from exposition import exported_window, samples, total, value

from exporter.app import Exporter
from exporter.config import TemplateSelection
from exporter.webconfig import load_web_config


def _config_yaml(url: str, names: list[str], interval: str = "60s") -> str:
    accounts = "".join(
        f"""
  - name: {name}
    endpoint: {url}
    project_id: {PROJECT}
    credentials: {{access_key: {{env: SIM_AK}}, secret_key: {{env: SIM_SK}}}}
    templates: {{discover: true}}"""
        for name in names
    )
    return f"accounts:{accounts}\npoll_interval: {interval}\n"


@pytest.fixture
def sim_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulator's demo keys in the env variables ``_config_yaml`` names."""
    monkeypatch.setenv("SIM_AK", "demo-access-key")
    monkeypatch.setenv("SIM_SK", "demo-secret-key")


@pytest.mark.usefixtures("sim_keys")
def test_a_valid_reload_keeps_counters_adds_and_removes_accounts(
    manual_simulator: Simulator, request, tmp_path: Path
) -> None:
    sim = manual_simulator
    config = replace(
        config_for(sim.url),
        accounts=(account_for(sim.url, "kept"), account_for(sim.url, "dropped")),
    )
    exporter = Exporter(config, clock=sim.now, sleep=lambda _s: None)
    request.addfinalizer(exporter.stop)
    sim.advance(60)
    assert exporter.poll_once()
    before = samples(exporter.exposition_text())
    sent_before = total(before, "msgsms_messages_sent_total", account="kept")
    requests_before = total(before, "msgsms_upstream_requests_total", account="kept")
    assert sent_before > 0

    path = tmp_path / "config.yaml"
    path.write_text(_config_yaml(sim.url, ["kept", "added"], interval="30s"))
    exporter.config_file = str(path)
    assert exporter.reload_from_file() == []
    after_reload = samples(exporter.exposition_text())
    assert value(after_reload, "msgsms_config_last_reload_successful") == 1
    assert value(after_reload, "msgsms_poll_interval_seconds", account="dropped") == 0
    assert {dict(k)["account"] for k in after_reload["msgsms_up"]} == {"kept", "added"}

    sim.advance(60)
    assert exporter.poll_once()
    after = samples(exporter.exposition_text())
    # Counters of the kept account went on from where they were.
    assert total(after, "msgsms_messages_sent_total", account="kept") >= sent_before
    assert total(after, "msgsms_upstream_requests_total", account="kept") > requests_before
    assert value(after, "msgsms_poll_interval_seconds", account="kept") == 30
    assert total(after, "msgsms_messages_sent_total", account="added") > 0


def test_a_reload_of_templates_and_windows_shows_no_stale_window_as_exact_before_its_poll(
    manual_simulator: Simulator, request
) -> None:
    sim = manual_simulator
    exporter = Exporter(config_for(sim.url, windows=(3600.0, 7200.0)), clock=sim.now)
    request.addfinalizer(exporter.stop)
    sim.advance(60)
    assert exporter.poll_once()
    before = samples(exporter.exposition_text())
    kept = sorted(exported_window(before))[:2]
    assert value(before, "msgsms_window_complete", window="1h") == 1
    account = replace(account_for(sim.url), templates=TemplateSelection(ids=tuple(kept)))
    exporter.reload(replace(config_for(sim.url, windows=(1800.0, 3600.0)), accounts=(account,)))
    # Before the next poll: what the new config no longer selects is gone at once, and
    # the rest, read under the old one, is not shown as exact.
    s = samples(exporter.exposition_text())
    assert {dict(k)["window"] for k in s["msgsms_window_complete"]} == {"1h"}
    assert value(s, "msgsms_window_complete", window="1h") == 0
    assert sorted(exported_window(s)) == kept
    assert sorted(dict(k)["template"] for k in s["msgsms_template_info"]) == kept
    sim.advance(60)
    assert exporter.poll_once()
    s = samples(exporter.exposition_text())
    for window in ("30m", "1h"):
        assert value(s, "msgsms_window_complete", window=window) == 1
        start = value(s, "msgsms_window_start_timestamp_seconds", window=window)
        end = value(s, "msgsms_window_end_timestamp_seconds", window=window)
        truth = sim.truth(start, end)
        assert exported_window(s, window) == {
            t: {k: truth[t][k] for k in ("success", "failed", "sending", "status_codes")}
            for t in kept
        }


def test_an_invalid_reload_is_rejected_and_the_old_config_keeps_running(
    manual_simulator: Simulator, request, tmp_path: Path
) -> None:
    sim = manual_simulator
    exporter = Exporter(config_for(sim.url), clock=sim.now, sleep=lambda _s: None)
    request.addfinalizer(exporter.stop)
    host, port = exporter.start("127.0.0.1", 0)
    path = tmp_path / "config.yaml"
    path.write_text("accounts: []\npoll_interval: soon\nbogus: 1\n")
    exporter.config_file = str(path)
    response = httpx.post(f"http://{host}:{port}/-/reload")
    assert response.status_code == 400
    assert response.text.splitlines() == [
        "configuration rejected; the old one stays:",
        f"{path}:3: bogus: unknown key",
        f"{path}:1: accounts: expected a non-empty list of accounts",
        f"{path}:2: poll_interval: not a duration (use e.g. 30s, 5m, 1h): 'soon'",
    ]
    exposition = samples(httpx.get(f"http://{host}:{port}/metrics").content)
    assert value(exposition, "msgsms_config_last_reload_successful") == 0
    assert {dict(k)["account"] for k in exposition["msgsms_up"]} == {"sim"}
    assert exporter.config.accounts[0].name == "sim"
    assert httpx.get(f"http://{host}:{port}/-/reload").status_code == 405


def _web_yaml(cert: str, key: str, users: dict[str, str]) -> str:
    lines = [f"tls_server_config: {{cert_file: {cert}, key_file: {key}}}", "basic_auth_users:"]
    return "\n".join([*lines, *(f"  {u}: '{h}'" for u, h in users.items())]) + "\n"


@pytest.mark.usefixtures("sim_keys")
def test_a_reload_reads_the_web_config_again_users_and_certificate(
    manual_simulator: Simulator, request, tmp_path: Path
) -> None:
    sim = manual_simulator
    first, second = self_signed(tmp_path, "first"), self_signed(tmp_path, "second")
    prom, ops = "prom-pass-1", "ops-pass-2"
    hashes = {p: bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4)).decode() for p in (prom, ops)}
    web_file = tmp_path / "web.yaml"
    web_file.write_text(_web_yaml(*first, {"prom": hashes[prom]}))
    exporter = Exporter(config_for(sim.url), clock=sim.now, sleep=lambda _s: None)
    request.addfinalizer(exporter.stop)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(_config_yaml(sim.url, ["sim"]))
    exporter.config_file = str(config_file)
    exporter.web_config_file = str(web_file)
    _, port = exporter.start("127.0.0.1", 0, web=load_web_config(web_file))
    url = f"https://127.0.0.1:{port}"
    trust_first = ssl.create_default_context(cafile=first[0])
    trust_second = ssl.create_default_context(cafile=second[0])
    assert httpx.get(f"{url}/metrics", verify=trust_first, auth=("prom", prom)).status_code == 200

    web_file.write_text(_web_yaml(*second, {"ops": hashes[ops]}))
    reload = httpx.post(f"{url}/-/reload", verify=trust_first, auth=("prom", prom))
    assert reload.status_code == 200, reload.text
    # New connections: the new certificate, the new users.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/metrics", verify=trust_first, auth=("ops", ops))
    assert httpx.get(f"{url}/metrics", verify=trust_second, auth=("ops", ops)).status_code == 200
    assert httpx.get(f"{url}/metrics", verify=trust_second, auth=("prom", prom)).status_code == 401

    # A bad web config, or one turning TLS off, is rejected whole; the running one stays.
    for text, problem in (
        ("basic_auth_users: {ops: plain}\n", "1: basic_auth_users.ops: expected a bcrypt hash"),
        (f"basic_auth_users: {{ops: '{hashes[ops]}'}}\n", " turning TLS on or off needs a restart"),
    ):
        web_file.write_text(text)
        rejected = httpx.post(f"{url}/-/reload", verify=trust_second, auth=("ops", ops))
        assert rejected.status_code == 400
        assert f"{web_file}:{problem}" in rejected.text
        ok = httpx.get(f"{url}/metrics", verify=trust_second, auth=("ops", ops))
        assert ok.status_code == 200
        assert value(samples(ok.content), "msgsms_config_last_reload_successful") == 0


def test_a_failed_reload_shows_in_the_next_scrape_without_a_poll() -> None:
    with Exporter(config_for("http://127.0.0.1:9")) as exporter:
        before = exporter.exposition_text()
        exporter.reload_failed()
        after = exporter.exposition_text()
    assert b"msgsms_config_last_reload_successful 1.0" in before
    assert b"msgsms_config_last_reload_successful 0.0" in after


def test_a_reload_of_a_file_that_is_not_utf8_is_rejected_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"accounts: []\npoll_interval: \xff\n")
    with Exporter(config_for("http://127.0.0.1:9")) as exporter:
        exporter.config_file = str(path)
        assert exporter.reload_from_file() == [f"{path}:2: not UTF-8 text (byte 28)"]
        after = exporter.exposition_text()
    assert b"msgsms_config_last_reload_successful 0.0" in after
