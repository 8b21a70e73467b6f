"""The exporter against a misbehaving simulator over real HTTP.

Each test injects faults with ``POST /-/faults``, polls an in-process exporter on the
simulator's manual clock, and reads only what a user sees: the exposition, compared
with ``/-/truth``. Waits between retries are recorded, not slept.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from conftest import START, Simulator, account_for, config_for
from exposition import Samples, exported_window, samples, total, value
from health import free_port
from simulator_process import simulator_process

from exporter.app import Exporter
from exporter.config import Secret, TemplateSelection


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """One manual-clock simulator for the module; faults are cleared after each test.

    The gateway's own rate limit is off: waits are not slept here, so only the faults
    injected on purpose throttle.
    """
    args = ("--clock", "manual", "--start-time", START, "--history", "1h", "--scale", "0.05")
    args = (*args, "--rate-limit", "0")
    with simulator_process(*args) as url, httpx.Client(timeout=30) as http:
        yield Simulator(url, http)


@pytest.fixture(autouse=True)
def _clear_faults(sim: Simulator) -> Iterator[None]:
    yield
    sim.http.delete(f"{sim.url}/-/faults").raise_for_status()


class Run:
    """An exporter polled by hand against the simulator, with its retry waits recorded."""

    def __init__(self, sim: Simulator, exporter: Exporter, slept: list[float]) -> None:
        self.sim = sim
        self.exporter = exporter
        self.slept = slept

    def poll(self, advance: float = 60) -> Samples:
        if advance:
            self.sim.advance(advance)
        self.exporter.poll_once()
        return samples(self.exporter.exposition_text())

    def poll_truth(self, advance: float = 60) -> Samples:
        """Poll, and assert that the exported window equals the simulator's truth."""
        polled = self.poll(advance)
        assert_equals_truth(self.sim, polled)
        return polled


@pytest.fixture
def run(sim: Simulator, request: pytest.FixtureRequest) -> Iterator[Any]:
    made: list[Exporter] = []

    def make(sleep: Any = None, account: Any = None, **overrides: object) -> Run:
        config = config_for(sim.url, **overrides)
        if account is not None:
            config = replace(config, accounts=(account,))
        slept: list[float] = []
        exporter = Exporter(config, clock=sim.now, sleep=sleep or slept.append)
        made.append(exporter)
        return Run(sim, exporter, slept)

    yield make
    for exporter in made:
        exporter.stop()


def faults(sim: Simulator, *rules: dict[str, Any]) -> None:
    sim.post("/-/faults", {"rules": list(rules)})


def once(fault: str, endpoint: str = "send-details", **fields: object) -> dict[str, Any]:
    """A rule that breaks the next answer of one endpoint."""
    return {"fault": fault, "count": 1, "endpoints": [endpoint], **fields}


def assert_equals_truth(sim: Simulator, s: Samples) -> None:
    assert value(s, "msgsms_up") == 1
    start = value(s, "msgsms_window_start_timestamp_seconds", window="1h")
    end = value(s, "msgsms_window_end_timestamp_seconds", window="1h")
    truth = sim.truth(start, end)
    exported = exported_window(s)
    expected = {
        tid: {k: t[k] for k in ("success", "failed", "sending", "status_codes")}
        for tid, t in truth.items()
        if tid in exported
    }
    assert exported == expected
    assert sum(t["success"] for t in expected.values()) > 0


def test_a_5xx_burst_is_retried_and_the_poll_still_equals_truth(sim: Simulator, run) -> None:
    r = run()
    faults(sim, {"fault": "status", "status": 503, "retry_after": None, "count": 2})
    faults_after = r.poll_truth()
    assert value(faults_after, "msgsms_upstream_retries_total") == 2
    assert total(faults_after, "msgsms_upstream_requests_total", code="503") == 2
    assert len(r.slept) == 2


def test_a_5xx_burst_that_spends_the_request_budget_mid_poll_is_not_shown_as_exact(
    sim: Simulator, run
) -> None:
    r = run()
    r.poll_truth()
    r.exporter.reload(replace(r.exporter.config, request_budget=6))  # a steady poll fits
    r.poll_truth()
    faults(sim, {"fault": "status", "status": 503, "retry_after": None, "count": 8})
    s = r.poll()
    assert value(s, "msgsms_up") == 0
    assert value(s, "msgsms_window_complete", window="1h") == 0
    sim.http.delete(f"{sim.url}/-/faults").raise_for_status()
    r.exporter.reload(replace(r.exporter.config, request_budget=2000))
    s = r.poll_truth()
    assert value(s, "msgsms_window_complete", window="1h") == 1


