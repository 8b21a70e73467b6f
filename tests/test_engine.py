"""The incremental engine through the exporter, over HTTP, against the simulator's truth.

The engine's scenarios (settle delays, full scan, per-template reads, late and expiring
reports, cost) run in process in ``test_engine_polls.py``; here one of them runs end to
end through a simulator subprocess, with what only the exporter does: reloads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from conftest import Simulator, account_for, config_for
from simulator_process import simulator_process

from exporter.app import Exporter
from exporter.config import Config, TemplateSelection
from exporter.poller import Poller
from exporter.ranges import coalesce, spans_within

SCENARIO = str(Path(__file__).parent / "fixtures" / "holds-scenario.yaml")
START = "2026-11-26T10:00:00Z"


@pytest.fixture
def hold_simulator() -> Iterator[Simulator]:
    args = (
        "--clock",
        "manual",
        "--start-time",
        START,
        "--history",
        "2h",
        "--scenario.file",
        SCENARIO,
    )
    with simulator_process(*args) as url, httpx.Client(timeout=30) as http:
        yield Simulator(url, http)


def _poller(exporter: Exporter) -> Poller:
    return exporter.pollers[0]


def _assert_windows_equal_truth(sim: Simulator, poller: Poller) -> None:
    snapshot = poller.last
    assert snapshot.up
    for window in snapshot.windows:
        assert window.complete
        truth = sim.truth(window.start, window.end)
        for tw in window.templates:
            t = truth[tw.template_id]
            assert (tw.success, tw.failed, tw.sending) == (
                t["success"],
                t["failed"],
                t["sending"],
            ), (
                window.name,
                tw.template_id,
            )
            assert {c.status_code: c.count for c in tw.codes} == t["status_codes"]
            assert tw.delay_sum == pytest.approx(t["delivery_delay_seconds_sum"], abs=1e-9)


def _poll_minutes(sim: Simulator, exporter: Exporter, minutes: int, *, check: bool) -> None:
    """Advance the simulator a minute at a time, polling each; ``check``: against truth."""
    for _ in range(minutes):
        sim.advance(60)
        assert exporter.poll_once()
        if check:
            _assert_windows_equal_truth(sim, _poller(exporter))


def test_every_window_equals_truth_at_every_poll_through_holds_and_late_statuses(
    hold_simulator: Simulator,
):
    sim = hold_simulator
    config = config_for(sim.url, settle_delay=60.0, windows=(1800.0, 3600.0, 7200.0))
    with Exporter(config, clock=sim.now) as exporter:
        appeared_late = 0
        previous: tuple[float, float, int] | None = None
        for _ in range(90):
            _poll_minutes(sim, exporter, 1, check=True)
            window = _poller(exporter).last.windows[-1]
            if previous is not None:
                start, end, count = previous
                now_count = sum(
                    sum(v[k] for k in ("success", "failed", "sending"))
                    for v in sim.truth(start, end).values()
                )
                appeared_late += now_count > count
            truth = sim.truth(window.start, window.end)
            previous = (
                window.start,
                window.end,
                sum(sum(v[k] for k in ("success", "failed", "sending")) for v in truth.values()),
            )
    # Held messages really appeared late in ranges already counted, and were caught.
    assert appeared_late > 0


def _finalized(poller: Poller, template_id: str) -> int:
    counters = poller.engine.book.counters
    return sum(n for (t, _, _), n in counters.finalized.items() if t == template_id)


def _final_in(truth: dict, template_id: str) -> int:
    t = truth.get(template_id, {"success": 0, "failed": 0})
    return int(t["success"] + t["failed"])


def _selecting(sim: Simulator, *template_ids: str) -> Config:
    """One template at a time (an explicit list), so each read covers only those."""
    account = replace(account_for(sim.url), templates=TemplateSelection(ids=template_ids))
    return Config(accounts=(account,), top_status_codes=100, settle_delay=0.0)


def test_a_template_selected_later_is_read_for_the_whole_window(hold_simulator: Simulator):
    sim = hold_simulator
    with Exporter(_selecting(sim, "TPL_LOGIN"), clock=sim.now) as exporter:
        poller = _poller(exporter)
        _poll_minutes(sim, exporter, 5, check=False)
        assert not poller.engine.settings.cross_template
        exporter.reload(_selecting(sim, "TPL_LOGIN", "TPL_NOTIFY"))
        _poll_minutes(sim, exporter, 1, check=False)
        # The minutes already read for TPL_LOGIN were read again for TPL_NOTIFY alone.
        _assert_windows_equal_truth(sim, poller)
        window = poller.last.windows[0]
        t = sim.truth(window.start, window.end)["TPL_NOTIFY"]
        assert (
            poller.engine.book.counters.sent["TPL_NOTIFY"]
            == t["success"] + t["failed"] + t["sending"]
        )
        _poll_minutes(sim, exporter, 3, check=True)


def test_a_template_no_longer_selected_is_no_longer_queried(hold_simulator: Simulator):
    sim = hold_simulator
    with Exporter(_selecting(sim, "TPL_LOGIN", "TPL_PROMO"), clock=sim.now) as exporter:
        poller = _poller(exporter)
        delayed = {"template_id": "TPL_PROMO", "carrier_delay_seconds": 4000}
        sim.post("/-/incidents", {**delayed, "duration_seconds": 600})
        sim.advance(600)
        assert exporter.poll_once()
        assert any(p.template_id == "TPL_PROMO" for p in poller.engine.book.pending.values())
        exporter.reload(_selecting(sim, "TPL_LOGIN"))
        # Deleted upstream, its details answer 404: its pending messages are not followed.
        rule = {"fault": "template_deleted", "template_id": "TPL_PROMO", "not_found": True}
        sim.post("/-/faults", {"rules": [rule]})
        _poll_minutes(sim, exporter, 3, check=True)


def test_coalesced_ranges_never_span_more_than_a_query_may():
    hour = 3600.0
    times = [0.0, hour, 2 * hour, 30 * hour, 31 * hour]
    # Sparse enough that density alone would put all five in one range.
    ranges = coalesce(times, density=1e-6, page_size=100, max_span=24 * hour)
    assert [(a, round(b, 3)) for a, b in ranges] == [
        (0.0, 2 * hour + 0.001),
        (30 * hour, 31 * hour + 0.001),
    ]
    assert all(b - a <= 24 * hour for a, b in ranges)


def test_minutes_are_grouped_into_spans_a_query_may_cover():
    day = 24 * 3600
    minutes = [0, 60, day - 60, day, day + 60, 3 * day]
    assert spans_within(minutes, day) == [[0, 60, day - 60], [day, day + 60], [3 * day]]


def test_a_window_grown_on_reload_reads_back_without_counting_anything_twice(
    hold_simulator: Simulator,
):
    sim = hold_simulator
    with Exporter(config_for(sim.url, settle_delay=0.0), clock=sim.now) as exporter:
        poller = _poller(exporter)
        _poll_minutes(sim, exporter, 1, check=False)
        first_start = poller.last.windows[0].start
        _poll_minutes(sim, exporter, 90, check=False)
        exporter.reload(config_for(sim.url, settle_delay=0.0, windows=(3600.0, 7200.0)))
        _poll_minutes(sim, exporter, 3, check=True)
        end = poller.last.windows[-1].end
        # The 2 h window starts after the exporter's first window did: every minute read
        # back had been counted before it left the 1 h window.
        assert end - 7200 > first_start
        truth = sim.truth(first_start, end)
    for template_id, t in truth.items():
        assert (
            poller.engine.book.counters.sent[template_id]
            == t["success"] + t["failed"] + t["sending"]
        )
        assert _finalized(poller, template_id) == _final_in(truth, template_id)


def test_a_day_window_backfilled_under_a_small_budget_becomes_complete_and_exact() -> None:
    # The first hold check after a backfill checked every minute read, back to the start
    # of the day; its bisection needed more than a poll's budget, started over every
    # poll, and the windows stayed incomplete for good. Only minutes read while a held
    # message could still appear in them need it: those since the first poll's horizon.
    args = ("--clock", "manual", "--start-time", START, "--history", "25h", "--scale", "0.02")
    with (
        simulator_process(*args, "--rate-limit", "0") as url,
        httpx.Client(timeout=30) as http,
    ):
        sim = Simulator(url, http)
        config = config_for(url, windows=(3600.0, 86400.0), request_budget=25)
        with Exporter(config, clock=sim.now) as exporter:
            _poll_minutes(sim, exporter, 12, check=False)  # the day needs 5 polls' budget
            _poll_minutes(sim, exporter, 3, check=True)
