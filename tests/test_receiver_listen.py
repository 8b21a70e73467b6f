"""The real exporter listening on IPv6 loopback: it starts unsigned (loopback is no
exposure), takes pushes there, and logs a URL one can paste."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import httpx
from exporter_process import FORM, SINGLE_PATH, single_report
from health import metrics_showing, stop, wait_healthy


def _free_ipv6_port() -> int:
    with closing(socket.socket(socket.AF_INET6)) as probe:
        probe.bind(("::1", 0))
        return int(probe.getsockname()[1])


def test_an_exporter_on_ipv6_loopback_takes_pushes_and_logs_a_bracketed_url(
    tmp_path: Path,
) -> None:
    port = _free_ipv6_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        "accounts: [{name: push, source: push, templates: {discover: true}}]\n"
        f"receiver: {{store_path: {tmp_path / 'push.db'}}}\n",
        encoding="utf-8",
    )
    log = tmp_path / "exporter.log"
    command = [sys.executable, "-m", "exporter", "--config.file", str(config)]
    command += ["--web.listen-address", f"[::1]:{port}", "--log.format", "json"]
    with log.open("wb") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://[::1]:{port}"
    try:
        wait_healthy(url, alive=lambda: proc.poll() is None, what="exporter")
        answer = httpx.post(f"{url}{SINGLE_PATH}", content=single_report("v6-1"), headers=FORM)
        assert (answer.status_code, answer.content) == (200, b"")
        metrics_showing(url, 'msgsms_push_reports_total{account="push",kind="single"} 1.0')
    finally:
        stop(proc, timeout=10)
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    listening = [e["address"] for e in events if e.get("event") == "listening"]
    assert listening == [url]