def test_429_with_and_without_retry_after_is_throttled_retried_and_waited_for(
    sim: Simulator, run
) -> None:
    r = run()
    faults(
        sim,
        {"fault": "status", "status": 429, "retry_after": 2, "count": 1},
        {"fault": "status", "status": 429, "retry_after": None, "count": 1},
    )
    s = r.poll_truth()
    assert value(s, "msgsms_upstream_throttled_total") == 2
    assert value(s, "msgsms_upstream_retries_total") == 2
    assert r.slept[0] == 2.0
    assert 0 <= r.slept[1] <= 1.0  # full jitter from the first backoff step


def test_the_one_query_at_a_time_refusal_is_waited_out(sim: Simulator, run) -> None:
    r = run()
    faults(sim, {"fault": "busy", "count": 3, "endpoints": ["send-details"]})
    s = r.poll_truth()
    assert r.slept == [1.0, 1.0, 1.0]
    assert value(s, "msgsms_upstream_throttled_total") == 3


def test_connection_resets_are_retried(sim: Simulator, run) -> None:
    r = run()
    faults(sim, {"fault": "reset", "count": 2})
    s = r.poll_truth()
    assert total(s, "msgsms_upstream_requests_total", code="error") == 2
    assert value(s, "msgsms_upstream_retries_total") == 2


def test_a_response_slower_than_the_timeout_is_abandoned_and_retried(sim: Simulator, run) -> None:
    # Real waits here: the simulator keeps the slow query running (and refuses a second
    # one with Retry-After: 1) until it answers. The timeout leaves every other request
    # seconds to spare on a loaded machine (0.3 s once timed out a second one), and the
    # slow answer comes a second after it, well within the 4 attempts' waits.
    r = run(sleep=time.sleep, request_timeout=2.0)
    faults(sim, once("slow", seconds=3.0))
    s = r.poll_truth()
    assert total(s, "msgsms_upstream_requests_total", code="error") == 1
    assert value(s, "msgsms_upstream_retries_total") >= 1


def test_truncated_json_and_a_wrongly_typed_page_are_retried(sim: Simulator, run) -> None:
    r = run()
    faults(sim, once("truncated"), once("wrong_page_types"), once("truncated", "templates"))
    s = r.poll_truth()
    assert value(s, "msgsms_upstream_retries_total") == 3


def test_bad_records_are_counted_by_reason_and_skipped_then_truth_again(
    sim: Simulator, run
) -> None:
    r = run(page_size=10)
    r.poll_truth()
    faults(sim, once("wrong_types"), once("missing_fields"), once("unknown_send_result"))
    s = r.poll()
    assert value(s, "msgsms_up") == 1
    assert value(s, "msgsms_records_rejected_total", reason="wrong_type") == 1
    assert value(s, "msgsms_records_rejected_total", reason="missing_field") == 1
    assert value(s, "msgsms_records_rejected_total", reason="unknown_send_result") == 1
    r.poll_truth()


@pytest.mark.parametrize("discover", [True, False], ids=["across-templates", "per-template"])
def test_a_window_lacking_a_malformed_record_is_not_shown_complete(
    sim: Simulator, run, discover: bool
) -> None:
    # The first record of every page is broken: skipped and counted, so the window lacks
    # those records. It was exported complete all the same, short of the truth.
    account = account_for(sim.url)
    if not discover:
        ids = ("2b8e6b2f0c1d4c1f9a7e3d5b6c8a9f01", "8ff55eac1d0b478ab3c06c3c6a492300")
        account = replace(account, templates=TemplateSelection(ids=ids))
    r = run(page_size=10, account=account)
    r.poll_truth()
    faults(sim, {"fault": "unknown_send_result", "endpoints": ["send-details"]})
    for _ in range(3):
        s = r.poll()
        assert value(s, "msgsms_up") == 1
        assert value(s, "msgsms_records_rejected_total", reason="unknown_send_result") > 0
        assert value(s, "msgsms_window_complete", window="1h") == 0
    sim.http.delete(f"{sim.url}/-/faults").raise_for_status()
    for _ in range(2):  # the records read whole again: exact, and shown so
        s = r.poll_truth()
        assert value(s, "msgsms_window_complete", window="1h") == 1


