"""A throwaway PostgreSQL server from Debian's package, for integration tests.

    with PostgresServer.running() as server:     # initdb + pg_ctl start on a free port
        url = server.fresh_schema()              # an empty schema of its own, by URL
        server.restart()                         # every client connection breaks

``pg_ctl`` refuses to run as root, so as root every command runs as the ``postgres``
user (``runuser -u postgres --``) in a temporary directory that user owns. Tests get a
fresh schema each (``options=-csearch_path=...`` in the URL, the way a user passes any
libpq parameter): it isolates them as a database would at a thousandth of the cost
(a ``CREATE DATABASE`` takes about a second on a loaded machine).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from health import free_port

# Debian installs each major version side by side; the newest unless PG_BIN says.
_INSTALLED = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
BIN = Path(
    os.environ.get("PG_BIN") or (_INSTALLED[-1] if _INSTALLED else "/usr/lib/postgresql/bin")
)
USER = "postgres"
DATABASE = "msgsms_tests"


def _as_owner(command: list[str]) -> list[str]:
    return ["runuser", "-u", USER, "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str]) -> None:
    done = subprocess.run(
        _as_owner(command), capture_output=True, text=True, check=False, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}")


class PostgresServer:
    """One PostgreSQL server: a data directory, a port, start/stop/restart."""

    def __init__(self, data: Path, *, fsync: bool = False, options: str = "") -> None:
        self.data = data
        self.port = free_port()
        self.fsync = fsync
        self.options = options
        self._names = itertools.count(1)

    @classmethod
    @contextmanager
    def running(
        cls,
        *,
        fsync: bool = False,
        options: str = "",
        configure: Callable[[Path], None] | None = None,
    ) -> Iterator[PostgresServer]:
        """initdb into a temporary directory, start, yield, stop and delete it.

        ``configure`` is given the data directory before the first start (to write
        ``pg_hba.conf`` or certificates); ``options`` are more ``-c`` settings."""
        if not (BIN / "initdb").exists():
            raise RuntimeError(f"{BIN}/initdb is missing: install Debian's postgresql package")
        root = Path(tempfile.mkdtemp(prefix="msgsms-pg-"))
        server = cls(root / "data", fsync=fsync, options=options)
        try:
            if os.geteuid() == 0:
                shutil.chown(root, USER, USER)
            _run(
                [
                    str(BIN / "initdb"),
                    *("-D", str(server.data), "-U", USER, "-A", "trust"),
                    *("-E", "UTF8", "--locale=C.UTF-8", "--no-sync"),
                ]
            )
            if configure is not None:
                configure(server.data)
            server.start()
            with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {DATABASE}")
            yield server
        finally:
            if (server.data / "postmaster.pid").exists():
                server.stop("immediate")
            shutil.rmtree(root, ignore_errors=True)

    def url(self, database: str = DATABASE) -> str:
        """The libpq URL of ``database`` on this server."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data}"
            f" -c fsync={'on' if self.fsync else 'off'} -c max_connections=200 {self.options}"
        )
        log = str(self.data.parent / "server.log")
        _run([str(BIN / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", options, "-w", "start"])

    def stop(self, mode: str = "fast") -> None:
        """Stop (``fast``: roll back and disconnect clients; ``immediate``: like a crash)."""
        _run([str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def restart(self, mode: str = "fast") -> None:
        """Stop and start again on the same port: every client connection breaks."""
        self.stop(mode)
        self.start()

    def fresh_schema(self) -> str:
        """The URL of a new, empty schema (first on the search path) of the test database."""
        return f"{self.url()}?options=-csearch_path%3D{self.new_schema()}"

    def new_schema(self) -> str:
        """The name of a new, empty schema of the test database."""
        name = f"t{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return name

    def log_tail(self) -> str:
        """The end of the server log, for failure messages."""
        path = self.data.parent / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""
