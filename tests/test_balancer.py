"""The shipped nginx example (``deploy/loadbalancer``) forwards every URL the receiver
takes (with or without a trailing ``/``, with a query string, raw), and nothing else:
checked with ``nginx -t`` and through a running nginx in front of two receivers."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from balancer import check_config, nginx

from exporter.config import ReceiverConfig
from exporter.receiver import Receiver
from exporter.records import DetailsQuery
from exporter.sqlitestore import PushStore
from exporter.web import Router, WebServer, text

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[tuple[list[int], PushStore]]:
    """Two receivers on one SQLite store (as two replicas share PostgreSQL), each also
    serving ``/metrics``, which the balancer must not expose."""
    with PushStore(tmp_path / "push.db") as store:
        servers = []
        for _ in range(2):
            router = Router()
            router.add("/metrics", lambda _r: text(200, "internal"))
            Receiver(ReceiverConfig(store_path=store.path), store).add_routes(router)
            server = WebServer(router, "127.0.0.1", 0)
            server.start()
            servers.append(server)
        try:
            yield [s.address[1] for s in servers], store
        finally:
            for server in servers:
                server.stop()


def _report(message_id: str) -> bytes:
    updated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    return f"smsMsgId={message_id}&status=DELIVRD&updateTime={updated}".encode()


def test_the_nginx_example_passes_nginx_t(tmp_path: Path) -> None:
    checked = check_config(tmp_path / "nginx", [1, 2])
    assert checked.returncode == 0, checked.stderr


def test_the_nginx_example_forwards_every_push_url_the_receiver_takes_and_no_other(
    tmp_path: Path, receivers: tuple[list[int], PushStore]
) -> None:
    ports, store = receivers
    with nginx(tmp_path / "nginx", ports) as url, httpx.Client(timeout=30) as http:
        singles = ["/push/status-report", "/push/status-report/", "/push/status-report?a=1"]
        for n, path in enumerate(singles):
            answer = http.post(f"{url}{path}", content=_report(f"lb-{n}"), headers=FORM)
            assert (answer.status_code, answer.content) == (200, b""), path
        batch = b'{"statusReportList": [{"smsMsgId": "lb-batch", "status": "DELIVRD"}]}'
        for path in ("/push/status-reports", "/push/status-reports/"):
            assert http.post(f"{url}{path}", content=batch, headers=JSON).status_code == 200
        sends = http.post(f"{url}/push/sends/", content=b"[]", headers=JSON)
        assert sends.status_code == 200, "registrations reach the receiver"
        for path in ("/metrics", "/push/status-reportx", "/push/", "/push/status-report/x"):
            assert http.get(f"{url}{path}").status_code == 404, path
            assert http.post(f"{url}{path}", content=b"", headers=FORM).status_code == 404, path
    stored = {r.message_id for r in store.query(DetailsQuery(0, 4e9, limit=100)).records}
    assert stored == {"lb-0", "lb-1", "lb-2", "lb-batch"}


def _closing_push(port: int, message_id: str, how: int | None) -> bytes:
    """A push whose client closes once it has sent it: ``shutdown(how)``, or ``close()``
    (None). Returns what was answered (nothing after a close)."""
    body = _report(message_id)
    head = f"POST /push/status-report HTTP/1.1\r\nHost: lb\r\nContent-Type: {FORM['Content-Type']}"
    raw = f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(raw)
        if how is None:
            return b""
        sock.shutdown(how)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def test_the_nginx_example_stores_a_push_whose_client_closes_right_after_sending(
    tmp_path: Path, receivers: tuple[list[int], PushStore]
) -> None:
    ports, store = receivers
    with nginx(tmp_path / "nginx", ports) as url:
        port = int(url.rsplit(":", 1)[1])
        closed = [f"closed-{n}" for n in range(5)]
        for message_id in closed:
            _closing_push(port, message_id, None)
        for n in range(5):
            answer = _closing_push(port, f"half-{n}", socket.SHUT_WR)
            assert answer.startswith(b"HTTP/1.1 200 "), answer
        deadline = time.monotonic() + 30  # a closed client's push is answered to no one
        while len(_stored(store)) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert _stored(store) == {*closed, *(f"half-{n}" for n in range(5))}


def _stored(store: PushStore) -> set[str]:
    return {r.message_id for r in store.query(DetailsQuery(0, 4e9, limit=100)).records}
