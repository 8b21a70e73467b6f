"""``msgsms-exporter --demo``: the embedded simulator with history, and a push receiver.

The demo exports two accounts: ``demo`` polls an in-process simulator that already holds
two hours of traffic, and ``push`` reads what arrives at the receiver's default paths
(``/push/status-reports`` and friends), stored in a scratch SQLite file removed at exit
(searchable by number: its ``mobile_key`` is a fixed, made-up one).
``msgsms-simulator --push.url http://127.0.0.1:9170`` in a second shell feeds it.

Polls run every 15 s with no ``settle_delay``, so a minute's messages appear at most about
75 s after it ends (the current minute is never counted: it is still being sent).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

from exporter.config import (
    AccountConfig,
    Config,
    ReceiverConfig,
    Secret,
    TemplateSelection,
    push_account,
)

DEMO_PROJECT_ID = "0123456789abcdef0123456789abcdef"
DEMO_ACCESS_KEY = "demo-access-key"
DEMO_SECRET_KEY = "demo-secret-key"  # noqa: S105 - the simulator's documented demo secret
# The demo's push store is scratch with made-up numbers: a fixed key lets its push account
# be searched by number, as a real one is only with receiver.mobile_key set.
DEMO_MOBILE_KEY = "demo-mobile-key-for-made-up-numbers"
DEMO_POLL_INTERVAL = 15.0
DEMO_HISTORY_SECONDS = 2 * 3600.0
PUSH_ACCOUNT = "push"

log = structlog.get_logger("msgsms_exporter.demo")


def simulated_account(endpoint: str) -> AccountConfig:
    """The ``demo`` account: the embedded simulator, signed with its demo keys."""
    return AccountConfig(
        name="demo",
        endpoint=endpoint,
        project_id=DEMO_PROJECT_ID,
        templates=TemplateSelection(discover=True),
        access_key=DEMO_ACCESS_KEY,
        secret_key=Secret(DEMO_SECRET_KEY),
    )


def demo_config(endpoint: str, store_path: str) -> Config:
    """An exporter config for the embedded simulator and a receiver storing at `store_path`."""
    return Config(
        accounts=(simulated_account(endpoint), push_account(PUSH_ACCOUNT)),
        # A trial on your machine with made-up data: unsigned pushes are allowed (and the
        # exporter warns so at start), so curl and the simulator can push without keys.
        receiver=ReceiverConfig(
            store_path=store_path, allow_unsigned=True, mobile_key=Secret(DEMO_MOBILE_KEY)
        ),
        poll_interval=DEMO_POLL_INTERVAL,
        settle_delay=0.0,
    )


@contextmanager
def demo_simulator() -> Iterator[str]:
    """The simulator with two hours of history on a free loopback port; its URL."""
    from exporter.simulator import SimulatorConfig, start_simulator  # only the demo needs it

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
        yield simulator.url
    finally:
        simulator.stop()


@contextmanager
def demo_session() -> Iterator[Config]:
    """Start the simulator and a scratch push store; yield the config; remove both."""
    with (
        demo_simulator() as url,
        tempfile.TemporaryDirectory(prefix="msgsms-demo-") as scratch,
    ):
        yield demo_config(url, str(Path(scratch) / "push.db"))
