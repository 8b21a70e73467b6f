from exporter.ranges import chunks_newest_first, coalesce, pages, runs


def test_minutes_become_contiguous_runs():
    assert runs([180, 0, 60, 300]) == [(0, 120), (180, 240), (300, 360)]


def test_runs_are_chunked_newest_first():
    assert list(chunks_newest_first([(0, 300)], 120)) == [(180, 300), (60, 180), (0, 60)]


def test_whole_second_times_are_read_a_second_at_a_time_and_share_a_range_when_it_fits():
    # 30 records a second: two seconds fit a page of 100 (at 80 %), a third does not.
    ranges = coalesce([10.0, 10.0, 11.0, 12.0, 40.0], 30.0, 100, 86400.0, grain=1.0)
    assert ranges == [(10.0, 12.0), (12.0, 13.0), (40.0, 41.0)]
    assert pages(ranges, 30.0, 100) == 3


def test_a_busy_second_costs_the_pages_of_all_its_records():
    # 278 records a second across templates: one second is three pages.
    assert pages([(10.0, 11.0)], 278.0, 100) == 3
