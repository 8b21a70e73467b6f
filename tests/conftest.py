"""Shared fixtures: a manual-clock simulator subprocess and an exporter pointed at it."""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from postgres_server import PostgresServer
from promtool import require_tool as require_binary
from simulator_process import simulator_process

from exporter.config import AccountConfig, Config
from exporter.demo import DEMO_ACCESS_KEY, DEMO_PROJECT_ID, DEMO_SECRET_KEY, simulated_account
from exporter.logs import remove_handler
from exporter.pgstore import PostgresStore
from exporter.pushstore import ReportStore
from exporter.sqlitestore import PushStore
from exporter.timestamps import format_rfc3339, parse_rfc3339

START = "2026-11-26T10:00:00Z"
DEMO_AK, DEMO_SK, PROJECT = DEMO_ACCESS_KEY, DEMO_SECRET_KEY, DEMO_PROJECT_ID


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Undo any test's ``configure_logging``: its stream may be a closed capture later."""
    yield
    structlog.reset_defaults()
    remove_handler()


@dataclass
class Simulator:
    """A running simulator: its URL and its control endpoints.

    Its calls take turns on the one client: an exporter's clock (``now``), a ticking
    thread and the test may call it at once, and httpcore's pool used from several
    threads closed connections another thread was reading (``Bad file descriptor``).
    """

    url: str
    http: httpx.Client
    _turn: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._turn:
            response = self.http.request(method, f"{self.url}{path}", **kwargs)
        response.raise_for_status()
        return response

    def now(self) -> float:
        return parse_rfc3339(self._send("GET", "/-/clock").json()["now"])

    def advance(self, seconds: float) -> None:
        self._send("POST", "/-/clock", json={"advance_seconds": seconds})

    def truth(self, start: float, end: float) -> dict:
        params = {"start_time": format_rfc3339(start), "end_time": format_rfc3339(end)}
        return self._send("GET", "/-/truth", params=params).json()["templates"]

    def post(self, path: str, body: dict) -> dict:
        return self._send("POST", path, json=body).json()


@pytest.fixture
def manual_simulator() -> Iterator[Simulator]:
    """A small-volume simulator on a manual clock with one hour of history."""
    args = ("--clock", "manual", "--start-time", START, "--history", "1h", "--scale", "0.05")
    with simulator_process(*args) as url, httpx.Client(timeout=30) as http:
        yield Simulator(url, http)


def account_for(url: str, name: str = "sim") -> AccountConfig:
    """An account that signs with the simulator's demo keys and discovers templates."""
    return replace(simulated_account(url), name=name)


def config_for(url: str, **overrides: object) -> Config:
    """A config for the simulator; top-N large enough that no code is folded."""
    fields: dict[str, object] = {"top_status_codes": 100}
    fields.update(overrides)
    return Config(accounts=(account_for(url),), **fields)  # type: ignore[arg-type]


def self_signed(folder: Path, name: str = "server") -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and its key (made with openssl)."""
    import subprocess

    openssl = require_binary("openssl")
    cert, key = folder / f"{name}-cert.pem", folder / f"{name}-key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN=127.0.0.1 {name}",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    return self_signed(tmp_path_factory.mktemp("tls"))


def write_exporter_config(path: Path, endpoint: str) -> Path:
    """An exporter config file for a simulator: demo keys from env, templates discovered."""
    path.write_text(
        textwrap.dedent(
            f"""\
            accounts:
              - name: default
                endpoint: {endpoint}
                project_id: {PROJECT}
                credentials:
                  access_key: {{env: MSGSMS_ACCESS_KEY}}
                  secret_key: {{env: MSGSMS_SECRET_KEY}}
                templates: {{discover: true}}
            poll_interval: 60s
            window: 1h
            """
        )
    )
    return path


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """Debian's PostgreSQL for the test session (fsync off); tests take a schema each."""
    with PostgresServer.running() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """The URL of a fresh, empty schema on the session's server."""
    return postgres.fresh_schema()


Opener = Callable[..., ReportStore]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens a push store on one backing database: an SQLite file, or a fresh schema of
    the session's PostgreSQL. Tests taking it pass for both stores (one contract)."""
    if request.param == "sqlite":
        path = tmp_path / "push.db"
        return lambda **kw: PushStore(path, **kw)
    url = request.getfixturevalue("postgres_url")
    return lambda **kw: PostgresStore(url, **kw)