def test_a_template_no_longer_selected_leaves_no_malformed_record_doubt_behind(
    sim: Simulator, run
) -> None:
    ids = ("2b8e6b2f0c1d4c1f9a7e3d5b6c8a9f01", "8ff55eac1d0b478ab3c06c3c6a492300")
    account = replace(account_for(sim.url), templates=TemplateSelection(ids=ids))
    r = run(page_size=10, account=account)
    r.poll_truth()
    faults(sim, {"fault": "unknown_send_result", "endpoints": ["send-details"]})
    assert value(r.poll(), "msgsms_window_complete", window="1h") == 0
    one = replace(account, templates=TemplateSelection(ids=ids[:1]))
    r.exporter.reload(replace(r.exporter.config, accounts=(one,)))
    sim.http.delete(f"{sim.url}/-/faults").raise_for_status()
    for _ in range(2):  # the dropped template's minutes are never read again
        s = r.poll_truth()
    assert sorted(exported_window(s)) == [ids[0]]
    assert value(s, "msgsms_window_complete", window="1h") == 1


def test_an_unknown_status_code_is_exported_as_category_unknown(sim: Simulator, run) -> None:
    r = run(page_size=10)
    # Before the first poll, so the broken record is on a page the exporter keeps.
    faults(sim, once("unknown_status_code"))
    s = r.poll()
    assert value(s, "msgsms_up") == 1
    unknown = {
        dict(k)["status_code"]: dict(k)["category"]
        for k in s["msgsms_window_status_code_messages"]
        if dict(k)["status_code"] == "ZZ:9999"
    }
    assert unknown == {"ZZ:9999": "unknown"}


def test_records_duplicated_across_pages_are_counted_once(sim: Simulator, run) -> None:
    r = run(page_size=10)
    faults(sim, {"fault": "duplicate_records", "shift": 3, "count": 5})
    s = r.poll_truth()
    sent_before = total(s, "msgsms_messages_sent_total")
    # The duplicated records did not grow the counters either.
    window = exported_window(s)
    assert sent_before == sum(t["success"] + t["failed"] + t["sending"] for t in window.values())


def test_records_shifted_while_the_total_changes_restart_the_read(sim: Simulator, run) -> None:
    r = run(page_size=10)
    faults(sim, {"fault": "shift_records", "count": 1})
    r.poll_truth()


@pytest.mark.parametrize("page_size", [10, 100])
def test_a_total_lagging_the_records_never_hides_the_newest_records(
    sim: Simulator, run, page_size: int
) -> None:
    # An upstream whose count is taken before its newest records landed: every page's
    # total is a few records short. A full page that already ran past the total was
    # taken for the last one, and the records after it went uncounted in a window
    # shown complete.
    r = run(page_size=page_size)
    r.poll_truth()
    faults(sim, {"fault": "total_behind", "shift": 3, "endpoints": ["send-details"]})
    for _ in range(10):
        s = r.poll_truth()
        assert value(s, "msgsms_window_complete", window="1h") == 1


def test_staleness_keeps_the_last_good_window_then_withdraws_it_and_recovers(
    sim: Simulator, run
) -> None:
    r = run(max_staleness=2)
    good = r.poll_truth()
    good_window = exported_window(good)
    faults(sim, {"fault": "status", "status": 500})
    assert value(good, "msgsms_window_complete", window="1h") == 1
    for _ in range(2):  # within max_staleness: down, the last good window still shown
        s = r.poll()
        assert value(s, "msgsms_up") == 0
        assert exported_window(s) == good_window
        # ... but no longer as the exact window up to now.
        assert value(s, "msgsms_window_complete", window="1h") == 0
        assert value(s, "msgsms_last_poll_success_timestamp_seconds") == value(
            good, "msgsms_last_poll_success_timestamp_seconds"
        )
    s = r.poll()  # past max_staleness: window series withdrawn, self-metrics stay
    assert value(s, "msgsms_up") == 0
    assert "msgsms_window_messages" not in s
    assert total(s, "msgsms_upstream_requests_total", code="500") > 0
    assert value(s, "msgsms_upstream_retries_total") > 0
    assert value(s, "msgsms_poll_failures_total", reason="unavailable") == 3
    assert value(s, "msgsms_poll_failures_total", reason="rejected") == 0
    sim.http.delete(f"{sim.url}/-/faults").raise_for_status()
    recovered = r.poll_truth()
    assert value(recovered, "msgsms_poll_failures_total", reason="unavailable") == 3


