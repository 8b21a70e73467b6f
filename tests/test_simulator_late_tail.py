"""The late tail against a real exporter: reports hours late leave windows and counters exact."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest
from conftest import Simulator, config_for
from simulator_process import simulator_process

from exporter.app import Exporter
from exporter.poller import Poller
from exporter.status_codes import categorize

SCENARIO = str(Path(__file__).parent / "fixtures" / "late-tail-scenario.yaml")
START = "2026-11-26T10:00:00Z"
TEMPLATES = ("TPL_LOGIN", "TPL_NOTIFY")


def _assert_windows_equal_truth(sim: Simulator, poller: Poller) -> None:
    assert poller.last.up
    for window in poller.last.windows:
        assert window.complete
        truth = sim.truth(window.start, window.end)
        for tw in window.templates:
            t = truth[tw.template_id]
            assert (tw.success, tw.failed, tw.sending) == (t["success"], t["failed"], t["sending"])
            assert {c.status_code: c.count for c in tw.codes} == t["status_codes"]
            assert tw.delay_sum == pytest.approx(t["delivery_delay_seconds_sum"], abs=1e-6)


def _finalized_by_category(poller: Poller, template_id: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for (template, _, category), n in poller.engine.book.counters.finalized.items():
        if template == template_id and n:
            out[str(category)] += n
    return out


def test_reports_hours_late_keep_windows_and_counters_equal_to_the_truth() -> None:
    args = ("--clock", "manual", "--start-time", START, "--history", "1h")
    with (
        simulator_process(*args, "--scenario.file", SCENARIO) as url,
        httpx.Client(timeout=30) as http,
    ):
        sim = Simulator(url, http)
        config = config_for(sim.url, windows=(3600.0, 4 * 3600.0))
        with Exporter(config, clock=sim.now) as exporter:
            poller = exporter.pollers[0]
            assert exporter.poll_once()
            first_start = poller.last.windows[0].start
            # Each minute for an hour and a half, then every 20 minutes for 7 hours: the
            # late reports arrive inside the 4 h window and long after the 1 h one.
            for step, polls in ((60, 90), (1200, 21)):
                for _ in range(polls):
                    sim.advance(step)
                    assert exporter.poll_once()
                    _assert_windows_equal_truth(sim, poller)
                if step == 60:  # the first half hour still waits for its late reports
                    waiting = sim.truth(first_start, first_start + 1800)
            for _ in range(2):  # every block of minutes past the windows has had its turn
                sim.advance(900)
                assert exporter.poll_once()
            end = poller.last.windows[0].end
            truth = sim.truth(first_start, end)
            settled = sim.truth(first_start, end - 6 * 3600)
    for template_id in TEMPLATES:
        early = waiting[template_id]
        assert early["sending"] > 0.01 * (early["success"] + early["failed"] + early["sending"])
        t = truth[template_id]
        # Nothing sent more than 6 h ago is pending (only the 1 % that expire at 72 h) ...
        old = settled[template_id]
        assert old["sending"] <= 0.02 * (old["success"] + old["failed"] + old["sending"])
        # ... and every message final by now is counted once, under its code's category.
        expected: Counter[str] = Counter()
        for code, n in t["status_codes"].items():
            expected[categorize(code).value] += n
        assert _finalized_by_category(poller, template_id) == expected, template_id


def test_late_reports_of_a_template_deleted_upstream_leave_the_polls_up_and_exact() -> None:
    # Across templates the exporter follows the pending messages of every template its
    # reads return, a deleted one's too. One of those resolving past the window was read
    # by its template, which answers 404: every poll failed from then on, for as long as
    # any was followed (up to 72 h), and every template's window was withdrawn.
    args = ("--clock", "manual", "--start-time", START, "--history", "1h")
    with (
        simulator_process(*args, "--scenario.file", SCENARIO, "--rate-limit", "0") as url,
        httpx.Client(timeout=30) as http,
    ):
        sim = Simulator(url, http)
        with Exporter(config_for(sim.url), clock=sim.now) as exporter:
            poller = exporter.pollers[0]
            assert exporter.poll_once()
            rule = {"fault": "template_deleted", "template_id": "TPL_NOTIFY"}
            sim.post("/-/faults", {"rules": [rule]})
            for _ in range(11):  # the template list is read again within 10 minutes
                sim.advance(60)
                exporter.poll_once()
            for step, polls in ((60, 60), (1200, 12)):
                for _ in range(polls):
                    sim.advance(step)
                    assert exporter.poll_once()
                    assert [t.template_id for t in poller.last.windows[0].templates] == [
                        "TPL_LOGIN"
                    ]
                    _assert_windows_equal_truth(sim, poller)
