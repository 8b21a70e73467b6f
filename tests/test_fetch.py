from dataclasses import dataclass, field

import pytest

from exporter.errors import UpstreamMalformed
from exporter.fetch import RecordList, read_range
from exporter.records import DetailsPage, DetailsQuery, RejectedRecord, SendRecord, SendResult


def rec(i):
    return SendRecord(f"m{i:03d}", "T1", "", float(i), SendResult.SENDING, "", "", None, 1)


@dataclass
class ScriptedSource:
    """Answers each query from a list of (total, records) pages in order."""

    pages: list
    queries: list = field(default_factory=list)

    def query(self, query):
        self.queries.append(query)
        total, records, rejected = self.pages.pop(0)
        return DetailsPage(total, records, rejected)


QUERY = DetailsQuery(start_time=0, end_time=100, template_id="T1", limit=2)


def test_reads_every_page_until_total():
    source = ScriptedSource([(3, [rec(1), rec(2)], []), (3, [rec(3)], [])])
    read = read_range(source, QUERY, RecordList)
    assert [r.message_id for r in read.sink.records] == ["m001", "m002", "m003"]
    assert [q.offset for q in source.queries] == [0, 2]
    assert read.requests == 2


def test_counts_a_record_repeated_across_pages_once_and_reads_the_one_it_pushed_out():
    # A record shifted across the page boundary shows up twice and pushes m004 one page on.
    source = ScriptedSource(
        [(4, [rec(1), rec(2)], []), (4, [rec(2), rec(3)], []), (4, [rec(3), rec(4)], [])]
    )
    read = read_range(source, QUERY, RecordList)
    assert [r.message_id for r in read.sink.records] == ["m001", "m002", "m003", "m004"]
    assert [q.offset for q in source.queries] == [0, 2, 3]


def test_reads_past_a_total_that_lags_the_records_until_a_page_is_not_full():
    # The count was taken before m004 and m005 landed: the second page, full, ends past
    # the total, and only the third shows where the records end.
    pages = [(3, [rec(1), rec(2)], []), (3, [rec(3), rec(4)], []), (3, [rec(5)], [])]
    source = ScriptedSource(pages)
    read = read_range(source, QUERY, RecordList)
    assert [r.message_id for r in read.sink.records] == ["m001", "m002", "m003", "m004", "m005"]
    assert [q.offset for q in source.queries] == [0, 2, 4]


def test_an_honest_total_filling_the_last_page_costs_one_empty_page():
    source = ScriptedSource([(4, [rec(1), rec(2)], []), (4, [rec(3), rec(4)], []), (4, [], [])])
    read = read_range(source, QUERY, RecordList)
    assert [r.message_id for r in read.sink.records] == ["m001", "m002", "m003", "m004"]
    assert [q.offset for q in source.queries] == [0, 2, 4]


def test_reads_again_when_pages_held_fewer_records_than_the_total():
    pages = [(3, [rec(1), rec(2)], []), (3, [], []), (3, [rec(1), rec(2)], []), (3, [rec(3)], [])]
    read = read_range(ScriptedSource(pages), QUERY, RecordList)
    assert [r.message_id for r in read.sink.records] == ["m001", "m002", "m003"]


def test_counts_rejected_records_by_reason_and_keeps_paging():
    bad = RejectedRecord(1, "wrong_type", "x")
    source = ScriptedSource([(3, [rec(1)], [bad]), (3, [rec(3)], [])])
    read = read_range(source, QUERY, RecordList)
    assert len(read.sink.records) == 2
    assert read.fetched == 2
    assert read.rejected == {"wrong_type": 1}


def test_starts_over_when_the_total_changes_while_paging():
    source = ScriptedSource(
        [(3, [rec(1), rec(2)], []), (4, [rec(3)], []), (3, [rec(1), rec(2)], []), (3, [rec(3)], [])]
    )
    read = read_range(source, QUERY, RecordList)
    assert [r.message_id for r in read.sink.records] == ["m001", "m002", "m003"]
    assert read.requests == 4


def test_gives_up_when_the_total_never_settles():
    pages = [(n, [rec(1), rec(2)], []) for n in (3, 4, 5, 6, 7, 8)]
    with pytest.raises(UpstreamMalformed, match="kept changing"):
        read_range(ScriptedSource(pages), QUERY, RecordList)


def test_a_shrinking_sending_scan_reads_through_once_instead_of_failing():
    # m001 resolves after the first page: the set shrinks, m003 moves to offset 1 (skipped).
    pages = [(4, [rec(1), rec(2)], []), (3, [rec(4)], [])]
    read = read_range(ScriptedSource(list(pages)), QUERY, RecordList, shrinking=True)
    assert [r.message_id for r in read.sink.records] == ["m001", "m002", "m004"]
    assert read.requests == 2
    with pytest.raises(UpstreamMalformed):  # without it, the read starts over and gives up
        read_range(ScriptedSource(list(pages) * 3), QUERY, RecordList)