def test_the_data_lag_grows_while_polls_fail_and_falls_back_on_recovery(
    sim: Simulator, run
) -> None:
    r = run(max_staleness=1)
    good = r.poll_truth()
    lag = value(good, "msgsms_data_lag_seconds")
    end = value(good, "msgsms_window_end_timestamp_seconds", window="1h")
    faults(sim, {"fault": "status", "status": 500})
    for polls in (1, 2):  # the kept window, then none: either way the data ages
        s = r.poll(advance=60)
        assert value(s, "msgsms_up") == 0
        assert value(s, "msgsms_data_lag_seconds") == lag + 60 * polls
        assert sim.now() - end == lag + 60 * polls
    sim.http.delete(f"{sim.url}/-/faults").raise_for_status()
    assert value(r.poll_truth(), "msgsms_data_lag_seconds") == lag


def test_clock_skew_is_rejected_without_retries_and_recovers(sim: Simulator, run) -> None:
    r = run()
    r.poll_truth()
    faults(sim, {"fault": "clock_skew", "seconds": 1800})
    s = r.poll()
    assert value(s, "msgsms_up") == 0
    assert total(s, "msgsms_upstream_requests_total", code="401") == 1
    assert value(s, "msgsms_upstream_retries_total") == 0
    assert value(s, "msgsms_poll_failures_total", reason="rejected") == 1
    sim.http.delete(f"{sim.url}/-/faults").raise_for_status()
    r.poll_truth()


def test_an_expired_token_is_rejected_and_recovers(sim: Simulator, run) -> None:
    token_account = replace(
        account_for(sim.url), access_key=None, secret_key=None, token=Secret("demo-token")
    )
    r = run(account=token_account)
    r.poll_truth()
    faults(sim, {"fault": "expired_token"})
    s = r.poll()
    assert value(s, "msgsms_up") == 0
    assert total(s, "msgsms_upstream_requests_total", code="401") == 1
    sim.http.delete(f"{sim.url}/-/faults").raise_for_status()
    r.poll_truth()


def test_a_template_deleted_upstream_stops_being_exported(sim: Simulator, run) -> None:
    r = run()
    first = r.poll_truth()
    victim = sorted(exported_window(first))[0]
    faults(sim, {"fault": "template_deleted", "template_id": victim})
    # The exporter re-reads the template list every 10 minutes; by then the template is
    # gone from the exposition, and the other templates equal the truth.
    for _ in range(11):
        s = r.poll()
    assert victim not in exported_window(s)
    assert all(dict(k)["template"] != victim for k in s["msgsms_template_info"])
    assert_equals_truth(sim, s)


def test_a_listed_template_deleted_upstream_is_dropped_and_the_others_stay_up(
    sim: Simulator, run
) -> None:
    ids = ("2b8e6b2f0c1d4c1f9a7e3d5b6c8a9f01", "5c3a9e7d1b2f4a6c8e0d2f4b6a8c0e13")
    r = run(account=replace(account_for(sim.url), templates=TemplateSelection(ids=ids)))
    r.poll_truth()
    faults(sim, {"fault": "template_deleted", "template_id": ids[1]})
    s = r.poll()  # its 404 fails this poll and has the template list read again
    assert value(s, "msgsms_up") == 0
    for _ in range(3):  # the configured id the list no longer has is no longer queried
        s = r.poll_truth()
    assert sorted(exported_window(s)) == [ids[0]]
    sim.http.delete(f"{sim.url}/-/faults").raise_for_status()
    for _ in range(11):  # listed again (at the next read of the list): exported again
        s = r.poll()
    assert sorted(exported_window(s)) == list(ids)
    assert value(s, "msgsms_window_complete", window="1h") == 1
    assert_equals_truth(sim, s)


def test_a_template_deleted_but_still_answering_is_dropped_without_failing(
    sim: Simulator, run
) -> None:
    r = run()
    first = r.poll()
    victim = sorted(exported_window(first))[-1]
    faults(sim, {"fault": "template_deleted", "template_id": victim, "not_found": False})
    for _ in range(11):
        s = r.poll_truth()
    assert victim not in exported_window(s)


def test_connection_refused_is_down_with_errors_counted(sim: Simulator, run) -> None:
    dead = replace(account_for(sim.url), endpoint=f"http://127.0.0.1:{free_port()}")
    r = run(account=dead)
    s = r.poll()
    assert value(s, "msgsms_up") == 0
    assert total(s, "msgsms_upstream_requests_total", code="error") == 4
    assert value(s, "msgsms_upstream_retries_total") == 3
    assert "msgsms_window_messages" not in s


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [["soak.py", "--hours", "3"], ["scrape_load.py", "--duration", "10"]],
    ids=["soak-3h", "scrape-load-10s"],
)
def test_shortened_soak_and_scrape_load_pass(command: list[str]) -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "bench" / command[0]
    result = subprocess.run(
        [sys.executable, str(script), *command[1:]], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "PASS"
