"""Draining on SIGTERM, through a real exporter process: not ready, still acknowledging."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import httpx
from exporter_process import SINGLE_PATH, ExporterProcess, push_exporter, single_report


def _wait_for_ready(exporter: ExporterProcess, status: int) -> None:
    deadline = time.monotonic() + 60  # a hang guard, not a performance bound
    with httpx.Client(timeout=10) as http:  # one SSL context, not one a try
        while http.get(f"{exporter.url}/-/ready").status_code != status:
            assert time.monotonic() < deadline, f"/-/ready never answered {status}"
            time.sleep(0.05)


def _listener_closed(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


def test_sigterm_makes_ready_503_while_pushes_are_still_acknowledged_and_stored(
    tmp_path: Path,
) -> None:
    with push_exporter(tmp_path, "--web.shutdown-delay", "10m") as exporter:
        _wait_for_ready(exporter, 200)
        exporter.proc.send_signal(signal.SIGTERM)
        _wait_for_ready(exporter, 503)
        ready = httpx.get(f"{exporter.url}/-/ready", timeout=10)
        assert ready.text == "shutting down\n"
        assert httpx.get(f"{exporter.url}/-/healthy", timeout=10).status_code == 200
        acknowledged = set()
        with httpx.Client(timeout=30) as http:
            for n in range(20):
                body = single_report(f"drain-{n}")
                headers = {"Content-Type": "application/x-www-form-urlencoded"}
                response = http.post(f"{exporter.url}{SINGLE_PATH}", content=body, headers=headers)
                assert response.status_code == 200
                # Each answer closes its connection, so clients reconnect through the
                # load balancer, which by now routes them to another replica.
                assert response.headers["connection"] == "close"
                acknowledged.add(f"drain-{n}")
        assert exporter.proc.poll() is None  # still serving: the delay is ten minutes
        exporter.proc.send_signal(signal.SIGTERM)  # a second signal: exit at once
        assert exporter.proc.wait(timeout=60) == 128 + signal.SIGTERM
        assert acknowledged <= exporter.stored()
        assert "exiting at once" in exporter.log()


def test_after_the_delay_a_request_in_flight_finishes_and_the_exit_code_is_0(
    tmp_path: Path,
) -> None:
    with push_exporter(tmp_path, "--web.shutdown-delay", "1s") as exporter:
        body = single_report("in-flight")
        head = (
            f"POST {SINGLE_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", exporter.port), timeout=60) as client:
            client.sendall(head + body[:10])
            assert exporter.post_single("before") == 200  # the server has read our head
            exporter.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 60  # a hang guard
            while not _listener_closed(exporter.port):
                assert time.monotonic() < deadline, "the listener never closed"
                time.sleep(0.05)
            client.sendall(body[10:])
            answer = client.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert exporter.proc.wait(timeout=60) == 0
        assert {"before", "in-flight"} <= exporter.stored()
        assert "Traceback" not in exporter.log()


def test_sigint_stops_without_waiting_for_the_delay(tmp_path: Path) -> None:
    with push_exporter(tmp_path, "--web.shutdown-delay", "10m") as exporter:
        assert exporter.post_single("before") == 200
        exporter.proc.send_signal(signal.SIGINT)
        assert exporter.proc.wait(timeout=60) == 0  # well before ten minutes
        assert "before" in exporter.stored()
