"""A late registration moves a counted message: the windows follow, the counters do not
count it twice. Through the receiver on loopback, the store and the poller."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from conftest import Opener
from exposition import exported_window, samples, total

from exporter.app import Exporter
from exporter.config import Attribution, Config, ReceiverConfig, Secret, push_account
from exporter.ledger import Growth, NetGrowth
from exporter.pushitems import SendRegistration, StatusReport
from exporter.ranges import minute_floor
from exporter.records import DetailsQuery, SendResult
from exporter.status_codes import StatusCategory
from exporter.timestamps import format_rfc3339

SETTLE = 180.0


@dataclass
class Running:
    exporter: Exporter
    http: httpx.Client
    base: str
    clock: list[float]

    def post(self, path: str, items: object) -> None:
        body = json.dumps(items).encode()
        headers = {"Content-Type": "application/json"}
        answer = self.http.post(f"{self.base}{path}", content=body, headers=headers)
        assert answer.status_code == 200, answer.text

    def report(self, message_id: str, status: str, at: float, extend: str = "") -> None:
        item = {"smsMsgId": message_id, "status": status, "updateTime": format_rfc3339(at)}
        self.post("/push/status-reports", {"statusReportList": [item | {"extend": extend}]})

    def register(self, message_id: str, template_id: str, sent: float) -> None:
        item = {"message_id": message_id, "template_id": template_id}
        self.post("/push/sends", [item | {"send_time": format_rfc3339(sent)}])

    def poll(self) -> dict[str, Any]:
        """Poll; the exported 1h window and the counters."""
        assert self.exporter.poll_once()
        found = samples(self.exporter.exposition_text())
        window = {t: w for t, w in exported_window(found).items() if _counts(w)}
        sent = {
            dict(k)["template"]: int(v) for k, v in found["msgsms_messages_sent_total"].items() if v
        }
        finalized = int(total(found, "msgsms_messages_finalized_total"))
        return {"window": window, "sent": sent, "finalized": finalized}

    def truth(self) -> dict[str, dict[str, Any]]:
        """The store's messages in the window the exporter reports, as it exports them."""
        store = self.exporter.push_store
        assert store is not None
        end = minute_floor(self.clock[0] - SETTLE)
        query = DetailsQuery(end - 3600, end, limit=1000)
        out: dict[str, dict[str, Any]] = {}
        for record in store.account_view("push").query(query).records:
            counts = out.setdefault(
                record.template_id,
                {"success": 0, "failed": 0, "sending": 0, "status_codes": {}},
            )
            counts[record.send_result.value] += 1
            if record.send_result is not SendResult.SENDING:
                codes = counts["status_codes"]
                codes[record.status_code] = codes.get(record.status_code, 0) + 1
        return out


def _counts(window: dict[str, Any]) -> int:
    return sum(v for k, v in window.items() if k != "status_codes")


@pytest.fixture(params=["sqlite", "postgres"])
def running(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Running]:
    if request.param == "sqlite":
        receiver = ReceiverConfig(
            store_path=str(tmp_path / "push.db"), attribution=Attribution.EXTEND
        )
    else:
        url = request.getfixturevalue("postgres_url")
        receiver = ReceiverConfig(
            store_path="", store_url=Secret(url), attribution=Attribution.EXTEND
        )
    config = Config(accounts=(push_account("push"),), receiver=receiver, settle_delay=SETTLE)
    # A minute relative to today (a fixed date would leave the retention), 30 s into it.
    clock = [minute_floor(time.time()) - 3600 + 30.0]
    with Exporter(config, clock=lambda: clock[0]) as exporter, httpx.Client() as http:
        host, port = exporter.start("127.0.0.1", 0)
        yield Running(exporter, http, f"http://{host}:{port}", clock)


