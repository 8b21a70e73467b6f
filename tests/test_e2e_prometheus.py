"""End to end: simulator → exporter (real web server) → real Prometheus with the shipped rules.

One stack per module:

- the simulator runs on a manual clock starting at the current minute with one hour of
  history; a ticker thread advances it 30 simulated seconds every real second, so the
  window slides and the counters grow while Prometheus watches;
- an incident makes 90 % of "Payment confirmation" fail with ``platform_config`` codes;
- the exporter polls every second (its clock is the simulator's) and serves /metrics;
- a push account beside it: every tick registers one send and pushes its status report
  to the exporter's receiver (and one push is malformed), so the receiver row has data;
- Prometheus scrapes and evaluates every second with a copy of
  ``config/prometheus/msgsms-rules.yml`` whose ``for:`` durations are shortened to
  ``FOR_IN_TEST`` (the shipped ones are minutes; the expressions are unchanged).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from conftest import Simulator, config_for
from promtool import (
    DASHBOARDS,
    RULES,
    PrometheusServer,
    dashboard_expressions,
    exposition_metric_names,
    metric_names,
    run_prometheus,
)
from simulator_process import simulator_process

from exporter.app import Exporter
from exporter.config import ReceiverConfig, push_account
from exporter.timestamps import format_rfc3339

PAYMENT = "2b8e6b2f0c1d4c1f9a7e3d5b6c8a9f01"  # "Payment confirmation" in the default scenario
FOR_IN_TEST = "2s"
TICK_SIMULATED_SECONDS = 30
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds"}
# Metrics the dashboards reference that this exporter does not emit yet. Each is owned by
# other work in progress; remove an entry when it lands (the tests then cover it fully).
KNOWN_GAPS: dict[str, str] = {}


@dataclass
class Stack:
    simulator: Simulator
    exporter_url: str
    prometheus: PrometheusServer


def shortened_rules(target: Path) -> Path:
    """A copy of the shipped rules with every ``for:`` set to FOR_IN_TEST."""
    text, count = re.subn(r"(?m)^(\s+for:\s*)\S+", rf"\g<1>{FOR_IN_TEST}", RULES.read_text())
    assert count >= 10
    target.write_text(text)
    return target


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("e2e")
    start = format_rfc3339(time.time() // 60 * 60)
    args = ("--clock", "manual", "--start-time", start, "--history", "1h", "--scale", "0.2")
    with simulator_process(*args) as url, httpx.Client(timeout=30) as http:
        sim = Simulator(url, http)
        sim.post(
            "/-/incidents",
            {
                "template_id": PAYMENT,
                "failure_share": 0.9,
                "category": "platform_config",
                "duration_seconds": 4 * 3600,
            },
        )
        sim.advance(20 * 60)
        config = config_for(
            url, poll_interval=1.0, receiver=ReceiverConfig(store_path=str(workdir / "push.db"))
        )
        config = replace(config, accounts=(*config.accounts, push_account("push")))
        exporter = Exporter(config, clock=sim.now)
        stop = threading.Event()
        base = ""

        def tick() -> None:
            with httpx.Client(timeout=30) as ticker:
                ticker.post(f"{base}/push/status-reports", json={"statusReportList": [{}]})
                for n in range(10**6):
                    if stop.wait(1.0):
                        return
                    ticker.post(f"{url}/-/clock", json={"advance_seconds": TICK_SIMULATED_SECONDS})
                    sent = format_rfc3339(sim.now() - 60)
                    send = {"message_id": f"e2e-{n}", "template_id": "e2e", "send_time": sent}
                    ticker.post(f"{base}/push/sends", json=[send])
                    report = {"smsMsgId": f"e2e-{n}", "status": "DELIVRD"}
                    ticker.post(f"{base}/push/status-reports", json={"statusReportList": [report]})

        ticker = threading.Thread(target=tick, daemon=True)
        try:
            assert exporter.poll_once()
            host, port = exporter.start("127.0.0.1", 0)
            base = f"http://{host}:{port}"
            ticker.start()
            rules = shortened_rules(workdir / "msgsms-rules.yml")
            with run_prometheus(workdir, [f"{host}:{port}"], rule_files=[rules]) as prometheus:
                yield Stack(sim, f"http://{host}:{port}", prometheus)
        finally:
            stop.set()
            if ticker.is_alive():
                ticker.join(10)
            exporter.stop()


def _firing(prometheus: PrometheusServer) -> dict[str, set[str]]:
    alerts = prometheus.api("/api/v1/alerts")["alerts"]
    out: dict[str, set[str]] = {}
    for alert in alerts:
        if alert["state"] == "firing":
            out.setdefault(alert["labels"]["alertname"], set()).add(
                alert["labels"].get("template", "")
            )
    return out


def test_incident_drives_the_failure_ratio_and_platform_config_alerts_to_firing(stack: Stack):
    deadline = time.monotonic() + 45
    firing: dict[str, set[str]] = {}
    while time.monotonic() < deadline:
        firing = _firing(stack.prometheus)
        if PAYMENT in firing.get("MsgsmsTemplateFailureRatioHigh", set()) and PAYMENT in firing.get(
            "MsgsmsPlatformConfigFailures", set()
        ):
            break
        time.sleep(0.5)
    assert PAYMENT in firing.get("MsgsmsTemplateFailureRatioHigh", set()), firing
    assert PAYMENT in firing.get("MsgsmsPlatformConfigFailures", set()), firing
    # Of the busy templates, only the incident's fails over the threshold, except those that
    # may cross 10 % on their own by design: "International sender check" fails ~9 %, and a
    # fifth of the review holds end in a content-review rejection (SC:0001) of every held
    # message, as Huawei's manual review does. Which templates' holds are rejected depends
    # on the simulated hours, and the start follows the wall clock: the truth names them.
    now = stack.simulator.now()
    rejected = {
        template
        for template, truth in stack.simulator.truth(now - 6 * 3600, now).items()
        if truth["status_codes"].get("SC:0001")
    }
    may_fail_alone = ({"9a4c6e8f0b1d3f5a7c9e1b3d5f7a9c37"} | rejected) - {PAYMENT}
    assert firing["MsgsmsTemplateFailureRatioHigh"] - may_fail_alone == {PAYMENT}
    (alert,) = [
        a
        for a in stack.prometheus.api("/api/v1/alerts")["alerts"]
        if a["labels"]["alertname"] == "MsgsmsTemplateFailureRatioHigh"
        and a["labels"]["template"] == PAYMENT
        and a["state"] == "firing"
    ]
    assert alert["labels"]["template_name"] == "Payment confirmation"
    assert '"Payment confirmation"' in alert["annotations"]["description"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_every_dashboard_query_returns_data_from_the_live_exporter(stack: Stack, path: Path):
    stack.prometheus.wait_for('count_over_time(up{job="msgsms-exporter"}[1m]) >= 4')
    stack.prometheus.wait_for("increase(msgsms_messages_sent_total[1m]) > 0")
    empty = []
    for query in dashboard_expressions(path, {"exporter_url": stack.exporter_url}):
        result = stack.prometheus.query(query.expr) or stack.prometheus.query_range(
            query.expr, seconds=60, step="2s"
        )
        if not result and not metric_names(query.expr) & set(KNOWN_GAPS):
            empty.append((query.panel_title, query.ref_id, query.expr))
    assert empty == [], "\n".join(map(str, empty))


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_every_dashboard_metric_is_in_the_live_exposition(stack: Stack, path: Path):
    exposition = httpx.get(f"{stack.exporter_url}/metrics", timeout=10).text
    exposed = exposition_metric_names(exposition) | PROMETHEUS_SERIES
    missing = {
        (query.panel_title, name)
        for query in dashboard_expressions(path)
        for name in metric_names(query.expr)
        if name not in exposed and name not in KNOWN_GAPS
    }
    assert sorted(missing) == []


def test_known_gaps_are_still_missing_from_the_live_exposition(stack: Stack):
    """When a gap is closed this fails: delete its KNOWN_GAPS entry."""
    exposition = httpx.get(f"{stack.exporter_url}/metrics", timeout=10).text
    assert set(KNOWN_GAPS) & exposition_metric_names(exposition) == set()


def test_shipped_rules_keep_their_minute_long_for_durations():
    durations = re.findall(r"(?m)^\s+for:\s*(\S+)", RULES.read_text())
    assert durations and all(d.endswith("m") for d in durations)
