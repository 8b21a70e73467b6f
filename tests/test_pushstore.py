"""The push store contract, passed by both stores (SQLite and a real PostgreSQL):
idempotent durable writes, long SMS, attribution, retention, the details contract."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import Opener

from exporter import sqlitewriter
from exporter.errors import StoreUnavailable, UpstreamUnavailable
from exporter.fetch import RecordList, read_range
from exporter.mobilekey import MobileKey
from exporter.pushitems import segments_outcome
from exporter.pushstore import (
    UNKNOWN_TEMPLATE,
    ReportStore,
    Segment,
    SendRegistration,
    StatusReport,
    message_outcome,
)
from exporter.records import DetailsQuery, SendRecord, SendResult
from exporter.sqlitestore import PushStore
from exporter.templates import SmsTemplate
from exporter.timestamps import parse_rfc3339

T0 = parse_rfc3339("2026-11-26T10:00:00Z")


class Clock:
    def __init__(self, now: float = T0 + 600) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(open_store: Opener, clock: Clock) -> Iterator[ReportStore]:
    with closing(open_store(clock=clock, mobile_key=MobileKey(b"m" * 32))) as s:
        yield s


def _all(store: ReportStore, **filters: object) -> list:
    page = store.query(DetailsQuery(T0 - 86400, T0 + 86400, limit=100, **filters))  # type: ignore[arg-type]
    return page.records


def test_registered_message_is_sending_until_its_report(store: ReportStore):
    store.register([SendRegistration("m1", "tplA", T0 + 1, "4402000000")])
    (record,) = _all(store)
    assert (record.template_id, record.send_result, record.mobile) == (
        "tplA",
        SendResult.SENDING,
        "4402****00",
    )
    store.add_reports([StatusReport("m1", "DELIVRD", update_time=T0 + 4.5)])
    (record,) = _all(store)
    assert record.send_result is SendResult.SUCCESS
    assert record.status_code == "DELIVRD"
    assert record.delivery_delay_ms == 3500


def test_report_of_an_unregistered_message_is_kept_under_unknown(store: ReportStore):
    result = store.add_reports([StatusReport("m9", "UNDELIV", update_time=T0 + 30)])
    assert (result.stored, result.unattributed) == (1, 1)
    (record,) = _all(store)
    assert (record.template_id, record.send_time, record.send_result, record.status_code) == (
        UNKNOWN_TEMPLATE,
        T0 + 30,
        SendResult.FAILED,
        "UNDELIV",
    )
    assert store.list_templates() == [SmsTemplate("unknown", "unknown", "")]


def test_report_attributed_by_extend_uses_that_template(store: ReportStore):
    result = store.add_reports([StatusReport("m1", "DELIVRD", template_id="tplX")])
    assert (result.stored, result.unattributed) == (1, 0)
    assert [r.template_id for r in _all(store)] == ["tplX"]


def test_a_later_registration_moves_the_message_to_its_template(store: ReportStore):
    store.add_reports([StatusReport("m1", "DELIVRD", update_time=T0 + 9)])
    store.register([SendRegistration("m1", "tplA", T0 + 2)])
    (record,) = _all(store)
    assert (record.template_id, record.send_time, record.send_result) == (
        "tplA",
        T0 + 2,
        SendResult.SUCCESS,
    )


def test_duplicates_are_idempotent(store: ReportStore):
    store.register([SendRegistration("m1", "tplA", T0)])
    report = StatusReport("m1", "DELIVRD", update_time=T0 + 1)
    first = store.add_reports([report])
    again = store.add_reports([report, report])
    again_send = store.register([SendRegistration("m1", "tplB", T0 + 5)])
    assert (first.stored, again.stored, again.duplicates) == (1, 0, 2)
    assert (again_send.stored, again_send.duplicates) == (0, 1)
    assert store.segment_rows() == [("m1", 1)]
    assert [(r.template_id, r.send_time) for r in _all(store)] == [("tplA", T0)]


def test_a_long_sms_is_delivered_once_all_segments_are(store: ReportStore):
    store.register([SendRegistration("m1", "tplA", T0, segments=3)])
    store.add_reports([StatusReport("m1", "DELIVRD", 1, 3, update_time=T0 + 2)])
    store.add_reports([StatusReport("m1", "DELIVRD", 3, 3, update_time=T0 + 5)])
    (record,) = _all(store)
    assert (record.send_result, record.segments) == (SendResult.SENDING, 3)
    store.add_reports([StatusReport("m1", "DELIVRD", 2, 3, update_time=T0 + 4)])
    (record,) = _all(store)
    assert (record.send_result, record.receive_time) == (SendResult.SUCCESS, T0 + 5)
    assert store.query(DetailsQuery(T0 - 1, T0 + 1)).total == 1


def test_a_long_sms_fails_on_its_first_failed_segment():
    segs = [
        Segment(1, 3, "DELIVRD", "", 1000),
        Segment(3, 3, "REJECTD", "", 3000),
        Segment(2, 3, "UNDELIV", "", 2000),
    ]
    outcome = message_outcome(segs, 3)
    assert (outcome.result, outcome.status_code, outcome.receive_ms) == (
        SendResult.FAILED,
        "UNDELIV",
        2000,
    )


def test_segment_totals_come_from_reports_when_registration_said_one():
    segs = [Segment(1, 2, "DELIVRD", "", 1000)]
    assert message_outcome(segs, 1).result is SendResult.SENDING
    assert message_outcome([*segs, Segment(2, 2, "DELIVRD", "", 1500)], 1).receive_ms == 1500


def test_query_filters_orders_and_pages(store: ReportStore):
    store.register(
        [
            SendRegistration("b", "tplA", T0 + 1, "4402000001"),
            SendRegistration("a", "tplA", T0 + 1, "4402000002"),
            SendRegistration("c", "tplB", T0 + 0.5, "4402000001"),
            SendRegistration("d", "tplA", T0 + 3600, "4402000001"),
        ]
    )
    store.add_reports([StatusReport("a", "DELIVRD", update_time=T0 + 2)])
    assert [r.message_id for r in _all(store)] == ["c", "a", "b", "d"]
    window = DetailsQuery(T0, T0 + 3600, limit=1, offset=1)
    page = store.query(window)
    assert (page.total, [r.message_id for r in page.records]) == (3, ["a"])
    assert [r.message_id for r in _all(store, template_id="tplA")] == ["a", "b", "d"]
    assert [r.message_id for r in _all(store, mobile="4402000001")] == ["c", "b", "d"]
    assert [r.message_id for r in _all(store, send_result=SendResult.SUCCESS)] == ["a"]
    assert [t.template_id for t in store.list_templates()] == ["tplA", "tplB"]
    assert store.stats.request_count == 6


def test_a_snapshot_reads_every_page_from_one_state_while_writes_land(store: ReportStore):
    store.register([SendRegistration(f"m{i:02}", "tplA", T0 + i) for i in range(6)])
    window = DetailsQuery(T0, T0 + 3600, limit=2)
    with store.snapshot():
        first = store.query(window)
        # Another request commits meanwhile: a new message, and a report that settles one.
        store.register([SendRegistration("m-new", "tplA", T0 + 0.5)])
        store.add_reports([StatusReport("m05", "DELIVRD", update_time=T0 + 60)])
        rest = [store.query(replace(window, offset=offset)) for offset in (2, 4)]
        sending = store.query(replace(window, send_result=SendResult.SENDING, limit=10))
    assert [page.total for page in (first, *rest)] == [6, 6, 6]
    ids = [r.message_id for page in (first, *rest) for r in page.records]
    assert ids == [f"m{i:02}" for i in range(6)], "no page shifted"
    assert sending.total == 6 and rest[-1].records[-1].send_result is SendResult.SENDING
    after = store.query(replace(window, limit=10))
    assert after.total == 7 and after.records[-1].send_result is SendResult.SUCCESS


def test_pages_of_a_snapshot_equal_offset_paging_in_any_order(store: ReportStore):
    """Inside a snapshot a page continuing the previous one starts after its last key;
    any other offset, or another filter, is paged by offset: the same records either way."""
    sends = [SendRegistration(f"m{i:02}", f"tpl{i % 2}", T0 + i // 3) for i in range(12)]
    store.register(sends)
    window = DetailsQuery(T0, T0 + 3600, limit=3)
    expected = [r.message_id for r in store.query(replace(window, limit=100)).records]
    by_template = [r.message_id for r in _all(store, template_id="tpl1")]
    with store.snapshot():
        got = {}
        for offset in (0, 3, 6, 3, 9, 1, 4):
            got[offset] = [
                r.message_id for r in store.query(replace(window, offset=offset)).records
            ]
        tpl1 = [store.query(replace(window, template_id="tpl1", offset=o)) for o in (0, 3)]
    assert all(got[o] == expected[o : o + 3] for o in got), got
    assert [r.message_id for page in tpl1 for r in page.records] == by_template
    assert {page.total for page in tpl1} == {6}


def test_a_range_read_while_every_page_brings_writes_needs_no_restart(store: ReportStore):
    """The poller's page loop (fetch.read_range) on a store takes one snapshot per range."""
    store.register([SendRegistration(f"m{i:03}", "tplA", T0 + i) for i in range(30)])
    writes = iter(range(1000))

    class WritingSink(RecordList):
        def add(self, record: SendRecord) -> None:  # a report lands with every record read
            super().add(record)
            n = next(writes)
            store.register([SendRegistration(f"new{n}", "tplA", T0 + 0.5)])

    view = store.account_view(None)
    read = read_range(view, DetailsQuery(T0, T0 + 3600, limit=4), WritingSink)
    assert read.total == 30 and len(read.sink.records) == 30
    assert read.requests == 8, "one pass, no read started over"
    assert store.message_count() == 60


