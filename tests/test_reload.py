"""Hot reload: a valid config is applied keeping counters, an invalid one changes nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
from conftest import PROJECT, Simulator, account_for, config_for
from exposition import samples, total, value

from exporter.app import Exporter


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


def test_a_valid_reload_keeps_counters_adds_and_removes_accounts(
    manual_simulator: Simulator, request, tmp_path: Path, monkeypatch
) -> None:
    sim = manual_simulator
    monkeypatch.setenv("SIM_AK", "demo-access-key")
    monkeypatch.setenv("SIM_SK", "demo-secret-key")
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
        "bogus: unknown key",
        "accounts: expected a non-empty list of accounts",
        "poll_interval: not a duration (use e.g. 30s, 5m, 1h): 'soon'",
    ]
    exposition = samples(httpx.get(f"http://{host}:{port}/metrics").content)
    assert value(exposition, "msgsms_config_last_reload_successful") == 0
    assert {dict(k)["account"] for k in exposition["msgsms_up"]} == {"sim"}
    assert exporter.config.accounts[0].name == "sim"
    assert httpx.get(f"http://{host}:{port}/-/reload").status_code == 405
