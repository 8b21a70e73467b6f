"""Who may read the record-level pages: ``/details`` and the details API off loopback.

Each record shows a masked number, the message id, the template and times: off loopback
without basic auth they are withheld (``/details``, 403 naming the fix) or refuse the
start (``receiver.details_api``) unless the operator opts in with
``--web.details-unauthenticated``. Through a real server listening on every address
(``0.0.0.0``), reached on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import bcrypt
import httpx
import pytest
from exposition import Samples, samples, value
from prometheus_client import CollectorRegistry, generate_latest
from structlog.testing import capture_logs

from exporter.app import Exporter
from exporter.cli import main
from exporter.config import Config, ReceiverConfig, push_account
from exporter.errors import ConfigError
from exporter.webconfig import WebConfig
from exporter.webstats import HttpCollector

PASSWORD = "details-pass-51"
USERS = {"ops": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4))}
WITHHELD = (
    "the sending-details page shows message records and is not served without credentials"
    " on 0.0.0.0: set basic_auth_users in --web.config.file, or listen on loopback only"
    " (--web.listen-address 127.0.0.1:PORT; other hosts through a proxy that authenticates),"
    " or pass --web.details-unauthenticated to serve it to anyone who reaches the port\n"
)
API_REFUSAL = (
    "receiver.details_api: /api/v1/send-details on 0.0.0.0 would serve message records to"
    " anyone: set basic_auth_users in --web.config.file, or listen on loopback only"
    " (--web.listen-address 127.0.0.1:PORT; other hosts through a proxy that authenticates),"
    " or pass --web.details-unauthenticated to serve them to anyone"
)
OPTED_IN = (
    "the sending-details pages serve message records to anyone (--web.details-unauthenticated)"
)


def _http_counters(exporter: Exporter) -> Samples:
    """The HTTP layer's counters now (the scrape's live part may be 100 ms old)."""
    registry = CollectorRegistry()
    registry.register(HttpCollector(exporter.http_stats))
    return samples(generate_latest(registry))


def _config(tmp_path: Path, **receiver: object) -> Config:
    rc = ReceiverConfig(store_path=str(tmp_path / "push.db"), allow_unsigned=True)
    return Config(accounts=(push_account("push"),), receiver=replace(rc, **receiver))  # type: ignore[arg-type]


@contextmanager
def _serving(
    tmp_path: Path,
    host: str = "0.0.0.0",
    web: WebConfig = WebConfig(),  # noqa: B008 - frozen
    details_open: bool = False,
    **receiver: object,
) -> Iterator[tuple[Exporter, str]]:
    with Exporter(_config(tmp_path, **receiver)) as exporter:
        _, port = exporter.start(host, 0, web=web, details_open=details_open)
        yield exporter, f"http://127.0.0.1:{port}"


def test_details_off_loopback_without_basic_auth_is_withheld_naming_the_fix(tmp_path: Path):
    with capture_logs() as logs, _serving(tmp_path) as (exporter, base):
        details = httpx.get(f"{base}/details", params={"last": "1h"})
        metrics = httpx.get(f"{base}/metrics")
        exposition = _http_counters(exporter)
    assert (details.status_code, details.text) == (403, WITHHELD)
    assert metrics.status_code == 200  # /metrics stays open, as Prometheus exporters' do
    rejected = "msgsms_http_requests_rejected_total"
    assert value(exposition, rejected, reason="details_withheld") == 1
    started = [e for e in logs if e["event"].startswith("sending-details pages withheld")]
    assert [(e["host"], e["paths"]) for e in started] == [("0.0.0.0", ["/details"])]


def test_the_landing_page_says_why_its_details_links_answer_403_while_they_do(tmp_path: Path):
    note = '<p class="note details-withheld">The sending-details page shows message records'
    with _serving(tmp_path) as (_, base):
        withheld = httpx.get(f"{base}/").text
    with _serving(tmp_path, host="127.0.0.1") as (_, base):
        on_loopback = httpx.get(f"{base}/").text
    with _serving(tmp_path, web=WebConfig(users=USERS)) as (_, base):
        guarded = httpx.get(f"{base}/", auth=("ops", PASSWORD)).text
    assert note in withheld and "--web.listen-address 127.0.0.1:PORT" in withheld
    assert note not in on_loopback and note not in guarded


def test_details_on_loopback_needs_no_credentials(tmp_path: Path):
    with _serving(tmp_path, host="127.0.0.1") as (_, base):
        assert httpx.get(f"{base}/details", params={"last": "1h"}).status_code == 200


def test_details_off_loopback_is_served_behind_basic_auth(tmp_path: Path):
    with _serving(tmp_path, web=WebConfig(users=USERS)) as (_, base):
        anonymous = httpx.get(f"{base}/details", params={"last": "1h"})
        user = httpx.get(f"{base}/details", params={"last": "1h"}, auth=("ops", PASSWORD))
    assert (anonymous.status_code, user.status_code) == (401, 200)


def test_the_opt_in_serves_details_to_anyone_and_warns_at_every_start_and_reload(
    tmp_path: Path,
):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        "accounts: [{name: push, source: push, templates: {discover: true}}]\n"
        f"receiver: {{store_path: {tmp_path / 'push.db'}, allow_unsigned: true}}\n"
    )
    with capture_logs() as logs, _serving(tmp_path, details_open=True) as (exporter, base):
        details = httpx.get(f"{base}/details", params={"last": "1h"})
        exporter.config_file = str(config_file)
        assert exporter.reload_from_file() == []
    assert details.status_code == 200
    warnings = [e for e in logs if e["event"] == OPTED_IN]
    assert [(e["log_level"], e["host"]) for e in warnings] == [("warning", "0.0.0.0")] * 2


def test_the_details_api_off_loopback_without_credentials_refuses_the_start(tmp_path: Path):
    with Exporter(_config(tmp_path, details_api=True)) as exporter:
        with pytest.raises(ConfigError) as refused:
            exporter.start("0.0.0.0", 0)
        _, port = exporter.start("0.0.0.0", 0, web=WebConfig(users=USERS))  # guarded: allowed
        api = f"http://127.0.0.1:{port}/api/v1/send-details"
        anonymous = httpx.get(api, params={"start_time": "x"})
    assert refused.value.problems == [API_REFUSAL]
    assert anonymous.status_code == 401


def test_check_config_refuses_the_details_api_off_loopback_without_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        "accounts: [{name: push, source: push, templates: {discover: true}}]\n"
        f"receiver: {{store_path: {tmp_path / 'push.db'}, allow_unsigned: true,"
        " details_api: true}\n"
    )
    check = ["--config.file", str(config_file), "--check-config"]
    assert main([*check, "--web.listen-address", ":9170"]) == 1
    # Located at the line of the key to change, as a parse's problems are.
    assert f"  {config_file}:2: {API_REFUSAL}\n" in capsys.readouterr().err
    assert main([*check, "--web.listen-address", "127.0.0.1:9170"]) == 0
    assert main([*check, "--web.listen-address", ":9170", "--web.details-unauthenticated"]) == 0


def test_a_web_config_reload_without_users_withholds_details_and_keeps_a_guarded_api(
    tmp_path: Path,
):
    hashed = USERS["ops"].decode()
    web_file = tmp_path / "web.yml"
    web_file.write_text(f"basic_auth_users: {{ops: '{hashed}'}}\n")
    config_file = tmp_path / "config.yaml"
    receiver = f"store_path: {tmp_path / 'push.db'}, allow_unsigned: true"
    config_file.write_text(
        "accounts: [{name: push, source: push, templates: {discover: true}}]\n"
        f"receiver: {{{receiver}}}\n"
    )
    with _serving(tmp_path, web=WebConfig(users=USERS)) as (exporter, base):
        exporter.config_file, exporter.web_config_file = str(config_file), str(web_file)
        web_file.write_text("{}\n")
        assert exporter.reload_from_file() == []
        withheld = httpx.get(f"{base}/details", params={"last": "1h"})
    assert (withheld.status_code, withheld.text) == (403, WITHHELD)
    with _serving(tmp_path, web=WebConfig(users=USERS), details_api=True) as (exporter, base):
        config_file.write_text(
            config_file.read_text().replace(receiver, receiver + ", details_api: true")
        )
        web_file.write_text(f"basic_auth_users: {{ops: '{hashed}'}}\n")
        exporter.config_file, exporter.web_config_file = str(config_file), str(web_file)
        web_file.write_text("{}\n")
        assert exporter.reload_from_file() == [API_REFUSAL]
        still_guarded = httpx.get(f"{base}/details", params={"last": "1h"})
    assert still_guarded.status_code == 401  # the old users stay
