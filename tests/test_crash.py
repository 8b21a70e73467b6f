"""kill -9 the exporter while reports are pushed: every acknowledged report survives, once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import httpx
from exporter_process import push_exporter

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _pusher(base: str, worker: int, acked: list[tuple[str, int]], stop: threading.Event) -> None:
    """Push single and batch reports with unique (message, segment) keys; record the 200s."""
    n = 0
    with httpx.Client(timeout=10) as http:
        while not stop.is_set():
            n += 1
            try:
                if n % 2:
                    key = (f"w{worker}-s{n}", 1)
                    body = f"smsMsgId={key[0]}&status=DELIVRD&total=1&sequence=1"
                    response = http.post(f"{base}/push/status-report", content=body, headers=FORM)
                    if response.status_code == 200:
                        acked.append(key)
                else:
                    keys = [(f"w{worker}-b{n}", seq) for seq in (1, 2, 3)] + [
                        (f"w{worker}-b{n}-{i}", 1) for i in range(20)
                    ]
                    items = [
                        {"smsMsgId": m, "status": "DELIVRD", "total": "3", "sequence": str(s)}
                        if s > 1 or m.count("-") == 1
                        else {"smsMsgId": m, "status": "DELIVRD"}
                        for m, s in keys
                    ]
                    response = http.post(
                        f"{base}/push/status-reports", json={"statusReportList": items}
                    )
                    if response.status_code == 200:
                        acked.extend(keys)
            except httpx.TransportError:
                time.sleep(0.01)  # the exporter is down: keep trying until told to stop


def _stored(db: Path) -> list[tuple[str, int]]:
    with closing(sqlite3.connect(db)) as conn:
        return [
            (str(m), int(s)) for m, s in conn.execute("SELECT message_id, sequence FROM segments")
        ]


def test_every_acknowledged_report_survives_kill_9_exactly_once(tmp_path: Path):
    # Polls every second, so the poller reads the store while the receiver writes it.
    acked: list[tuple[str, int]] = []
    stop = threading.Event()
    with push_exporter(tmp_path, poll_interval="1s") as exporter:
        threads = [
            threading.Thread(target=_pusher, args=(exporter.url, w, acked, stop), daemon=True)
            for w in range(4)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(acked) < 3000 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(exporter.proc.pid, signal.SIGKILL)  # mid-stream: requests are in flight
        exporter.proc.wait(timeout=10)
        acked_at_kill = len(acked)
    time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert acked_at_kill >= 3000
    assert len(set(acked)) == len(acked)
    with push_exporter(tmp_path, poll_interval="1s") as exporter:
        base = exporter.url
        # After the restart, pushing acknowledged reports again stores nothing new.
        again = [{"smsMsgId": m, "status": "DELIVRD"} for m, s in acked[:50] if s == 1]
        response = httpx.post(f"{base}/push/status-reports", json={"statusReportList": again})
        assert response.status_code == 200
        # Malformed pushes of every kind get a 4xx and the exporter keeps serving.
        bad = [
            ("/push/status-report", b"status=DELIVRD", FORM),
            ("/push/status-report", b"smsMsgId=%FF&status=X", FORM),
            ("/push/status-reports", b"{", {"Content-Type": "application/json"}),
            ("/push/status-reports", b"[]", {"Content-Type": "application/json"}),
            ("/push/status-reports", b"{}", FORM),
            (
                "/push/status-reports",
                b"x" * (1024 * 1024 + 1),
                {"Content-Type": "application/json"},
            ),
            (
                "/push/status-reports",
                json.dumps({"statusReportList": [{"smsMsgId": "z", "status": "X"}] * 51}).encode(),
                {"Content-Type": "application/json"},
            ),
        ]
        for path, body, headers in bad:
            status = httpx.post(f"{base}{path}", content=body, headers=headers).status_code
            assert 400 <= status < 500, (path, status)
        assert httpx.get(f"{base}/-/healthy").status_code == 200
    stored = _stored(tmp_path / "push.db")
    assert len(stored) == len(set(stored))
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged reports lost, e.g. {sorted(missing)[:3]}"
    with closing(sqlite3.connect(tmp_path / "push.db")) as conn:
        (messages,) = conn.execute("SELECT count(*) FROM messages").fetchone()
        (distinct,) = conn.execute("SELECT count(DISTINCT message_id) FROM segments").fetchone()
    assert messages == distinct
