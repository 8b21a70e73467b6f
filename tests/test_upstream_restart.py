"""An upstream that restarts behind the exporter, its history lost or replaced.

The simulator keeps its messages in memory: started again on the same address it
answers with other data (another seed, or no history at all) for minutes the exporter
read long ago. Whatever the exporter shows as complete must be the simulator's truth.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from conftest import START, Simulator, config_for
from exposition import Samples, exported_window, samples, value
from health import free_port
from simulator_process import simulator_process

from exporter.app import Exporter
from exporter.timestamps import format_rfc3339


def _args(address: str, seed: int, start: str, history: str) -> tuple[str, ...]:
    return (
        *("--web.listen-address", address, "--clock", "manual", "--rate-limit", "0"),
        *("--start-time", start, "--history", history, "--scale", "0.05", "--seed", str(seed)),
    )


class Upstream:
    """The simulator at one address, started again at will; its clock is the exporter's."""

    def __init__(self, http: httpx.Client) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.url = f"http://{self.address}"
        self.http = http
        self.sim = Simulator(self.url, http)

    def now(self) -> float:
        return self.sim.now()


def _exported_and_truth(sim: Simulator, s: Samples) -> tuple[dict, dict]:
    start = value(s, "msgsms_window_start_timestamp_seconds", window="1h")
    end = value(s, "msgsms_window_end_timestamp_seconds", window="1h")
    exported = exported_window(s)
    truth = {
        tid: {k: t[k] for k in ("success", "failed", "sending", "status_codes")}
        for tid, t in sim.truth(start, end).items()
        if tid in exported
    }
    return exported, truth


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with httpx.Client(timeout=30) as http:
        yield Upstream(http)


@pytest.mark.parametrize(
    ("seed", "history"), [(1, "0s"), (2, "2h")], ids=["history-lost", "history-replaced"]
)
def test_a_window_read_before_the_upstream_restarted_is_never_shown_complete_unless_true(
    upstream: Upstream, request: pytest.FixtureRequest, seed: int, history: str
) -> None:
    with simulator_process(*_args(upstream.address, 1, START, "2h")):
        exporter = Exporter(config_for(upstream.url), clock=upstream.now)
        request.addfinalizer(exporter.stop)
        for _ in range(3):
            upstream.sim.advance(60)
            assert exporter.poll_once()
        exported, truth = _exported_and_truth(upstream.sim, samples(exporter.exposition_text()))
        assert exported == truth
        assert sum(t["success"] for t in truth.values()) > 500
        stopped_at = format_rfc3339(upstream.now())
    with simulator_process(*_args(upstream.address, seed, stopped_at, history)):
        for _ in range(3):
            upstream.sim.advance(60)
            assert exporter.poll_once()
            s = samples(exporter.exposition_text())
            exported, truth = _exported_and_truth(upstream.sim, s)
            if value(s, "msgsms_window_complete", window="1h") == 1:
                assert exported == truth
        assert value(s, "msgsms_window_complete", window="1h") == 1