def test_reports_survive_reopening(open_store: Opener, clock: Clock):
    with closing(open_store(clock=clock)) as first:
        first.add_reports([StatusReport("m1", "DELIVRD", template_id="t")])
    with closing(open_store(clock=clock)) as second:
        assert [r.message_id for r in _all(second)] == ["m1"]
        assert second.add_reports([StatusReport("m1", "DELIVRD")]).duplicates == 1


def test_messages_older_than_the_retention_are_pruned(open_store: Opener, clock: Clock):
    with closing(open_store(clock=clock, retention=3600)) as store:
        store.register([SendRegistration("old", "t", T0), SendRegistration("new", "t", T0 + 3000)])
        store.add_reports([StatusReport("old", "DELIVRD"), StatusReport("new", "DELIVRD")])
        clock.now = T0 + 3600 + 10
        store.prune()
        assert [r.message_id for r in _all(store)] == ["new"]
        assert store.segment_rows() == [("new", 1)]
        assert store.pruned == 1


def test_pruning_goes_on_after_the_wall_clock_steps_back(open_store: Opener, clock: Clock):
    # Pruning ran every minute by the wall clock: stepped back a day (NTP, a restored
    # VM), the store stopped pruning for a day, and PostgreSQL replicas skipped it while
    # another replica's last pruning looked a day in the future.
    with closing(open_store(clock=clock, retention=3600)) as store:
        store.add_reports([StatusReport("m1", "DELIVRD", template_id="t")])  # prunes first
        store.settle()
        clock.now -= 86400
        store.register([SendRegistration("old", "t", clock.now - 7200)])
        store.settle()
        assert store.message_count() == 1  # "old" was pruned after the write, "m1" kept


