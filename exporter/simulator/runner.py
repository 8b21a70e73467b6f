"""The Python API: start a simulator in this process, get its URL, stop it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

import httpx

from exporter import signing
from exporter.simulator.api import QueryLimits
from exporter.simulator.app import SimulatorApp
from exporter.simulator.callbacks import Callbacks
from exporter.simulator.clock import Clock, ManualClock, RealClock
from exporter.simulator.gate import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_SECRET_KEY,
    DEFAULT_TOKEN,
    Credentials,
)
from exporter.simulator.push import PushConfig, Pusher
from exporter.simulator.scenario import Scenario, load_scenario
from exporter.simulator.server import SimulatorServer
from exporter.simulator.store import MessageStore


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """How to run a simulator. ``start_time`` None means now; port 0 picks a free one."""

    scenario: Scenario = field(default_factory=load_scenario)
    seed: int = 1
    manual_clock: bool = False
    start_time: float | None = None
    history_seconds: float = 0.0
    host: str = "127.0.0.1"
    port: int = 0
    limits: QueryLimits = field(default_factory=QueryLimits)
    rate_limit: float = 200.0
    access_key: str = DEFAULT_ACCESS_KEY
    secret_key: str = DEFAULT_SECRET_KEY
    token: str = DEFAULT_TOKEN
    push: PushConfig | None = None
    push_signing: signing.Credentials | None = None
    """Huawei's push signing keys (a console setting): statusCallback reports are signed
    with them; ``push`` signs with its own ``credentials``."""

    def __repr__(self) -> str:
        return (
            f"SimulatorConfig(seed={self.seed}, manual_clock={self.manual_clock}, "
            f"host={self.host!r}, port={self.port}, access_key={self.access_key!r})"
        )


class RunningSimulator:
    """A simulator serving on a background thread."""

    def __init__(self, server: SimulatorServer, app: SimulatorApp) -> None:
        self.server = server
        self.app = app
        host, port = server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self._thread = threading.Thread(
            target=server.serve_forever, name="msgsms-simulator", daemon=True
        )
        self._thread.start()
        self.pusher: Pusher | None = None
        self._push_stop = threading.Event()
        self._push_thread: threading.Thread | None = None
        self._push_http: httpx.Client | None = None
        self._callback_http = httpx.Client(timeout=10.0)
        self.callbacks = Callbacks(app.clock, self._callback_http)
        """Reports of API sends that named a statusCallback, POSTed there when due."""
        app.sending.callbacks = self.callbacks
        self._callback_thread = threading.Thread(
            target=self.callbacks.run, args=(self._push_stop,), name="callbacks", daemon=True
        )
        self._callback_thread.start()

    def start_push(self, config: PushConfig) -> Pusher:
        """Push registrations and reports to ``config.url`` every ``config.interval``."""
        # One pooled connection per POSTing thread, never closed as surplus while in use.
        n = config.connections
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        self._push_http = httpx.Client(timeout=config.timeout, limits=limits)
        self.pusher = Pusher(self.store, self.clock, config, self._push_http)
        if config.credentials is not None:  # Huawei signs all its pushes alike
            self.callbacks.credentials = config.credentials
        self._push_thread = threading.Thread(
            target=self.pusher.run, args=(self._push_stop,), name="push", daemon=True
        )
        self._push_thread.start()
        return self.pusher

    @property
    def clock(self) -> Clock:
        """The simulated clock."""
        return self.app.clock

    @property
    def store(self) -> MessageStore:
        """The message store."""
        return self.app.store

    def stop(self) -> None:
        """Stop pushing and serving; close the sockets."""
        self._push_stop.set()
        if self._push_thread is not None:
            self._push_thread.join(timeout=30)
        self._callback_thread.join(timeout=30)
        self._callback_http.close()
        if self.pusher is not None:
            self.pusher.close()
        if self._push_http is not None:
            self._push_http.close()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def build_app(config: SimulatorConfig) -> SimulatorApp:
    """The app for ``config``, with its history generated."""
    start = time.time() if config.start_time is None else config.start_time
    clock: Clock = ManualClock(start) if config.manual_clock else RealClock()
    traffic_start_ms = round((start - config.history_seconds) * 1000)
    retention_ms = round(config.limits.lookback_seconds * 1000)  # what a query can reach
    store = MessageStore(config.scenario, config.seed, traffic_start_ms, retention_ms)
    store.advance_to(round(clock.now() * 1000))
    credentials = Credentials(config.access_key, config.secret_key, config.token)
    return SimulatorApp(store, clock, credentials, config.limits, config.rate_limit, config.seed)


def start_simulator(config: SimulatorConfig | None = None) -> RunningSimulator:
    """Build, bind and start serving; use ``.url`` and ``.stop()`` (or ``with``)."""
    config = config or SimulatorConfig()
    app = build_app(config)
    server = SimulatorServer((config.host, config.port), app)
    running = RunningSimulator(server, app)
    running.callbacks.credentials = config.push_signing
    if config.push is not None:
        running.start_push(config.push)
    return running
