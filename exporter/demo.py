"""``msgsms-exporter --demo``: the embedded simulator with history, and the exporter on it."""

from __future__ import annotations

import structlog

from exporter.config import AccountConfig, Config, Secret, TemplateSelection
from exporter.simulator import SimulatorConfig, start_simulator

DEMO_PROJECT_ID = "0123456789abcdef0123456789abcdef"
DEMO_ACCESS_KEY = "demo-access-key"
DEMO_SECRET_KEY = "demo-secret-key"  # noqa: S105 - the simulator's documented demo secret
DEMO_POLL_INTERVAL = 15.0
DEMO_HISTORY_SECONDS = 2 * 3600.0

log = structlog.get_logger("msgsms_exporter.demo")


def demo_config(endpoint: str) -> Config:
    """An exporter config for the embedded simulator."""
    account = AccountConfig(
        name="demo",
        endpoint=endpoint,
        project_id=DEMO_PROJECT_ID,
        templates=TemplateSelection(discover=True),
        access_key=DEMO_ACCESS_KEY,
        secret_key=Secret(DEMO_SECRET_KEY),
    )
    return Config(accounts=(account,), poll_interval=DEMO_POLL_INTERVAL)


def run_demo(listen: str) -> int:
    """Start the simulator, then serve the exporter against it until SIGTERM or Ctrl-C."""
    from exporter.app import Exporter
    from exporter.cli import serve

    simulator = start_simulator(
        SimulatorConfig(
            host="127.0.0.1",
            port=0,
            history_seconds=DEMO_HISTORY_SECONDS,
            access_key=DEMO_ACCESS_KEY,
            secret_key=DEMO_SECRET_KEY,
        )
    )
    log.info("demo simulator started", url=simulator.url)
    try:
        return serve(Exporter(demo_config(simulator.url)), listen)
    finally:
        simulator.stop()