def test_concurrent_writers_share_commits_and_lose_nothing(store: ReportStore):
    def push(worker: int) -> None:
        for i in range(50):
            store.add_reports([StatusReport(f"w{worker}-{i}", "DELIVRD", template_id="t")])

    threads = [threading.Thread(target=push, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.message_count() == 400
    assert store.commits <= 400


def test_writes_after_close_are_refused(open_store: Opener):
    store = open_store()
    store.close()
    with pytest.raises(StoreUnavailable):
        store.add_reports([StatusReport("m", "DELIVRD")])


def test_reads_after_close_are_upstream_errors(open_store: Opener):
    store = open_store()
    store.close()
    assert not store.available()
    with pytest.raises(UpstreamUnavailable, match="push store: closed"):
        store.query(DetailsQuery(0, 1))
    with pytest.raises(UpstreamUnavailable):
        store.list_templates()


def test_synchronous_mode_is_checked(tmp_path: Path):
    with pytest.raises(ValueError, match="synchronous"):
        PushStore(tmp_path / "p.db", synchronous="off")


def test_an_acceptd_report_keeps_the_message_sending_until_its_final_report(store: ReportStore):
    store.register([SendRegistration("m1", "tplA", T0)])
    first = store.add_reports([StatusReport("m1", "ACCEPTD", update_time=T0 + 1)])
    (record,) = _all(store)
    assert (first.stored, record.send_result, record.receive_time) == (1, SendResult.SENDING, None)
    final = store.add_reports([StatusReport("m1", "DELIVRD", update_time=T0 + 5)])
    (record,) = _all(store)
    assert final.stored == 1
    assert (record.send_result, record.status_code, record.receive_time) == (
        SendResult.SUCCESS,
        "DELIVRD",
        T0 + 5,
    )


def test_a_late_non_final_report_never_replaces_a_final_one(store: ReportStore):
    store.add_reports([StatusReport("m1", "UNDELIV", update_time=T0 + 5, template_id="t")])
    late = store.add_reports([StatusReport("m1", "ACCEPTD", update_time=T0 + 1)])
    again = store.add_reports([StatusReport("m1", "DELIVRD", update_time=T0 + 9)])
    (record,) = _all(store)
    assert (late.duplicates, again.duplicates) == (1, 1)
    assert (record.send_result, record.status_code) == (SendResult.FAILED, "UNDELIV")


def test_a_long_sms_with_an_accepted_segment_is_not_failed():
    segs = [Segment(1, 2, "DELIVRD", "", 1000), Segment(2, 2, "ACCEPTD", "", 1500)]
    assert message_outcome(segs, 2).result is SendResult.SENDING
    done = [segs[0], Segment(2, 2, "DELIVRD", "", 2500)]
    assert (message_outcome(done, 2).result, message_outcome(done, 2).receive_ms) == (
        SendResult.SUCCESS,
        2500,
    )


def test_an_unstorable_item_is_refused_alone(store: ReportStore):
    result = store.add_reports(
        [
            StatusReport("ok1", "DELIVRD", template_id="t"),
            StatusReport("bad", "DELIVRD", status_desc="\ud800", template_id="t"),
            StatusReport("ok2", "UNDELIV", template_id="t"),
        ]
    )
    assert (result.stored, result.rejected) == (2, [1])
    assert sorted(r.message_id for r in _all(store)) == ["ok1", "ok2"]
    sends = store.register(
        [SendRegistration("r1", "t", T0), SendRegistration("r2", "t", T0, mobile="\udfff")]
    )
    assert (sends.stored, sends.rejected) == (1, [1])


def test_concurrent_unstorable_items_cost_no_other_request_its_reports(store: ReportStore):
    failures: list[BaseException] = []
    rejected: list[int] = []

    def push(worker: int) -> None:
        try:
            for i in range(20):
                reports = [
                    StatusReport(f"w{worker}-{i}-{k}", "DELIVRD", template_id="t") for k in range(5)
                ]
                if worker % 3 == 0:
                    reports.append(StatusReport(f"p{worker}-{i}", "X", status_desc="\ud800"))
                result = store.add_reports(reports)
                rejected.extend(result.rejected)
        except BaseException as exc:  # pragma: no cover - the failure the test looks for
            failures.append(exc)

    threads = [threading.Thread(target=push, args=(w,)) for w in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert store.message_count() == 12 * 20 * 5
    assert rejected == [5] * (4 * 20)


def test_writes_handed_over_without_waiting_are_told_their_result(store: ReportStore):
    told: list[tuple[object, object]] = []
    done = threading.Event()

    def then(result: object, failure: object) -> None:
        told.append((result, failure))
        if len(told) == 3:
            done.set()

    store.register_then([SendRegistration("m1", "t", T0)], then)
    store.add_reports_then([StatusReport("m1", "DELIVRD", update_time=T0 + 5)], then)
    store.add_reports_then([StatusReport("m1", "DELIVRD", update_time=T0 + 5)], then)
    assert done.wait(30)
    assert [(r.stored, r.duplicates, f) for r, f in told] == [
        (1, 0, None),
        (1, 0, None),
        (0, 1, None),
    ]  # type: ignore[attr-defined]
    assert [r.send_result for r in _all(store)] == [SendResult.SUCCESS]


def test_a_write_handed_over_after_close_is_refused_at_once(open_store: Opener):
    store = open_store()
    store.close()
    with pytest.raises(StoreUnavailable):
        store.add_reports_then([StatusReport("m", "DELIVRD")], lambda *_: None)


def test_the_wal_is_copied_into_the_database_off_the_writer_and_emptied_at_close(
    tmp_path: Path, clock: Clock
):
    path = tmp_path / "push.db"
    store = PushStore(path, clock=clock)
    store.add_reports([StatusReport(f"m{i}", "DELIVRD", template_id="t") for i in range(200)])
    # The commit only appended to the WAL; the checkpointer (about every second, on its
    # own thread) copies it into the database file itself.
    deadline = time.monotonic() + 30
    while _in_database_file(path, tmp_path / "copy.db") != 200:
        assert time.monotonic() < deadline, "the WAL was never checkpointed"
        time.sleep(0.05)
    store.close()
    wal = tmp_path / "push.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0


def _in_database_file(path: Path, copy: Path) -> int:
    """Messages in the database file alone (a copy without its WAL)."""
    shutil.copyfile(path, copy)
    with closing(sqlite3.connect(copy)) as conn:
        found = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'messages'")
        if found.fetchone() == (0,):
            return 0
        (count,) = conn.execute("SELECT count(*) FROM messages").fetchone()
    copy.unlink()
    return int(count)


def test_a_wal_the_checkpointer_cannot_catch_up_with_is_started_over_by_the_writer(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(sqlitewriter, "WAL_RESTART_BYTES", 4 * 1024)
    path = tmp_path / "push.db"
    wal = tmp_path / "push.db-wal"
    with PushStore(path, clock=clock) as store:
        store.add_reports([StatusReport(f"a{i}", "DELIVRD") for i in range(300)])
        first = _wal_generation(wal)
        # Once a passive checkpoint has seen the WAL past the limit, the writer copies
        # the rest between two groups, and the next write starts the WAL over.
        deadline = time.monotonic() + 30
        written = 0
        while _wal_generation(wal) == first:
            assert time.monotonic() < deadline, "the WAL never started over"
            time.sleep(0.05)
            store.add_reports([StatusReport(f"b{written}", "DELIVRD")])
            written += 1
            store.settle()  # the maintenance after that group has run
        assert wal.stat().st_size <= sqlitewriter.WAL_SIZE_LIMIT
        assert store.message_count() == 300 + written


def test_the_writer_never_waits_for_a_reader_to_start_the_wal_over(tmp_path: Path):
    path = tmp_path / "push.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE t (x)")
    writer.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1000)])
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # holds a snapshot in the WAL
    checkpoints = sqlitewriter.Checkpointer(str(path), "normal", every=3600)
    checkpoints.wal_frames = 10**9
    started = time.monotonic()
    checkpoints.restart(writer)  # busy: returns at once, and tries again later
    assert time.monotonic() - started < sqlitewriter.BUSY_TIMEOUT_MS / 1000
    assert checkpoints.behind
    assert writer.execute("PRAGMA busy_timeout").fetchone() == (sqlitewriter.BUSY_TIMEOUT_MS,)
    reader.execute("COMMIT")
    checkpoints.restart(writer)
    assert not checkpoints.behind
    first = _wal_generation(tmp_path / "push.db-wal")
    writer.execute("INSERT INTO t VALUES (0)")
    assert _wal_generation(tmp_path / "push.db-wal") == first + 1
    checkpoints.close()
    reader.close()
    writer.close()


