"""The simulator's core, in process: scenario, traffic, store, queries, truth, holds, incidents."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.errors import ConfigError
from exporter.records import SendRecord, SendResult
from exporter.simulator.queries import Filters
from exporter.simulator.scenario import load_scenario, parse_scenario
from exporter.simulator.store import MessageStore
from exporter.simulator.traffic import (
    CATEGORY_CODES,
    CODES,
    EXPIRY_MS,
    HOUR_MS,
    LATE_FAILURE_CODES,
    format_message_id,
    generate_block,
    holds_for_hour,
)
from exporter.status_codes import categorize
from exporter.timestamps import parse_rfc3339

T0 = round(parse_rfc3339("2026-11-26T10:00:00Z") * 1000)
MINUTE = 60_000
A = "aaaa0000000000000000000000000001"
B = "bbbb0000000000000000000000000002"


def scenario_data(**top: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "review_holds": {"per_hour": 0},
        "templates": [
            {"template_id": A, "name": "Busy", "rate_per_hour": 6000, "failure_share": 0.05},
            {"template_id": B, "name": "Quiet", "type": "PROMOTION_TYPE", "rate_per_hour": 600},
        ],
    }
    data.update(top)
    return data


def make_store(seed: int = 7, history_ms: int = HOUR_MS, **top: Any) -> MessageStore:
    return MessageStore(parse_scenario(scenario_data(**top)), seed, T0 - history_ms)


def all_records(store: MessageStore, f: Filters, now_ms: int, limit: int = 100) -> list[SendRecord]:
    out: list[SendRecord] = []
    while True:
        total, page = store.query(f, len(out), limit, now_ms)
        out.extend(page)
        if not page or len(out) >= total:
            assert len(out) == total
            return out


# -- scenario ----------------------------------------------------------------------


def test_scenario_problems_are_reported_together_with_their_location() -> None:
    data = {
        "daily_shape": [1.0] * 23,
        "colour": "blue",
        "templates": [
            {"template_id": A, "rate_per_hour": -1, "type": "SPAM"},
            {"template_id": A, "countries": ["999"], "failure_mix": {"nope": 1}},
        ],
    }
    with pytest.raises(ConfigError) as err:
        parse_scenario(data)
    assert err.value.problems == [
        "colour: unknown key",
        "templates[0].type: expected one of VERIFY_CODE_TYPE, PROMOTION_TYPE, NOTIFY_TYPE",
        "templates[0].rate_per_hour: expected a number in [0, 1e+08]",
        "templates[1].failure_mix.nope: unknown key",
        "templates[1].failure_mix: expected at least one positive weight",
        "templates[1].countries: expected a list of country codes (1, 234, 33, 44, 49, 65, 86, 91)",
        "templates[1].template_id: duplicate 'aaaa0000000000000000000000000001'",
        "daily_shape: expected a list of 24 numbers >= 0",
    ]


def test_scenario_file_errors_name_the_file(tmp_path: Any) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("templates: []\n")
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    assert err.value.problems == [f"{path}:1: templates: expected at least one template"]


def test_packaged_scenarios_load() -> None:
    demo = load_scenario()
    assert len(demo.templates) == 6
    assert {t.template_type for t in demo.templates} == {
        "VERIFY_CODE_TYPE",
        "NOTIFY_TYPE",
        "PROMOTION_TYPE",
    }


def test_generated_templates_are_zipf_skewed() -> None:
    scenario = parse_scenario(
        {"generated_templates": {"count": 50, "total_rate_per_hour": 1_000_000}}
    )
    rates = [t.rate_per_hour for t in scenario.templates]
    assert len(rates) == 50
    assert sum(rates) == pytest.approx(1_000_000)
    assert rates == sorted(rates, reverse=True)


def test_every_category_code_belongs_to_its_category() -> None:
    for category, codes in CATEGORY_CODES.items():
        for code, _ in codes:
            assert categorize(code).value == category, code


# -- determinism ------------------------------------------------------------------


def test_same_seed_gives_the_same_records_however_the_clock_moves() -> None:
    f = Filters(T0 - HOUR_MS, T0 + 2 * MINUTE)
    one, two = make_store(), make_store()
    one.advance_to(T0 + MINUTE)
    one.advance_to(T0 + 2 * MINUTE)
    two.advance_to(T0 + 2 * MINUTE)
    assert all_records(one, f, T0 + 2 * MINUTE) == all_records(two, f, T0 + 2 * MINUTE)


@pytest.mark.parametrize("start_second", [1, 29, 59])
def test_the_first_minute_and_each_message_number_do_not_depend_on_when_traffic_starts(
    start_second: int,
) -> None:
    # The real clock starts traffic at any second: the first minute must still be whole.
    f = Filters(T0 - HOUR_MS, T0 - HOUR_MS + 5 * MINUTE)
    whole = make_store()
    late = make_store(history_ms=HOUR_MS - start_second * 1000)
    records = all_records(whole, f, T0)
    assert records and records == all_records(late, f, T0)
    assert records[0].send_time * 1000 < T0 - HOUR_MS + start_second * 1000
    for record in records[:: max(1, len(records) // 20)]:
        assert whole.mobile_of(record.message_id) == late.mobile_of(record.message_id)


def test_send_and_report_times_are_whole_seconds() -> None:
    store = make_store(review_holds={"per_hour": 20})
    store.add_incident({"carrier_delay_seconds": 90.4, "duration_seconds": 300}, T0 - HOUR_MS)
    records = all_records(store, Filters(T0 - HOUR_MS, T0), T0)
    assert records
    for r in records:
        assert r.send_time == int(r.send_time)
        assert r.receive_time is None or r.receive_time == int(r.receive_time)


def test_another_seed_gives_other_records() -> None:
    f = Filters(T0 - HOUR_MS, T0)
    assert all_records(make_store(1), f, T0) != all_records(make_store(2), f, T0)


def test_message_ids_look_like_huawei_sms_msg_ids_and_sort_like_their_value() -> None:
    assert format_message_id(0x0123456789ABCDEF, 0xFEDCBA9876543210) == (
        "01234567-89ab-cdef-fedc-ba9876543210_1"
    )
    assert format_message_id(1, 0) < format_message_id(1, 1) < format_message_id(2, 0)


# -- queries ----------------------------------------------------------------------


@pytest.mark.parametrize("template_id", [A, None])
def test_records_are_ordered_by_send_time_then_id_and_paging_is_exact(
    template_id: str | None,
) -> None:
    store = make_store()
    f = Filters(T0 - HOUR_MS, T0, template_id)
    records = all_records(store, f, T0, limit=37)
    assert records == sorted(records, key=lambda r: (r.send_time, r.message_id))
    assert len({r.message_id for r in records}) == len(records) > 1000
    assert all(T0 - HOUR_MS <= r.send_time * 1000 < T0 for r in records)
    total, page = store.query(f, 500, 10, T0)
    assert total == len(records)
    assert page == records[500:510]
    assert store.query(f, total, 10, T0) == (total, [])


def test_unsent_messages_are_not_visible() -> None:
    store = make_store()
    records = all_records(store, Filters(T0 - MINUTE, T0 + HOUR_MS), T0)
    assert records
    assert max(r.send_time for r in records) * 1000 < T0


def test_template_filter_keeps_only_that_template() -> None:
    store = make_store()
    records = all_records(store, Filters(T0 - HOUR_MS, T0, B), T0)
    assert records
    assert {r.template_id for r in records} == {B}
    assert store.query(Filters(T0 - HOUR_MS, T0, "unknown"), 0, 10, T0) == (0, [])


@pytest.mark.parametrize("result", list(SendResult))
def test_send_result_filter_matches_the_state_at_now(result: SendResult) -> None:
    store = make_store()
    f = Filters(T0 - HOUR_MS, T0)
    everything = all_records(store, f, T0)
    wanted = [r for r in everything if r.send_result is result]
    assert wanted
    assert all_records(store, Filters(T0 - HOUR_MS, T0, send_result=result), T0) == wanted


def test_mobile_filter_matches_the_full_number() -> None:
    store = make_store()
    f = Filters(T0 - HOUR_MS, T0)
    _, (first, *_) = store.query(f, 0, 1, T0)
    mobile = store.mobile_of(first.message_id)
    assert mobile is not None
    assert first.mobile == mobile[:4] + "*" * (len(mobile) - 6) + mobile[-2:]
    total, page = store.query(Filters(T0 - HOUR_MS, T0, mobile=int(mobile)), 0, 10, T0)
    assert first in page
    assert total == len(page)


def test_records_follow_the_wire_rules() -> None:
    for r in all_records(make_store(), Filters(T0 - HOUR_MS, T0), T0):
        if r.send_result is SendResult.SENDING:
            assert (r.status_code, r.status_desc, r.receive_time) == ("", "", None)
        else:
            assert r.receive_time is not None and r.receive_time > r.send_time
            assert (r.status_code == "DELIVRD") == (r.send_result is SendResult.SUCCESS)
            assert r.status_desc
        assert 1 <= r.segments <= 3


# -- truth ------------------------------------------------------------------------


def test_truth_equals_what_paging_all_records_gives() -> None:
    store = make_store()
    start, end, now = T0 - HOUR_MS, T0 - 5 * MINUTE, T0
    truth = store.truth(start, end, now)
    records = all_records(store, Filters(start, end), now)
    for template_id in (A, B):
        mine = [r for r in records if r.template_id == template_id]
        codes: dict[str, int] = {}
        for r in mine:
            if r.status_code:
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
        delays = sum(
            round((r.receive_time or 0) * 1000 - r.send_time * 1000)
            for r in mine
            if r.send_result is SendResult.SUCCESS
        )
        assert truth[template_id] == {
            "success": sum(r.send_result is SendResult.SUCCESS for r in mine),
            "failed": sum(r.send_result is SendResult.FAILED for r in mine),
            "sending": sum(r.send_result is SendResult.SENDING for r in mine),
            "status_codes": dict(sorted(codes.items())),
            "delivery_delay_seconds_sum": delays / 1000,
        }


def test_truth_lists_every_template_even_without_traffic() -> None:
    store = make_store()
    truth = store.truth(T0 - 10 * HOUR_MS, T0 - 9 * HOUR_MS, T0)
    empty = {
        "success": 0,
        "failed": 0,
        "sending": 0,
        "status_codes": {},
        "delivery_delay_seconds_sum": 0.0,
    }
    assert truth == {A: empty, B: empty}


def test_baseline_delivers_most_messages_within_seconds() -> None:
    store = make_store()
    truth = store.truth(T0 - HOUR_MS, T0 - 10 * MINUTE, T0)[A]
    final = truth["success"] + truth["failed"]
    assert 0.93 < truth["success"] / final < 0.97  # failure_share 0.05
    assert 1 < truth["delivery_delay_seconds_sum"] / truth["success"] < 30


# -- platform behaviours ------------------------------------------------------------


def test_unreported_messages_expire_at_72_hours() -> None:
    store = make_store(never_reported_share=1.0, history_ms=0, rate_multiplier=0.05)
    f = Filters(T0, T0 + MINUTE)
    before = all_records(store, f, T0 + EXPIRY_MS)
    assert before and {r.send_result for r in before} == {SendResult.SENDING}
    after = all_records(store, f, T0 + MINUTE + EXPIRY_MS)
    assert {(r.send_result, r.status_code) for r in after} == {(SendResult.FAILED, "EXPIRED")}
    assert all(
        round((r.receive_time or 0) * 1000) == round(r.send_time * 1000) + EXPIRY_MS for r in after
    )


def test_carrier_delays_stop_at_30_minutes_and_a_small_tail_reports_hours_later() -> None:
    scenario = load_scenario()
    blocks = [
        block
        for t in range(len(scenario.templates))
        for chunk in range(T0 // MINUTE - 60, T0 // MINUTE)
        for block in [generate_block(scenario, 3, t, chunk)]
        if block is not None
    ]
    rows = [
        (CODES.codes[b.codes[i]], (b.report_ms[i] - b.send_ms[i]) / 1000)
        for b in blocks
        for i in range(len(b))
    ]
    assert len(rows) > 20_000
    # The tail: about 0.3 % hours late, most of them delivered, the rest carrier failures;
    # the 0.1 % never reported are EXPIRED at exactly 72 h; nothing else past 30 minutes.
    hours_late = [(code, d) for code, d in rows if d > 1800 and code != "EXPIRED"]
    expired = [d for code, d in rows if code == "EXPIRED"]
    assert 0.0015 < len(hours_late) / len(rows) < 0.0045
    assert all(3600 <= d <= 72 * 3600 for _, d in hours_late)
    assert max(d for _, d in hours_late) > 48 * 3600  # Huawei's "within 72 hours"
    codes = {code for code, _ in hours_late}
    assert "DELIVRD" in codes and codes - {"DELIVRD"}
    assert codes - {"DELIVRD"} <= {c for c, _ in LATE_FAILURE_CODES}
    assert expired and set(expired) == {EXPIRY_MS / 1000}
    assert not [d for _, d in rows if 1800 < d < 3600]


def test_no_report_comes_later_than_72_hours_the_platform_writes_expired() -> None:
    store = make_store(history_ms=0, rate_multiplier=0.05)
    store.add_incident({"carrier_delay_seconds": 72 * 3600, "duration_seconds": 60}, T0)
    records = all_records(store, Filters(T0, T0 + MINUTE), T0 + MINUTE + EXPIRY_MS)
    assert records
    for r in records:
        assert (r.status_code, (r.receive_time or 0) - r.send_time) == ("EXPIRED", 72 * 3600)


def test_a_rejected_review_fails_every_held_message_with_sc_0001_at_release() -> None:
    holds = {"per_hour": 20, "min_seconds": 300, "max_seconds": 300, "rejected_share": 1.0}
    scenario = parse_scenario(scenario_data(review_holds=holds))
    hold = next(h for h in holds_for_hour(scenario, 7, T0 // HOUR_MS) if h.template == 0)
    assert hold.rejected
    store = MessageStore(scenario, 7, T0 - HOUR_MS)
    f = Filters(hold.start_ms, hold.end_ms, A)
    assert all_records(store, f, hold.end_ms - 1000) == []
    released = all_records(store, f, hold.end_ms)
    assert released and {r.send_result for r in released} == {SendResult.SENDING}
    rejected = all_records(store, f, hold.end_ms + 1000)
    assert {(r.send_result, r.status_code) for r in rejected} == {(SendResult.FAILED, "SC:0001")}
    assert {r.receive_time for r in rejected} == {hold.end_ms / 1000 + 1}
    assert categorize("SC:0001").value == "content_blocked"


def test_review_holds_hide_messages_until_release_then_show_original_send_times() -> None:
    data = scenario_data(
        review_holds={"per_hour": 20, "min_seconds": 300, "max_seconds": 300, "rejected_share": 0}
    )
    scenario = parse_scenario(data)
    hold = next(h for h in holds_for_hour(scenario, 7, T0 // HOUR_MS) if h.template == 0)
    store = MessageStore(scenario, 7, T0 - HOUR_MS)
    during = hold.start_ms + 120_000
    f = Filters(hold.start_ms - 5 * MINUTE, hold.end_ms, A)
    seen_during = all_records(store, f, during)
    assert seen_during
    assert max(r.send_time for r in seen_during) * 1000 < hold.start_ms
    assert store.truth(hold.start_ms, hold.end_ms, during)[A]["sending"] == 0
    released = all_records(store, f, hold.end_ms)
    held = [r for r in released if hold.start_ms <= r.send_time * 1000 < during]
    assert held
    assert all(r.send_result is SendResult.SENDING for r in held)
    later = all_records(store, f, hold.end_ms + HOUR_MS)
    assert {r.message_id for r in held} <= {r.message_id for r in later}
    assert all(
        r.receive_time * 1000 > hold.end_ms
        for r in later
        if hold.start_ms <= r.send_time * 1000 < hold.end_ms and r.receive_time is not None
    )


def test_a_hold_of_hours_hides_its_messages_until_release_hours_later() -> None:
    holds = {"per_hour": 1, "min_seconds": 5 * 3600, "max_seconds": 5 * 3600, "rejected_share": 0}
    scenario = parse_scenario(scenario_data(review_holds=holds))
    hour = T0 // HOUR_MS
    hold = next(h for k in range(6) for h in holds_for_hour(scenario, 7, hour + k))
    assert hold.end_ms - hold.start_ms == 5 * HOUR_MS
    store = MessageStore(scenario, 7, T0 - HOUR_MS)
    f = Filters(hold.start_ms, hold.start_ms + 10 * MINUTE, (A, B)[hold.template])
    assert all_records(store, f, hold.end_ms - 1000) == []  # still held 5 h on
    released = all_records(store, f, hold.end_ms)
    assert released and all(r.send_time * 1000 >= hold.start_ms for r in released)


def test_a_hold_may_last_a_day_and_no_longer() -> None:
    parse_scenario(scenario_data(review_holds={"min_seconds": 60, "max_seconds": 86400}))
    with pytest.raises(ConfigError) as err:
        parse_scenario(scenario_data(review_holds={"max_seconds": 86401}))
    assert err.value.problems == ["review_holds.max_seconds: expected a number in [1, 86400]"]


def test_an_incident_raises_the_failure_share_with_its_code() -> None:
    store = make_store()
    store.advance_to(T0)
    incident = store.add_incident(
        {"template_id": A, "status_code": "E200018", "failure_share": 0.5, "duration_seconds": 600},
        T0,
    )
    assert incident.to_wire()["end_time"] == "2026-11-26T10:10:00.000Z"
    truth = store.truth(T0, T0 + 10 * MINUTE, T0 + HOUR_MS)
    busy = truth[A]
    assert 0.4 < busy["status_codes"]["E200018"] / (busy["success"] + busy["failed"]) < 0.6
    assert "E200018" not in truth[B]["status_codes"]
    before = store.truth(T0 - 10 * MINUTE, T0, T0 + HOUR_MS)[A]
    assert before["status_codes"].get("E200018", 0) < 10


def test_incident_results_do_not_depend_on_how_the_clock_moved() -> None:
    body = {"category": "platform_config", "failure_share": 0.3, "duration_seconds": 300}
    one, two = make_store(), make_store()
    one.advance_to(T0)
    one.add_incident(body, T0)
    one.advance_to(T0 + 3 * MINUTE)
    two.add_incident(body, T0)
    f = Filters(T0 - MINUTE, T0 + 10 * MINUTE)
    now = T0 + 20 * MINUTE
    assert all_records(one, f, now) == all_records(two, f, now)


def test_a_carrier_delay_leaves_messages_pending() -> None:
    store = make_store()
    store.add_incident({"carrier_delay_seconds": 900, "duration_seconds": 300}, T0)
    truth = store.truth(T0, T0 + 5 * MINUTE, T0 + 10 * MINUTE)
    assert truth[A]["success"] == truth[A]["failed"] == 0
    assert truth[A]["sending"] > 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"failure_share": 0.5, "duration_seconds": 60}, "status_code or category: give exactly"),
        (
            {"template_id": "x", "carrier_delay_seconds": 5, "duration_seconds": 60},
            "template_id: not a template of the scenario",
        ),
        ({"carrier_delay_seconds": 5}, "duration_seconds: expected a number"),
        ({"duration_seconds": 60}, "failure_share or carrier_delay_seconds"),
        ({"colour": 1}, "colour: unknown field"),
    ],
)
def test_bad_incidents_are_rejected_with_the_field_named(body: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_store().add_incident(body, T0)
