"""The receiver's own health metrics: store writes, errors, size and when pushes last came."""

from __future__ import annotations

import json
from pathlib import Path

from exposition import samples, value
from prometheus_client import CollectorRegistry, generate_latest
from promtool import FIXTURE_EXPOSITION, exposition_metric_names

from exporter.config import ReceiverConfig
from exporter.receiver import Receiver
from exporter.sqlitestore import PushStore
from exporter.timestamps import parse_rfc3339
from exporter.web import Request, Router

STARTED = parse_rfc3339("2026-11-26T11:00:00Z")
JSON = {"content-type": "application/json"}
PATHS = {
    "single": "/push/{account}/status-report",
    "batch": "/push/{account}/status-reports",
    "sends": "/push/{account}/sends",
}


def _receiver(store: PushStore, clock: list[float]) -> tuple[Receiver, Router]:
    config = ReceiverConfig(
        store_path=store.path,
        single_path=PATHS["single"],
        batch_path=PATHS["batch"],
        sends_path=PATHS["sends"],
    )
    receiver = Receiver(config, store, clock=lambda: clock[0], accounts=("shop", "bank"))
    router = Router()
    receiver.add_routes(router)
    return receiver, router


def _exposed(receiver: Receiver) -> dict:
    registry = CollectorRegistry()
    registry.register(receiver.collector())
    return samples(generate_latest(registry))


def _post(router: Router, path: str, doc: object) -> int:
    return router.dispatch(Request("POST", path, {}, JSON, json.dumps(doc).encode())).status


def _report(message_id: str) -> dict:
    return {"statusReportList": [{"smsMsgId": message_id, "status": "DELIVRD"}]}


def test_last_push_times_start_at_start_and_follow_each_accounts_pushes(tmp_path: Path):
    clock = [STARTED]
    with PushStore(tmp_path / "push.db", clock=lambda: clock[0]) as store:
        receiver, router = _receiver(store, clock)
        clock[0] = STARTED + 120
        assert _post(router, "/push/shop/status-reports", _report("m1")) == 200
        clock[0] = STARTED + 180
        sends = [{"message_id": "m2", "template_id": "t", "send_time": "2026-11-26T11:02:00Z"}]
        assert _post(router, "/push/bank/sends", sends) == 200
        clock[0] = STARTED + 240
        assert _post(router, "/push/bank/status-reports", {"statusReportList": []}) == 400
        found = _exposed(receiver)
    report, registration = (
        "msgsms_push_last_report_timestamp_seconds",
        "msgsms_push_last_registration_timestamp_seconds",
    )
    assert found[report] == {(("account", "bank"),): STARTED, (("account", "shop"),): STARTED + 120}
    assert found[registration] == {
        (("account", "bank"),): STARTED + 180,
        (("account", "shop"),): STARTED,
    }


def test_reports_and_registrations_are_counted_per_account(tmp_path: Path):
    # What MsgsmsPushReportsMissing compares, per account: a busy account's reports must
    # not hide a quiet one whose reports stopped.
    clock = [STARTED]
    with PushStore(tmp_path / "push.db", clock=lambda: clock[0]) as store:
        receiver, router = _receiver(store, clock)
        sends = [{"message_id": "m2", "template_id": "t", "send_time": "2026-11-26T10:59:00Z"}]
        assert _post(router, "/push/bank/sends", sends) == 200
        assert _post(router, "/push/shop/status-reports", _report("m1")) == 200
        found = _exposed(receiver)
    assert found["msgsms_push_reports_total"] == {
        (("account", "bank"), ("kind", "batch")): 0,
        (("account", "bank"), ("kind", "single")): 0,
        (("account", "shop"), ("kind", "batch")): 1,
        (("account", "shop"), ("kind", "single")): 0,
    }
    assert found["msgsms_push_registrations_total"] == {
        (("account", "bank"),): 1,
        (("account", "shop"),): 0,
    }


def test_store_writes_are_timed_and_failed_writes_counted(tmp_path: Path):
    clock = [STARTED]
    store = PushStore(tmp_path / "push.db", clock=lambda: clock[0])
    receiver, router = _receiver(store, clock)
    assert _post(router, "/push/shop/status-reports", _report("m1")) == 200
    assert _post(router, "/push/shop/status-reports", _report("m1")) == 200
    size = value(_exposed(receiver), "msgsms_push_store_size_bytes")
    store.close()
    assert _post(router, "/push/shop/status-reports", _report("m2")) == 503
    found = _exposed(receiver)
    writes = "msgsms_push_store_write_duration_seconds_count"
    assert value(found, writes, operation="reports") == 3
    assert value(found, "msgsms_push_store_errors_total", operation="reports") == 1
    assert value(found, "msgsms_push_store_errors_total", operation="registrations") == 0
    assert value(found, "msgsms_push_rejected_total", reason="store_unavailable") == 1
    assert size > 0 and size % 1024 == 0  # whole SQLite pages (1 KiB in a new store)


def test_the_fixture_exposition_has_every_family_the_receiver_exposes(tmp_path: Path):
    """Dashboards and rules are checked against the fixture: it must not miss a family."""
    clock = [STARTED]
    with PushStore(tmp_path / "push.db", clock=lambda: clock[0]) as store:
        receiver, router = _receiver(store, clock)
        _post(router, "/push/shop/status-reports", _report("m1"))
        _post(router, "/push/shop/sends", [{}])
        registry = CollectorRegistry()
        registry.register(receiver.collector())
        live = exposition_metric_names(generate_latest(registry).decode())
    fixture = exposition_metric_names(FIXTURE_EXPOSITION.read_text())
    assert {n for n in fixture if n.startswith("msgsms_push_")} == live
