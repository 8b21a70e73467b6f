"""The engine polled in process over the simulator's store: exact at every poll, and cheap.

No subprocess and no socket (see ``store_source.py``): these run in seconds, and guard
the engine's behaviour while its parts move. ``test_engine.py`` covers the same ground
end to end, over HTTP, through the exporter.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from store_source import ACCOUNT, StoreSource

from exporter.budget import Step
from exporter.config import Config
from exporter.engine import Engine, EngineSettings
from exporter.records import DetailsPage, DetailsQuery, parse_page
from exporter.simulator.api import send_details

FIXTURES = Path(__file__).parent / "fixtures"
HOLDS = FIXTURES / "holds-scenario.yaml"
LATE = FIXTURES / "late-reports-scenario.yaml"
DENSE = FIXTURES / "dense-scenario.yaml"
LONG_HOLDS = FIXTURES / "long-holds-scenario.yaml"
HOURS_HOLDS = FIXTURES / "hours-holds-scenario.yaml"
VERY_LATE = FIXTURES / "very-late-scenario.yaml"


def _config(**overrides: Any) -> Config:
    return replace(Config(accounts=(ACCOUNT,), top_status_codes=100), **overrides)


def _engine(config: Config, *, cross_template: bool = True) -> Engine:
    settings = EngineSettings.of(config, ACCOUNT)
    return Engine(replace(settings, cross_template=settings.cross_template and cross_template))


def _window_end(engine: Engine) -> int:
    assert engine.book.end is not None
    return engine.book.end


def _assert_equals_truth(engine: Engine, source: StoreSource, config: Config) -> None:
    end = _window_end(engine)
    for length in config.windows:
        start = end - int(length)
        assert engine.book.unread_minutes(start, end) == 0
        truth = source.truth(start, end)
        for template_id in source.template_ids:
            tally = engine.book.window(template_id, start, end)
            t = truth[template_id]
            got = (tally.success, tally.failed, tally.sending, dict(tally.codes))
            want = (t["success"], t["failed"], t["sending"], t["status_codes"])
            assert got == want, (length, template_id)
            delay = t["delivery_delay_seconds_sum"]
            assert tally.delay_sum_ms == pytest.approx(delay * 1000, abs=1e-6)


def _final(truth: dict[str, Any], template_id: str) -> int:
    return int(truth[template_id]["success"] + truth[template_id]["failed"])


def _finalized(engine: Engine, template_id: str) -> int:
    return sum(n for (t, _, _), n in engine.book.counters.finalized.items() if t == template_id)


def _started(scenario: Path, **overrides: Any) -> tuple[StoreSource, Config, Engine, int]:
    """A source with an hour of history, an engine polled once, and its first window start."""
    source = StoreSource(scenario, history=3600.0)
    config = _config(**overrides)
    engine = _engine(config)
    engine.poll(source, source.template_ids, source.now)
    return source, config, engine, _window_end(engine) - 3600


def _poll(engine: Engine, source: StoreSource, minutes: int = 1) -> None:
    for _ in range(minutes):
        source.advance(60)
        outcome = engine.poll(source, source.template_ids, source.now)
        assert outcome.checks_done


@pytest.mark.parametrize(
    ("overrides", "cross_template"),
    [
        ({"settle_delay": 0.0}, True),
        ({"settle_delay": 120.0}, True),
        ({"settle_delay": 0.0}, False),
        ({"settle_delay": 60.0, "windows": (1800.0, 3600.0, 7200.0)}, True),
        ({"settle_delay": 0.0, "engine": "full_scan"}, False),
    ],
    ids=["settle-0", "settle-2m", "per-template", "three-windows", "full-scan"],
)
def test_every_window_equals_truth_at_every_poll_through_holds_and_late_statuses(
    overrides: dict[str, Any], cross_template: bool
) -> None:
    source = StoreSource(HOLDS, history=7200.0)
    config = _config(**overrides)
    engine = _engine(config, cross_template=cross_template)
    engine.poll(source, source.template_ids, source.now)
    appeared_late = 0
    seen: tuple[int, int, int] | None = None
    for _ in range(90):
        _poll(engine, source)
        _assert_equals_truth(engine, source, config)
        if seen is not None:
            start, end, count = seen
            now_count = sum(
                t["success"] + t["failed"] + t["sending"] for t in source.truth(start, end).values()
            )
            appeared_late += now_count > count
        end = _window_end(engine)
        start = end - int(config.window)
        count = sum(
            t["success"] + t["failed"] + t["sending"] for t in source.truth(start, end).values()
        )
        seen = (start, end, count)
    # Held messages really appeared in minutes already read, and were caught.
    assert appeared_late > 0


@pytest.mark.parametrize("cross_template", [True, False], ids=["across", "per-template"])
def test_messages_held_longer_than_the_horizon_are_found_by_the_history_check(
    cross_template: bool,
) -> None:
    source = StoreSource(LONG_HOLDS, history=3600.0)
    config = _config(settle_delay=60.0)
    engine = _engine(config, cross_template=cross_template)
    unchecked = Engine(replace(engine.settings, check_history=False))
    for polled in (engine, unchecked):
        polled.poll(source, source.template_ids, source.now)
    missed = 0
    for _ in range(90):
        source.advance(60)
        for polled in (engine, unchecked):
            assert polled.poll(source, source.template_ids, source.now).checks_done
        _assert_equals_truth(engine, source, config)
        end = _window_end(unchecked)
        truth = source.truth(end - 3600, end)
        missed += any(
            unchecked.book.window(t, end - 3600, end).total
            != truth[t]["success"] + truth[t]["failed"] + truth[t]["sending"]
            for t in source.template_ids
        )
    # Without the check, held messages that appeared past the horizon were missed.
    assert missed > 0


def test_each_message_is_counted_once_sent_and_once_final_even_after_leaving_the_window() -> None:
    source, _, engine, first_start = _started(HOLDS, settle_delay=0.0)
    # Five minutes of TPL_LOGIN whose reports come 4000 s late: pending past the window.
    source.incident(
        {"template_id": "TPL_LOGIN", "carrier_delay_seconds": 4000, "duration_seconds": 300}
    )
    _poll(engine, source, 100)
    assert engine.book.pending_count() > 0 or engine.book.late == {}
    truth = source.truth(first_start, _window_end(engine))
    for template_id in source.template_ids:
        t = truth[template_id]
        assert engine.book.counters.sent[template_id] == t["success"] + t["failed"] + t["sending"]
        assert _finalized(engine, template_id) == _final(truth, template_id), template_id


def test_a_message_resolving_after_an_hour_is_counted_once_and_windows_stay_exact() -> None:
    source, config, engine, _ = _started(HOLDS, settle_delay=0.0, windows=(3600.0, 7200.0))
    _poll(engine, source)
    source.incident(
        {"template_id": "TPL_LOGIN", "carrier_delay_seconds": 4000, "duration_seconds": 300}
    )
    for _ in range(75):
        _poll(engine, source)
        _assert_equals_truth(engine, source, config)
    end = _window_end(engine)
    # Delayed 4000 s: still pending after 75 minutes.
    assert engine.book.window("TPL_LOGIN", end - 7200, end).sending > 0
    before = sum(engine.book.counters.finalized.values())
    for _ in range(10):
        _poll(engine, source)
        _assert_equals_truth(engine, source, config)
    assert sum(engine.book.counters.finalized.values()) > before


def test_a_poll_cut_short_by_the_budget_leaves_the_rest_for_the_next_and_counts_nothing_twice() -> (
    None
):
    source = StoreSource(LATE, history=3600.0)  # no review holds: all counts are exact
    config = _config(settle_delay=0.0, request_budget=2)
    engine = _engine(config)
    first_start: int | None = None
    cut = 0
    for _ in range(60):
        source.advance(60)
        outcome = engine.poll(source, source.template_ids, source.now)
        if outcome.cut_short:
            assert outcome.cut_short == "request budget of 2 spent"
            assert not outcome.checks_done
            cut += 1
        if first_start is None:
            first_start = _window_end(engine) - 3600
    assert cut > 0
    engine = replace_budget(engine, config, 2000)
    _poll(engine, source, 2)
    _assert_equals_truth(engine, source, config)
    assert first_start is not None
    # Minutes that left the window before the budget reached them were never counted;
    # every other message was counted once.
    assert engine.book.never_read
    truth = source.truth(first_start, _window_end(engine))
    skipped = [source.truth(m, m + 60) for m in engine.book.never_read]
    for template_id in source.template_ids:
        t = truth[template_id]
        sent = t["success"] + t["failed"] + t["sending"]
        sent -= sum(
            s[template_id]["success"] + s[template_id]["failed"] + s[template_id]["sending"]
            for s in skipped
        )
        assert engine.book.counters.sent[template_id] == sent


def test_a_hold_released_while_the_budget_cut_polls_short_is_still_found() -> None:
    source = StoreSource(HOLDS, history=3600.0)
    config = _config(settle_delay=0.0, request_budget=4)
    engine = _engine(config)
    for _ in range(60):  # the hold check never fits in these polls
        source.advance(60)
        engine.poll(source, source.template_ids, source.now)
    engine = replace_budget(engine, config, 2000)
    _poll(engine, source)
    _assert_equals_truth(engine, source, config)


def replace_budget(engine: Engine, config: Config, budget: int) -> Engine:
    """The same engine state with a larger request budget (as a reload would)."""
    engine.reconfigure(replace(engine.settings, request_budget=budget))
    return engine


def _after_the_last_reports(
    engine: Engine, source: StoreSource, first_start: int
) -> tuple[int, dict[str, Any]]:
    """Poll until every block of late minutes has had its turn; the window's end and the
    truth since ``first_start``, in which nothing older than 72 h is still sending."""
    for _ in range(4):
        engine.poll(source, source.template_ids, source.now)
    end = _window_end(engine)
    truth = source.truth(first_start, end)
    assert all(t["sending"] == 0 for t in source.truth(first_start, end - 72 * 3600).values())
    return end, truth


def test_messages_never_reported_are_counted_final_when_they_expire_after_72_hours() -> None:
    source, _, engine, first_start = _started(LATE, settle_delay=0.0)
    pending_peak = 0
    for _ in range(2 * 75):
        source.advance(1800)
        assert engine.poll(source, source.template_ids, source.now).checks_done
        end = _window_end(engine)
        assert engine.book.unread_minutes(end - 3600, end) == 0  # the window is complete
        pending_peak = max(pending_peak, engine.book.pending_count())
    end, truth = _after_the_last_reports(engine, source, first_start)
    for template_id in source.template_ids:
        assert _finalized(engine, template_id) == _final(truth, template_id), template_id
    # Pending messages are followed for 72 h and a quarter, not longer.
    assert min(engine.book.late) >= end - 72 * 3600 - 15 * 60
    # At most the never-reported share (5 %) of 180 messages an hour, over 73 hours.
    assert 0 < pending_peak < 0.06 * 180 * 73


def test_reports_48_to_72_hours_late_keep_windows_and_counters_equal_to_the_truth() -> None:
    # Huawei pushes a report "within 72 hours": a third of these come 48-72 h late.
    source, config, engine, first_start = _started(
        VERY_LATE, settle_delay=0.0, windows=(3600.0, 86400.0)
    )
    waiting: dict[str, Any] = {}
    for half_hours in range(1, 2 * 75 + 1):
        source.advance(1800)
        assert engine.poll(source, source.template_ids, source.now).checks_done
        _assert_equals_truth(engine, source, config)
        if half_hours == 2 * 48:  # 48 h on: the first hour's late third still waits
            waiting = source.truth(first_start, first_start + 3600)
    _, truth = _after_the_last_reports(engine, source, first_start)
    for template_id in source.template_ids:
        sent = sum(waiting[template_id][k] for k in ("success", "failed", "sending"))
        assert waiting[template_id]["sending"] > 0.2 * sent, template_id
        t = truth[template_id]
        assert engine.book.counters.sent[template_id] == t["success"] + t["failed"] + t["sending"]
        assert _finalized(engine, template_id) == _final(truth, template_id), template_id


@pytest.mark.parametrize("cross_template", [True, False], ids=["across", "per-template"])
def test_messages_held_for_hours_keep_every_window_equal_to_the_truth(
    cross_template: bool,
) -> None:
    # Holds of 1-3 h: their messages appear after their minute left the 1 h window.
    source = StoreSource(HOURS_HOLDS, history=3600.0)
    config = _config(settle_delay=60.0, windows=(3600.0, 4 * 3600.0))
    engine = _engine(config, cross_template=cross_template)
    engine.poll(source, source.template_ids, source.now)
    first_start = _window_end(engine) - 4 * 3600
    grown = 0
    for _ in range(7 * 12):
        end = _window_end(engine)
        before = source.truth(end - 4 * 3600, end - 3600)
        source.advance(300)
        assert engine.poll(source, source.template_ids, source.now).checks_done
        _assert_equals_truth(engine, source, config)
        after = source.truth(end - 4 * 3600, end - 3600)
        grown += any(
            sum(after[t][k] for k in ("success", "failed", "sending"))
            > sum(before[t][k] for k in ("success", "failed", "sending"))
            for t in source.template_ids
        )
    # Held messages really appeared in minutes already past the 1 h window, and the 4 h
    # window counted them: the counters too, since no hold outlasts the longest window.
    assert grown > 0
    truth = source.truth(first_start, _window_end(engine))
    for template_id in source.template_ids:
        t = truth[template_id]
        assert engine.book.counters.sent[template_id] == t["success"] + t["failed"] + t["sending"]
        assert _finalized(engine, template_id) == _final(truth, template_id), template_id


def test_a_steady_poll_costs_a_fraction_of_a_full_scan() -> None:
    costs: Counter[str] = Counter()
    for name, engine_kind in (("incremental", "incremental"), ("full", "full_scan")):
        source = StoreSource(HOLDS, history=3600.0)
        config = _config(settle_delay=120.0, engine=engine_kind)
        engine = _engine(config, cross_template=engine_kind == "incremental")
        engine.poll(source, source.template_ids, source.now)
        before = len(source.queries)
        _poll(engine, source, 20)
        costs[name] = len(source.queries) - before
    assert costs["incremental"] * 2 < costs["full"], costs


def test_no_query_spans_more_than_the_console_allows_nor_reaches_back_too_far() -> None:
    day = 24 * 3600.0
    source = StoreSource(LATE, history=3600.0)
    config = _config(settle_delay=0.0)
    engine = _engine(config)
    for _ in range(4 * 24):
        source.advance(1800)
        engine.poll(source, source.template_ids, source.now)
    # The store refuses (BadParameter) any query the console would; none was refused.
    assert source.queries
    assert all(q.end_time - q.start_time <= day for q in source.queries)


def test_resolved_messages_of_one_template_are_read_a_full_page_at_a_time() -> None:
    # Half a minute of the busy template reports 150 s late: some 1,800 messages pending
    # at their first read resolve together, 60 in each whole second of send time.
    source = StoreSource(DENSE, history=120.0)
    config = _config(settle_delay=0.0, windows=(900.0,))
    engine = _engine(config)
    engine.poll(source, source.template_ids, source.now)
    source.incident(
        {"template_id": "TPL_BUSY", "carrier_delay_seconds": 150, "duration_seconds": 30}
    )
    burst: tuple[int, int] | None = None
    for _ in range(4):
        source.advance(60)
        outcome = engine.poll(source, source.template_ids, source.now)
        _assert_equals_truth(engine, source, config)
        if outcome.resolved > 1500:
            burst = (outcome.resolved, outcome.requests[Step.RESOLVED])
    assert burst is not None
    resolved, requests = burst
    # Pages placed where the messages stood when their minute was read hold 100 of them
    # each (a few pages more for the others that resolved in the same poll); reading
    # each whole second of send time would cost a request per 60 of them.
    assert requests <= resolved // 100 + 3, burst


def test_a_chunk_needing_more_requests_than_a_poll_may_spend_is_read_in_smaller_ones() -> None:
    # At this page size a 15-minute chunk of the window takes about 45 requests and a poll
    # may spend 20: read whole, the unread window would cut every poll short at the same
    # chunk, for ever (at 1M messages an hour and page 100 the default budget does that).
    source = StoreSource(LATE, history=3600.0)
    config = _config(settle_delay=0.0, request_budget=20, page_size=1)
    engine = _engine(config)
    for _ in range(60):
        source.advance(60)
        engine.poll(source, source.template_ids, source.now)
        end = _window_end(engine)
        if engine.book.unread_minutes(end - 3600, end) == 0:
            break
    else:
        pytest.fail("the window was never read in full")
    engine = replace_budget(engine, config, 2000)
    _poll(engine, source)
    _assert_equals_truth(engine, source, config)


def test_across_templates_the_steady_read_also_checks_the_history_at_no_extra_request() -> None:
    # The new minutes' query starts at the window's start, one record before the new ones:
    # that answers the history check's question too, so a steady poll asks no more of the
    # upstream with the check on than with it off.
    source = StoreSource(LATE, history=3600.0)
    config = _config(settle_delay=180.0)
    checked = _engine(config)
    unchecked = Engine(replace(checked.settings, check_history=False))
    for engine in (checked, unchecked):
        engine.poll(source, source.template_ids, source.now)
    for _ in range(20):
        source.advance(60)
        asked = [
            sum(engine.poll(source, source.template_ids, source.now).requests.values())
            for engine in (checked, unchecked)
        ]
        assert asked[0] == asked[1]
        _assert_equals_truth(checked, source, config)


class _FinalRecordsBroken(StoreSource):
    """An upstream that sends the final record of every message once seen pending
    without its status code: the engine can tell it resolved, but not how."""

    def __init__(self, scenario: Path | str) -> None:
        super().__init__(scenario)
        self.seen_pending: set[str] = set()

    def query(self, query: DetailsQuery) -> DetailsPage:
        self.queries.append(query)
        params = {name: [value] for name, value in query.params().items()}
        body = send_details(self.store, params, self.now, self.limits)
        for record in body["records"]:
            if record["send_result"] == "sending":
                self.seen_pending.add(record["message_id"])
            elif record["message_id"] in self.seen_pending:
                record["status_code"] = None
        return parse_page(body)


@pytest.mark.parametrize("cross_template", [True, False], ids=["across", "per-template"])
def test_a_message_whose_final_record_is_unreadable_leaves_its_window_incomplete(
    cross_template: bool,
) -> None:
    # The follow-up finds such a message resolved, reads its final record, skips it as
    # malformed and keeps the message as sending: the window was shown complete while the
    # platform counts it delivered or failed.
    source = _FinalRecordsBroken("default")
    config = _config()
    engine = _engine(config, cross_template=cross_template)
    engine.poll(source, source.template_ids, source.now)
    differed = 0
    for _ in range(40):
        _poll(engine, source)
        end = _window_end(engine)
        start = end - int(config.window)
        truth = source.truth(start, end)
        exact = all(
            engine.book.window(t, start, end).sending == truth[t]["sending"]
            for t in source.template_ids
        )
        if not exact:
            differed += 1
            assert engine.book.unread_minutes(start, end) > 0
    assert differed > 0
    assert engine.book.counters.rejected["missing_field"] > 0
