"""A throwaway PgBouncer from Debian's package, in transaction pooling mode, for tests.

    with PgBouncer.running(postgres, schema) as bouncer:   # on a free loopback port
        url = bouncer.url()                                # the store connects here

It pools the connections of a :class:`~postgres_server.PostgresServer` the way most
production setups reach PostgreSQL (CloudNativePG's Pooler, managed poolers):
``pool_mode = transaction``, so each transaction may run on another server connection,
and nothing a client leaves on a connection (a prepared statement, a session advisory
lock, a ``SET``) is there for its next transaction. ``server_round_robin`` hands the
server connections out in turn rather than reusing the last one, so a client relying on
connection state fails at once instead of now and then. Debian's 1.18 does not carry
protocol-level prepared statements in this mode (1.21 and later can).

The test's schema goes first on the search path of every server connection
(``connect_query``): PgBouncer refuses the ``options`` startup parameter.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg
from health import free_port
from postgres_server import DATABASE, USER, PostgresServer

BINARY = shutil.which("pgbouncer", path=f"{os.environ.get('PATH', '')}:/usr/sbin") or ""
POOL_SIZE = 4
QUERY_WAIT = 5
"""Seconds a query waits for a server connection (PgBouncer's default is 120; the docs
advise a few seconds, so that a push is refused rather than held while the database is
down)."""


class PgBouncer:
    """One PgBouncer process: its directory, port and URL."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()

    @classmethod
    @contextmanager
    def running(cls, server: PostgresServer, schema: str) -> Iterator[PgBouncer]:
        """Write the config, start in the background, yield, stop and delete it."""
        if not BINARY:
            raise RuntimeError("pgbouncer is missing: install Debian's pgbouncer package")
        bouncer = cls(Path(tempfile.mkdtemp(prefix="msgsms-pgbouncer-")))
        try:
            bouncer._configure(server, schema)
            bouncer._start()
            yield bouncer
        finally:
            bouncer.stop()
            shutil.rmtree(bouncer.root, ignore_errors=True)

    def url(self) -> str:
        """The libpq URL clients use: the pooled database on PgBouncer's port."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/pooled"

    def admin(self, command: str) -> list[dict[str, object]]:
        """A command of PgBouncer's admin console (``PAUSE``, ``SHOW POOLS``...)."""
        url = f"postgresql://{USER}@127.0.0.1:{self.port}/pgbouncer"
        # The console speaks only the simple query protocol: a client-side cursor.
        with psycopg.connect(url, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
            cursor = conn.execute(command)
            if cursor.description is None:
                return []
            names = [c.name for c in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def _configure(self, server: PostgresServer, schema: str) -> None:
        (self.root / "users.txt").write_text(f'"{USER}" ""\n')
        search_path = f"connect_query='SET search_path = {schema}'"
        (self.root / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"pooled = host=127.0.0.1 port={server.port} dbname={DATABASE} {search_path}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.root / 'users.txt'}\n"
            f"pool_mode = transaction\ndefault_pool_size = {POOL_SIZE}\nmin_pool_size = {POOL_SIZE}\n"
            f"server_round_robin = 1\nserver_login_retry = 1\nquery_wait_timeout = {QUERY_WAIT}\n"
            f"admin_users = {USER}\n"
            f"logfile = {self.root / 'pgbouncer.log'}\npidfile = {self.root / 'pgbouncer.pid'}\n"
        )
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            for path in (self.root, *self.root.iterdir()):
                shutil.chown(path, USER, USER)

    def _start(self) -> None:
        command = [BINARY, "-d", str(self.root / "pgbouncer.ini")]
        if os.geteuid() == 0:
            command = ["runuser", "-u", USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"pgbouncer failed to start: {done.stderr}{self.log_tail()}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"pgbouncer did not listen on {self.port}: {self.log_tail()}")
        self._open_every_server_connection()

    def _open_every_server_connection(self) -> None:
        """As many transactions at once as the pool has server connections, so that the
        round robin has them all to go through from the first test statement."""
        with ExitStack() as stack:
            for _ in range(POOL_SIZE):
                conn = stack.enter_context(psycopg.connect(self.url()))
                conn.execute("SELECT 1")  # its transaction stays open until the stack ends

    def stop(self) -> None:
        """Stop at once (SIGTERM) and wait until the process has exited."""
        pidfile = self.root / "pgbouncer.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # PgBouncer deletes it as it exits (a zombie until reaped)

    def log_tail(self) -> str:
        """The end of PgBouncer's log, for failure messages."""
        path = self.root / "pgbouncer.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""
