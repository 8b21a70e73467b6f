from exporter.stats import INF, Histogram, RequestStats, bucket_index, cumulative, le_label


def test_a_value_on_a_bound_falls_in_that_bucket_and_above_the_last_in_inf():
    bounds = (0.1, 1.0, 10.0)
    assert [bucket_index(bounds, v) for v in (0.0, 0.1, 0.2, 1.0, 10.0, 10.5)] == [0, 0, 1, 1, 2, 3]


def test_cumulative_counts_end_with_inf_holding_every_observation():
    assert cumulative((1.0, 5.0), [2, 0, 3]) == ((1.0, 2), (5.0, 2), (INF, 5))


def test_a_histogram_keeps_buckets_sum_and_count():
    histogram = Histogram((1.0, 5.0))
    for value in (0.5, 1.0, 4.0, 60.0):
        histogram.observe(value)
    value = histogram.value()
    assert value.buckets == ((1.0, 2), (5.0, 3), (INF, 4))
    assert (value.total, value.count) == (65.5, 4)


def test_le_labels_are_prometheus_floats():
    assert [le_label(b) for b in (0.005, 1, INF)] == ["0.005", "1.0", "+Inf"]


def test_request_stats_count_codes_throttling_retries_and_durations():
    stats = RequestStats()
    stats.observe("send_details", "200", 0.004)
    stats.observe("send_details", "429", 0.3)
    stats.count_retry()
    totals = stats.totals()
    assert totals.by_code == {("send_details", "200"): 1, ("send_details", "429"): 1}
    assert (totals.throttled, totals.retries, stats.request_count) == (1, 1, 2)
    duration = totals.durations["send_details"]
    assert duration.buckets[0] == (0.005, 1)
    assert duration.buckets[-1] == (INF, 2)
    assert duration.count == 2
