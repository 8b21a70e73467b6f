"""Zero-loss rolling restart: two exporters behind a real nginx, one shared PostgreSQL.

The simulator pushes signed batches to the balancer at about 500 reports a second, over
several keep-alive connections as Huawei's platform does (its clock follows the wall
clock, so registrations arrive as they would from a sending application), while the test
restarts each replica in turn with SIGTERM and then kills one with SIGKILL. The rate is
measured: reports acknowledged over the seconds of traffic, once the warm-up is pushed.
nginx runs the configuration users copy, ``deploy/loadbalancer/msgsms-push.conf.template``. Afterwards every report the simulator
saw acknowledged is in the store exactly once, no push failed, and both replicas export
the simulator's truth for the whole window.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
from balancer import nginx
from exposition import exported_window, samples
from health import free_port

from exporter.signing import Credentials
from exporter.simulator.push import PushConfig, Pusher
from exporter.simulator.runner import RunningSimulator, SimulatorConfig, start_simulator
from exporter.simulator.scenario import Scenario, load_scenario

KEY = Credentials("PUSH-AK", "push-secret")
TARGET_RATE = 500.0
"""Reports a second the scenario offers (every segment of a long SMS is one report)."""
CONNECTIONS = 8
"""The simulator's POSTs in flight at once: enough that a slow answer does not slow it."""
WARM_UP = 15.0
"""Seconds of traffic already sent when the test starts (their reports are partly due)."""
SHUTDOWN_DELAY = "1s"


def _scenario() -> Scenario:
    """The default scenario, flat over the day, scaled to offer TARGET_RATE reports a second."""
    base = load_scenario()
    weights = base.segment_weights
    segments = sum(n * w for n, w in enumerate(weights, start=1)) / sum(weights)
    hourly = sum(t.rate_per_hour for t in base.templates) * base.rate_multiplier
    flat = replace(base, daily_shape=(1.0,) * 24)  # the same rate at any hour the test runs
    return flat.scaled(TARGET_RATE / (hourly * segments / 3600))


def _wait(condition: Any, what: str, timeout: float = 60.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(every)


@dataclass
class Replica:
    """One exporter process on a fixed port, restartable."""

    port: int
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    exits: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.launch()
        self.wait_serving()

    def launch(self) -> None:
        env = {**os.environ, "PUSH_AK": KEY.access_key, "PUSH_SK": KEY.secret_key}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "exporter",
                    f"--config.file={self.config}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    f"--web.shutdown-delay={SHUTDOWN_DELAY}",
                    "--log.level=info",
                ],
                stdout=log,
                stderr=log,
                env=env,
            )

    def wait_serving(self) -> None:
        # Serving: it takes pushes from here on. (Ready, for Kubernetes, also needs its store
        # to answer; a balancer without health checks does not wait for that.)
        _wait(self.serving, f"replica :{self.port} serving", timeout=120)

    def serving(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"replica exited {self.process.returncode}: {self.log_tail()}")
        try:
            return httpx.get(f"{self.url}/-/healthy", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.exits.append(self.process.wait(timeout=60))

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]


class Traffic:
    """The simulator's clock follows the wall clock ``lag`` seconds behind; pushes what is due.

    Entering pushes the warm-up (what was due at the start, then what came due meanwhile);
    from then on ``rate()`` measures the reports acknowledged a second.
    """

    def __init__(self, sim: RunningSimulator, pusher: Pusher, lag: float) -> None:
        self.sim, self.pusher, self.lag = sim, pusher, lag
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self.started = self.ended = 0.0
        self.acknowledged_before = 0

    def _step(self) -> None:
        clock = self.sim.clock
        target = time.time() - self.lag
        if target > clock.now():
            clock.advance(target - clock.now())  # type: ignore[attr-defined]
        self.pusher.catch_up()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self._step()
                self.stop.wait(0.02)
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def __enter__(self) -> Traffic:
        self._step()
        self._step()
        self.started = time.monotonic()
        self.acknowledged_before = self.pusher.reports_acknowledged
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.ended = time.monotonic()

    def rate(self) -> float:
        """Reports acknowledged a second between the warm-up and the end."""
        acknowledged = self.pusher.reports_acknowledged - self.acknowledged_before
        return acknowledged / (self.ended - self.started)

    def failed_so_far(self) -> int:
        return self.pusher.failed


def _config(path: Path, url: str, templates: list[str]) -> Path:
    ids = ", ".join(templates)
    path.write_text(
        textwrap.dedent(
            f"""\
            accounts:
              - name: push
                source: push
                templates: [{ids}]
            receiver:
              store_url: "{url}"
              signing:
                keys:
                  - access_key: {{env: PUSH_AK}}
                    secret_key: {{env: PUSH_SK}}
            poll_interval: 1s
            settle_delay: 0s
            top_status_codes: 100
            window: 1h
            """
        )
    )
    return path


def _window(replica: Replica) -> tuple[dict[str, Any], float, float, float] | None:
    """The replica's exported window, its bounds and completeness; None before its first poll."""
    found = samples(httpx.get(f"{replica.url}/metrics", timeout=10).content)
    if "msgsms_window_start_timestamp_seconds" not in found:
        return None
    start = next(iter(found["msgsms_window_start_timestamp_seconds"].values()))
    end = next(iter(found["msgsms_window_end_timestamp_seconds"].values()))
    complete = next(iter(found["msgsms_window_complete"].values()))
    return exported_window(found), start, end, complete


