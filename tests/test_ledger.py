from exporter.ledger import Tally, TemplateLedger, growth_between, tally_by_bucket
from exporter.records import SendRecord, SendResult
from exporter.snapshot import summarize
from exporter.status_codes import StatusCategory


def rec(mid, t, result, code="", receive=None):
    return SendRecord(mid, "T1", "4402****00", t, result, code, "", receive, 1)


def test_tallies_records_into_buckets_of_sending_time():
    tallies = tally_by_bucket(
        [
            rec("a", 0.5, SendResult.SUCCESS, "DELIVRD", 3.5),
            rec("b", 59.9, SendResult.FAILED, "E200018", 61.0),
            rec("c", 60.0, SendResult.SENDING),
        ],
        60,
    )
    assert sorted(tallies) == [0, 60]
    assert (tallies[0].success, tallies[0].failed, tallies[0].sending) == (1, 1, 0)
    assert tallies[0].codes == {"DELIVRD": 1, "E200018": 1}
    assert tallies[0].delay_sum_ms == 3000
    assert tallies[0].delay_counts[2] == 1  # 3 s falls in the (2, 5] bucket
    assert tallies[60].sending == 1


def test_growth_counts_new_and_newly_final_messages_without_ids():
    old = Tally(success=5, sending=4, codes={"DELIVRD": 5})
    new = Tally(success=7, failed=1, sending=1, codes={"DELIVRD": 7, "E200018": 1})
    growth = growth_between(old, new)
    assert growth.sent == 0
    assert growth.finalized == {
        (SendResult.SUCCESS, StatusCategory.DELIVERED): 2,
        (SendResult.FAILED, StatusCategory.PLATFORM_CONFIG): 1,
    }


def test_replacing_a_range_reports_messages_that_appeared_late():
    ledger = TemplateLedger()
    first = ledger.replace(0, 120, 60, tally_by_bucket([rec("a", 1, SendResult.SENDING)], 60))
    assert first.sent == 1
    later = tally_by_bucket(
        [rec("a", 1, SendResult.SUCCESS, "DELIVRD", 2), rec("held", 70, SendResult.SENDING)], 60
    )
    growth = ledger.replace(0, 120, 60, later)
    assert growth.sent == 1
    assert growth.finalized == {(SendResult.SUCCESS, StatusCategory.DELIVERED): 1}
    window = ledger.window(0, 120, 60)
    assert (window.success, window.sending) == (1, 1)


def test_window_sums_only_buckets_inside_it_and_forgets_old_ones():
    ledger = TemplateLedger()
    records = [rec(str(i), i * 60 + 1, SendResult.SUCCESS, "DELIVRD", i * 60 + 2) for i in range(5)]
    ledger.replace(0, 300, 60, tally_by_bucket(records, 60))
    assert ledger.window(60, 240, 60).success == 3
    ledger.forget_before(120)
    assert sorted(ledger.buckets) == [120, 180, 240]


def test_a_narrow_window_over_many_buckets_sums_the_same_as_a_wide_one():
    ledger = TemplateLedger()
    records = [
        rec(str(i), i * 60 + 7, SendResult.SUCCESS, "DELIVRD", i * 60 + 9) for i in range(50)
    ]
    ledger.replace(0, 3000, 60, tally_by_bucket(records, 60))
    # 3 buckets asked of 50 kept: looked up by key; 60 asked of 50: scanned.
    assert ledger.window(600, 780, 60).success == 3
    assert ledger.window(630, 780, 60).success == 2  # a start inside a bucket excludes it
    assert ledger.window(0, 3600, 60).success == 50


def test_summary_folds_codes_beyond_top_n_into_other():
    tally = Tally(failed=7, codes={"E200018": 3, "UNDELIV": 2, "MK:0001": 1, "REJECTD": 1})
    window = summarize("T1", tally, top_n=1)
    assert [(c.status_code, c.category, c.count) for c in window.codes] == [
        ("E200018", StatusCategory.PLATFORM_CONFIG, 3),
        ("other", StatusCategory.CARRIER_REJECTED, 1),
        ("other", StatusCategory.INVALID_NUMBER, 3),
    ]
    assert window.delay_buckets[-1] == (float("inf"), 0)