def _wal_generation(wal: Path) -> int:
    """The WAL header's checkpoint sequence number: it counts the times the WAL started
    over (https://sqlite.org/fileformat2.html, the WAL header)."""
    with wal.open("rb") as file:
        header = file.read(16)
    return int.from_bytes(header[12:16], "big")


def test_a_new_store_uses_small_pages_and_an_old_store_keeps_its_own(tmp_path: Path):
    with PushStore(tmp_path / "new.db") as store:
        store.add_reports([StatusReport("m", "DELIVRD")])
    old = tmp_path / "old.db"
    with closing(sqlite3.connect(old)) as conn:
        conn.execute("PRAGMA page_size=4096")
        conn.execute("CREATE TABLE other (x)")
    with PushStore(old) as store:
        store.add_reports([StatusReport("m", "DELIVRD")])
        assert store.message_count() == 1
    for path, size in ((tmp_path / "new.db", sqlitewriter.PAGE_SIZE), (old, 4096)):
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("PRAGMA page_size").fetchone() == (size,)


def test_a_single_segments_outcome_follows_the_rules_for_any_number_of_segments():
    codes = ["DELIVRD", "ACCEPTD", "UNDELIV", "REJECTD", "E200015", " delivrd", ""]
    for code in codes:
        for total in (1, 2):
            for expected in (1, 2):
                segs = [Segment(1, total, code, "desc" if total == 2 else "", 1000)]
                assert message_outcome(segs, expected) == segments_outcome(segs, expected), (
                    code,
                    total,
                    expected,
                )


def test_any_text_a_report_carries_is_stored_as_sent(store: ReportStore):
    odd = ["短信已送达 ✓", 'quote " back\\slash \\u0041', "tab\tnew\nline", "emoji 📨", "[1,{}]"]
    store.register([SendRegistration(f"u{i}", f"模板-{i}", T0) for i in range(len(odd))])
    store.add_reports(
        [
            StatusReport(f"u{i}", "UNDELIV", status_desc=desc, update_time=T0 + 5)
            for i, desc in enumerate(odd)
        ]
    )
    stored = {r.message_id: r for r in _all(store)}
    assert [(stored[f"u{i}"].template_id, stored[f"u{i}"].status_desc) for i in range(5)] == [
        (f"模板-{i}", desc) for i, desc in enumerate(odd)
    ]


def test_a_use_that_began_before_a_success_and_failed_after_it_leaves_the_store_up(
    tmp_path: Path,
) -> None:
    # A poll that began while the database was down fails after a push found it back:
    # msgsms_push_store_up follows the latest use to begin, not the last to finish.
    with PushStore(tmp_path / "push.db") as store:
        store._used(True, began=2.0)
        store._used(False, began=1.0)
        assert store.up
        store._used(False, began=3.0)
        assert not store.up