def test_replicas_restarted_in_turn_and_killed_lose_no_acknowledged_report(
    tmp_path: Path, postgres_url: str
):
    templates = [t.template_id for t in load_scenario().templates]
    # Traffic starts at a whole minute; the clock starts WARM_UP seconds past one and, once
    # the replicas are up, follows the wall clock as far behind as it then is: more than
    # a minute (pushes that late, as Huawei's can be), so when traffic ends its last
    # minute is already behind the replicas' window end (a whole minute) and the windows
    # can equal the truth at once, without waiting for the next minute.
    now = time.time()
    start = now - 60 - (now - WARM_UP) % 60
    config = SimulatorConfig(scenario=_scenario(), manual_clock=True, start_time=start)
    url = postgres_url
    # As many pooled connections as POSTing threads: none is closed as surplus while
    # another thread uses it (encode/httpcore#1110).
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    with start_simulator(config) as sim, httpx.Client(timeout=30, limits=limits) as http:
        replicas = [
            Replica(
                free_port(),
                _config(tmp_path / f"r{i}.yaml", url, templates),
                tmp_path / f"r{i}.log",
            )
            for i in (1, 2)
        ]
        for replica in replicas:
            replica.launch()
        for replica in replicas:
            replica.wait_serving()
        balancer_dir = tmp_path / "nginx"
        balancer_dir.mkdir()
        try:
            with nginx(balancer_dir, [r.port for r in replicas]) as balancer:
                push = PushConfig(
                    url=balancer,
                    mode="batch",
                    credentials=KEY,
                    keep_acknowledged=True,
                    connections=CONNECTIONS,
                )
                pusher = Pusher(sim.store, sim.clock, push, http)
                # The clock is still at its start: the warm-up is WARM_UP seconds.
                with Traffic(sim, pusher, time.time() - start) as traffic:
                    time.sleep(1)
                    for replica in replicas:  # a rolling restart: one at a time
                        replica.stop(signal.SIGTERM)
                        replica.start()
                        time.sleep(1)
                    failed_by_sigterm = traffic.failed_so_far()
                    replicas[0].stop(signal.SIGKILL)  # a node lost mid-traffic
                    time.sleep(0.5)
                    replicas[0].start()
                    time.sleep(1)
                pusher.close()
                assert traffic.error is None, traffic.error
                rate, elapsed = traffic.rate(), traffic.ended - traffic.started
                last_ms = round(sim.clock.now() * 1000)
            acknowledged = pusher.acknowledged
            with psycopg.connect(url) as conn:
                stored = Counter(
                    (str(m), int(s))
                    for m, s in conn.execute("SELECT message_id, sequence FROM msgsms_segments")
                )
            # Both replicas converge on the truth of what was pushed.
            truth = {}

            def converged() -> bool:
                nonlocal truth
                for replica in replicas:
                    exported = _window(replica)
                    if exported is None:
                        return False
                    window, w_start, w_end, complete = exported
                    raw = sim.store.truth(
                        round(w_start * 1000), round(w_end * 1000), last_ms, held=True
                    )
                    truth = {
                        tid: {k: t[k] for k in ("success", "failed", "sending", "status_codes")}
                        for tid, t in raw.items()
                    }
                    if complete != 1 or window != truth or w_end * 1000 <= last_ms:
                        return False
                return True

            # The last minute of traffic is in the windows once it has ended.
            # Generous: a restarted replica re-reads the whole window from the store, which
            # takes long on a loaded machine; a failure shows what each replica logged.
            try:
                _wait(converged, "both replicas exporting the truth", timeout=300, every=1.0)
            except AssertionError as exc:
                tails = "\n".join(f"--- :{r.port}\n{r.log_tail()}" for r in replicas)
                raise AssertionError(f"{exc}\n{tails}") from None
        finally:
            for replica in replicas:
                if replica.process is not None and replica.process.poll() is None:
                    replica.stop(signal.SIGTERM)
    assert replicas[0].exits == [0, -signal.SIGKILL, 0] and replicas[1].exits == [0, 0]
    assert failed_by_sigterm == 0, dict(pusher.stats)
    assert pusher.failed == 0, dict(pusher.stats)
    assert set(acknowledged.values()) == {1}
    assert [k for k in acknowledged if stored[k] != 1] == [], "acknowledged but not stored once"
    assert set(stored) == set(acknowledged)
    sent = sum(t["success"] + t["failed"] + t["sending"] for t in truth.values())
    assert sent > 5000 and len(acknowledged) > 5000, (sent, len(acknowledged))
    # The scenario offers TARGET_RATE; the rate achieved is printed, not asserted: on a
    # quiet machine it is about 490/s (the offered rate less the few delayed reports),
    # and a machine shared with other test files delays it (a wall-clock figure, which
    # the suite does not judge).
    print(
        f"\n{len(acknowledged)} reports acknowledged, {rate:.0f}/s over the {elapsed:.1f} s"
        f" of restarts (target {TARGET_RATE:.0f}/s, {CONNECTIONS} connections), 0 lost"
    )