def test_a_late_registration_moves_a_counted_message_in_the_window_not_the_counters(
    running: Running,
):
    minute = minute_floor(running.clock[0])
    # Reports first: one attributed by extend, one unattributed, one not final yet.
    running.report("moved-1", "DELIVRD", minute + 10, extend="MOVA")
    running.report("unknown-1", "UNDELIV", minute + 20)
    running.report("pending-1", "ACCEPTD", minute + 25, extend="MOVA")
    running.clock[0] = minute + 60 + SETTLE + 5  # the report's minute is counted
    first = running.poll()
    assert first["window"] == running.truth()
    assert first["window"] == {
        "MOVA": {"success": 1, "failed": 0, "sending": 1, "status_codes": {"DELIVRD": 1}},
        "unknown": {"success": 0, "failed": 1, "sending": 0, "status_codes": {"UNDELIV": 1}},
    }
    assert first["sent"] == {"MOVA": 2, "unknown": 1}
    assert first["finalized"] == 2

    # 75 s later the registrations come: another template, two minutes earlier (a minute
    # counted long ago); the unattributed one in its own minute; the pending one too.
    running.clock[0] += 75
    running.register("moved-1", "MOVB", minute - 120 + 5)
    running.register("unknown-1", "MOVC", minute + 15)
    running.register("pending-1", "MOVB", minute - 120 + 6)
    second = running.poll()
    assert second["window"] == running.truth()
    assert second["window"] == {
        "MOVB": {"success": 1, "failed": 0, "sending": 1, "status_codes": {"DELIVRD": 1}},
        "MOVC": {"success": 0, "failed": 1, "sending": 0, "status_codes": {"UNDELIV": 1}},
    }
    # Counted once each, where first counted.
    assert second["sent"] == {"MOVA": 2, "unknown": 1}
    assert second["finalized"] == 2

    # The moved pending message's final report is counted once, where it is now.
    running.report("pending-1", "DELIVRD", running.clock[0] - 10)
    running.clock[0] += 60
    third = running.poll()
    assert third["window"] == running.truth()
    assert third["window"]["MOVB"] == {
        "success": 2,
        "failed": 0,
        "sending": 0,
        "status_codes": {"DELIVRD": 2},
    }
    assert third["sent"] == {"MOVA": 2, "unknown": 1}
    assert third["finalized"] == 3
    running.clock[0] += 60
    assert running.poll() == third | {"window": running.truth()}


def test_a_registration_into_a_minute_with_new_messages_counts_only_those(running: Running):
    minute = minute_floor(running.clock[0])
    running.report("moved-1", "DELIVRD", minute + 10)
    running.register("old-1", "MOVB", minute - 180)
    running.report("old-1", "DELIVRD", minute - 170)
    running.clock[0] = minute + 60 + SETTLE + 5
    first = running.poll()
    assert first["sent"] == {"unknown": 1, "MOVB": 1}
    # A message registered late into a counted minute, and one moved there.
    running.register("late-1", "MOVB", minute - 175)
    running.register("moved-1", "MOVB", minute - 178)
    running.clock[0] += 30
    second = running.poll()
    assert second["window"] == running.truth()
    assert second["window"] == {
        "MOVB": {"success": 2, "failed": 0, "sending": 1, "status_codes": {"DELIVRD": 2}},
    }
    assert second["sent"] == {"unknown": 1, "MOVB": 2}
    assert second["finalized"] == 2


def test_the_store_records_a_move_only_for_a_message_it_held(open_store: Opener):
    now = float(minute_floor(time.time()))
    with closing(open_store()) as store:
        first = store.moved_since(None)
        store.register([SendRegistration("fresh", "tpl", now - 300)])
        store.add_reports([StatusReport("reported", "DELIVRD", update_time=now - 60)])
        store.register([SendRegistration("reported", "tpl", now - 590)])
        store.register([SendRegistration("reported", "other", now - 1200)])  # a duplicate
        moved = store.moved_since(first.cursor)
        again = store.moved_since(moved.cursor)
    assert first.minutes == set()
    assert moved.minutes == {int(now) - 60, int(now) - 600}
    assert again.minutes == set()


def test_net_growth_takes_what_moved_minutes_lost_from_what_they_gained():
    delivered = (SendResult.SUCCESS, StatusCategory.DELIVERED)
    net = NetGrowth()
    net.growth["MOVB"] = Growth(sent=2)
    net.growth["MOVB"].finalized[delivered] = 2
    net.lost.sent = 1
    net.lost.finalized[delivered] = 1
    kept = net.net()
    assert kept["MOVB"].sent == 1
    assert dict(kept["MOVB"].finalized) == {delivered: 1}
