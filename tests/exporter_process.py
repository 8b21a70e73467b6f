"""Run ``msgsms-exporter`` as a real subprocess on loopback, with a push receiver.

    with push_exporter(tmp_path, "--web.shutdown-delay", "60s") as exporter:
        exporter.post_single("m-1")

The child listens on a free port of 127.0.0.1 and stores pushes in ``tmp_path``.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from health import free_port, wait_healthy

SINGLE_PATH = "/push/status-report"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def single_report(message_id: str) -> bytes:
    """A form-encoded single status report, updated a minute ago (a plausible time)."""
    updated = time.strftime("%Y-%m-%dT%H%%3A%M%%3A%SZ", time.gmtime(time.time() - 60))
    return f"smsMsgId={message_id}&status=DELIVRD&updateTime={updated}".encode()


@dataclass
class ExporterProcess:
    """A running exporter: its process, URL, store file and stderr file."""

    proc: subprocess.Popen[bytes]
    url: str
    port: int
    store: Path
    stderr: Path

    def post_single(self, message_id: str, http: httpx.Client | None = None) -> int:
        """Push one single report; the HTTP status."""
        client = http or httpx.Client(timeout=30)
        try:
            body = single_report(message_id)
            return client.post(f"{self.url}{SINGLE_PATH}", content=body, headers=FORM).status_code
        finally:
            if http is None:
                client.close()

    def stored(self) -> set[str]:
        """Message ids in the store (read while running or after exit)."""
        with closing(sqlite3.connect(self.store)) as conn:
            return {row[0] for row in conn.execute("SELECT message_id FROM segments")}

    def log(self) -> str:
        """What the exporter wrote to stderr so far."""
        return self.stderr.read_text(errors="replace")


@contextmanager
def push_exporter(
    tmp_path: Path, *flags: str, nofile: int | None = None, poll_interval: str = "60s"
) -> Iterator[ExporterProcess]:
    """Start an exporter whose one account reads its push store; kill it at the end.

    ``nofile`` runs it under ``ulimit -n`` (its file-descriptor limit). Started again on
    the same ``tmp_path``, it keeps the store (on a new port).
    """
    port = free_port()
    store = tmp_path / "push.db"
    config = tmp_path / "config.yaml"
    config.write_text(
        f"poll_interval: {poll_interval}\n"
        "accounts: [{name: push, source: push, templates: {discover: true}}]\n"
        f"receiver: {{store_path: {store}}}\n",
        encoding="utf-8",
    )
    stderr = tmp_path / "exporter.log"
    command = [sys.executable, "-m", "exporter", "--config.file", str(config)]
    command += ["--web.listen-address", f"127.0.0.1:{port}", "--log.format", "json", *flags]
    if nofile is not None:
        command = ["sh", "-c", f'ulimit -n {nofile} && exec "$@"', "sh", *command]
    with stderr.open("wb") as log:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    exporter = ExporterProcess(proc, f"http://127.0.0.1:{port}", port, store, stderr)
    try:
        try:
            wait_healthy(exporter.url, alive=lambda: proc.poll() is None, what="exporter")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {exporter.log()[-2000:]}") from None
        yield exporter
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
