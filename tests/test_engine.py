"""The incremental engine against the simulator's truth: holds, late statuses, windows, cost."""

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


@pytest.mark.parametrize(
    "overrides",
    [
        {"settle_delay": 0.0},
        {"settle_delay": 120.0},
        {"settle_delay": 0.0, "engine": "full_scan"},
        {"settle_delay": 60.0, "windows": (1800.0, 3600.0, 7200.0)},
    ],
    ids=["settle-0", "settle-2m", "full-scan", "three-windows"],
)
def test_every_window_equals_truth_at_every_poll_through_holds_and_late_statuses(
    hold_simulator: Simulator, overrides: dict
):
    sim = hold_simulator
    with Exporter(config_for(sim.url, **overrides), clock=sim.now) as exporter:
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


def _delay_login_reports(sim: Simulator) -> None:
    """Five minutes of TPL_LOGIN messages whose status reports come 4000 s late."""
    incident = {"template_id": "TPL_LOGIN", "carrier_delay_seconds": 4000, "duration_seconds": 300}
    sim.post("/-/incidents", incident)


def test_a_message_resolving_after_an_hour_is_counted_once(hold_simulator: Simulator):
    sim = hold_simulator
    config = config_for(sim.url, settle_delay=0.0, windows=(3600.0, 7200.0))
    with Exporter(config, clock=sim.now) as exporter:
        _poll_minutes(sim, exporter, 1, check=False)
        _delay_login_reports(sim)
        _poll_minutes(sim, exporter, 75, check=True)
        login = next(
            t for t in _poller(exporter).last.windows[-1].templates if t.template_id == "TPL_LOGIN"
        )
        assert login.sending > 0  # delayed for 4000 s: still pending after 75 minutes
        before = _poller(exporter).engine.book.counters.finalized.copy()
        _poll_minutes(sim, exporter, 10, check=True)
        login = next(
            t for t in _poller(exporter).last.windows[-1].templates if t.template_id == "TPL_LOGIN"
        )
        after = _poller(exporter).engine.book.counters.finalized
        assert sum(after.values()) > sum(before.values())


def test_incremental_polls_cost_a_fraction_of_a_full_scan(hold_simulator: Simulator):
    sim = hold_simulator
    incremental = Exporter(config_for(sim.url, settle_delay=120.0), clock=sim.now)
    full = Exporter(config_for(sim.url, settle_delay=120.0, engine="full_scan"), clock=sim.now)
    with incremental, full:
        for exporter in (incremental, full):
            exporter.poll_once()  # backfill
        base = [_poller(e).source.stats.request_count for e in (incremental, full)]
        for _ in range(20):
            sim.advance(60)
            assert incremental.poll_once()
            assert full.poll_once()
        cost = [
            _poller(e).source.stats.request_count - b
            for e, b in zip((incremental, full), base, strict=True)
        ]
    assert cost[0] * 2 < cost[1], cost


def _finalized(poller: Poller, template_id: str) -> int:
    counters = poller.engine.book.counters
    return sum(n for (t, _, _), n in counters.finalized.items() if t == template_id)


def _final_in(truth: dict, template_id: str) -> int:
    t = truth.get(template_id, {"success": 0, "failed": 0})
    return int(t["success"] + t["failed"])


def test_a_message_resolving_after_its_minute_left_the_window_is_counted_final(
    hold_simulator: Simulator,
):
    sim = hold_simulator
    config = config_for(sim.url, settle_delay=0.0, windows=(3600.0,))
    with Exporter(config, clock=sim.now) as exporter:
        _poll_minutes(sim, exporter, 1, check=False)
        first_start = _poller(exporter).last.windows[0].start
        _delay_login_reports(sim)
        # 85 minutes, then a quarter hour for the last late block check.
        _poll_minutes(sim, exporter, 85 + 15, check=False)
        poller = _poller(exporter)
        end = poller.last.windows[0].end
        truth = sim.truth(first_start, end)
    # Delayed 4000 s, the incident's messages were still pending when their minutes left
    # the 1 h window; they resolved later and are counted, each once, as every other.
    for template_id in ("TPL_LOGIN", "TPL_NOTIFY", "TPL_PROMO"):
        assert _finalized(poller, template_id) == _final_in(truth, template_id), template_id
        t = truth[template_id]
        assert (
            poller.engine.book.counters.sent[template_id]
            == t["success"] + t["failed"] + t["sending"]
        )


def test_messages_never_reported_are_counted_final_when_they_expire_after_72_hours():
    scenario = str(Path(__file__).parent / "fixtures" / "late-reports-scenario.yaml")
    args = ("--clock", "manual", "--start-time", START, "--history", "1h")
    with (
        simulator_process(*args, "--scenario.file", scenario) as url,
        httpx.Client(timeout=30) as http,
    ):
        sim = Simulator(url, http)
        config = config_for(sim.url, settle_delay=0.0, windows=(3600.0,))
        with Exporter(config, clock=sim.now) as exporter:
            assert exporter.poll_once()
            poller = _poller(exporter)
            first_start = poller.last.windows[0].start
            pending_peak = 0
            for _ in range(2 * 75):
                sim.advance(1800)
                assert exporter.poll_once()
                assert poller.last.windows[0].complete
                pending_peak = max(pending_peak, poller.engine.book.pending_count())
            for _ in range(4):  # every block of late minutes has had its turn
                assert exporter.poll_once()
            end = poller.last.windows[0].end
            truth = sim.truth(first_start, end)
            expired_early = sim.truth(first_start, end - 72 * 3600)
            oldest = min(poller.engine.book.late)
    for template_id in ("TPL_LOGIN", "TPL_NOTIFY"):
        # Everything sent more than 72 h ago is final now (EXPIRED at the latest) ...
        assert expired_early[template_id]["sending"] == 0
        # ... and every final message since the exporter started is counted, once.
        assert _finalized(poller, template_id) == _final_in(truth, template_id), template_id
    # Pending messages are followed for 72 h and a quarter, not longer.
    assert oldest >= end - 72 * 3600 - 15 * 60
    assert 0 < pending_peak < 0.06 * 180 * 73


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
