"""The exporter against the simulator over real HTTP, compared with the simulator's truth."""

from __future__ import annotations

import subprocess

from conftest import Simulator, config_for, require_binary
from exposition import exported_window
from exposition import samples as parse_samples

from exporter.app import Exporter


def _bounds(samples):
    start = next(iter(samples["msgsms_window_start_timestamp_seconds"].values()))
    end = next(iter(samples["msgsms_window_end_timestamp_seconds"].values()))
    return start, end


def test_window_counts_equal_truth_at_every_poll_for_two_simulated_hours(
    manual_simulator: Simulator, request
):
    sim = manual_simulator
    exporter = Exporter(config_for(sim.url), clock=sim.now)
    request.addfinalizer(exporter.stop)  # before the test ends, so no socket outlives it
    compared = 0
    for _ in range(120):
        sim.advance(60)
        assert exporter.poll_once()
        samples = parse_samples(exporter.exposition_text())
        start, end = _bounds(samples)
        assert end - start == 3600
        truth = sim.truth(start, end)
        exported = exported_window(samples)
        expected = {
            tid: {
                "success": t["success"],
                "failed": t["failed"],
                "sending": t["sending"],
                "status_codes": t["status_codes"],
            }
            for tid, t in truth.items()
        }
        assert exported == expected
        for tid, t in truth.items():
            gsum = samples["msgsms_window_delivery_delay_seconds_gsum"]
            key = (("account", "sim"), ("template", tid), ("window", "1h"))
            assert abs(gsum[key] - t["delivery_delay_seconds_sum"]) < 1e-6
        compared += 1
    assert compared == 120
    # The scenario really exercised the interesting cases.
    totals = {k: sum(v[k] for v in expected.values()) for k in ("success", "failed", "sending")}
    assert totals["success"] > 500
    assert totals["failed"] > 5
    assert totals["sending"] > 0


def test_counters_count_each_message_once(manual_simulator: Simulator, request):
    sim = manual_simulator
    exporter = Exporter(config_for(sim.url), clock=sim.now)
    request.addfinalizer(exporter.stop)  # before the test ends, so no socket outlives it
    sim.advance(60)
    exporter.poll_once()
    first = parse_samples(exporter.exposition_text())
    start, _ = _bounds(first)
    for _ in range(30):
        sim.advance(60)
        exporter.poll_once()
    last = parse_samples(exporter.exposition_text())
    _, end = _bounds(last)
    # Messages sent in [start, end) — all seen, each counted once.
    truth = sim.truth(start, end)
    sent = last["msgsms_messages_sent_total"]
    for tid, t in truth.items():
        key = (("account", "sim"), ("template", tid))
        assert sent[key] == t["success"] + t["failed"] + t["sending"]
    finalized = last["msgsms_messages_finalized_total"]
    delivered = sum(v for k, v in finalized.items() if ("result", "success") in k)
    assert delivered == sum(t["success"] for t in truth.values())


def test_exposition_passes_promtool_check_metrics(manual_simulator: Simulator):
    promtool = require_binary("promtool")
    config = config_for(manual_simulator.url, top_status_codes=3)
    with Exporter(config, clock=manual_simulator.now) as exporter:
        manual_simulator.advance(60)
        assert exporter.poll_once()
        exposition = exporter.exposition_text()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.decode() + result.stderr.decode() == ""
