"""The shipped nginx and HAProxy examples (``deploy/loadbalancer``) forward every URL the
receiver takes (with or without a trailing ``/``, with a query string, raw), and nothing
else; signed pushes keep their signature over kept-alive connections, a push whose client
closes right after sending is stored, and (HAProxy) a replica that is down costs no push.
Checked with ``nginx -t``/``haproxy -c`` and through the running balancer in front of
two receivers."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from balancer import check_config, check_haproxy_config, haproxy, nginx
from health import free_port

from exporter.config import ReceiverConfig
from exporter.receiver import Receiver
from exporter.records import DetailsQuery
from exporter.signing import Credentials, sign_request
from exporter.sqlitestore import PushStore
from exporter.web import Router, WebServer, text

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}
KEY = Credentials("PUSH-AK", "push-secret")
Balancer = Callable[[Path, list[int]], AbstractContextManager[str]]


@pytest.fixture(params=["nginx", "haproxy"])
def balancer(request: pytest.FixtureRequest) -> Balancer:
    """Each shipped example, run by its own program."""
    run: Balancer = nginx if request.param == "nginx" else haproxy
    return run


@dataclass
class Replicas:
    """Two receivers on one SQLite store (as two replicas share PostgreSQL)."""

    servers: list[WebServer]
    store: PushStore

    @property
    def ports(self) -> list[int]:
        return [s.address[1] for s in self.servers]

    def stored(self) -> set[str]:
        return {r.message_id for r in self.store.query(DetailsQuery(0, 4e9, limit=500)).records}


def _replicas(tmp_path: Path, keys: tuple[Credentials, ...]) -> Iterator[Replicas]:
    """Each replica also serves ``/metrics``, which the balancer must not expose."""
    with PushStore(tmp_path / "push.db") as store:
        servers = []
        for _ in range(2):
            router = Router()
            router.add("/metrics", lambda _r: text(200, "internal"))
            receiver = Receiver(ReceiverConfig(store_path=store.path, signing_keys=keys), store)
            receiver.add_routes(router)
            server = WebServer(router, "127.0.0.1", 0)
            server.start()
            servers.append(server)
        try:
            yield Replicas(servers, store)
        finally:
            for server in servers:
                server.stop()


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[tuple[list[int], PushStore]]:
    """Two receivers taking unsigned pushes: their ports and their store."""
    for replicas in _replicas(tmp_path, ()):
        yield replicas.ports, replicas.store


@pytest.fixture
def signed_replicas(tmp_path: Path) -> Iterator[Replicas]:
    """Two receivers taking only pushes signed with ``KEY``."""
    yield from _replicas(tmp_path, (KEY,))


def _report(message_id: str) -> bytes:
    updated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    return f"smsMsgId={message_id}&status=DELIVRD&updateTime={updated}".encode()


def test_the_nginx_example_passes_nginx_t(tmp_path: Path) -> None:
    checked = check_config(tmp_path / "nginx", [1, 2])
    assert checked.returncode == 0, checked.stderr


def test_the_haproxy_example_passes_haproxy_c() -> None:
    checked = check_haproxy_config([1, 2])
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_examples_forward_every_push_url_the_receiver_takes_and_no_other(
    tmp_path: Path, receivers: tuple[list[int], PushStore], balancer: Balancer
) -> None:
    ports, store = receivers
    with balancer(tmp_path / "lb", ports) as url, httpx.Client(timeout=30) as http:
        singles = [
            "/push/status-report",
            "/push/status-report/",
            "/push/status-report?a=1",
            "//push/status-report",
            "/push/status%2Dreport",
        ]
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
    assert stored == {"lb-0", "lb-1", "lb-2", "lb-3", "lb-4", "lb-batch"}


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


def test_the_examples_store_a_push_whose_client_closes_right_after_sending(
    tmp_path: Path, receivers: tuple[list[int], PushStore], balancer: Balancer
) -> None:
    ports, store = receivers
    with balancer(tmp_path / "lb", ports) as url:
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


def _signed(url: str, body: bytes, content_type: str) -> dict[str, str]:
    """Huawei's signature for ``body`` POSTed to ``url`` (its Host as in the URL)."""
    host = url.split("/")[2]
    headers = {"Content-Type": content_type, "Host": host}
    return sign_request("POST", url, headers, body, KEY, datetime.now(UTC))


def test_signed_pushes_through_the_examples_verify_and_are_stored_once_over_keep_alive(
    tmp_path: Path, signed_replicas: Replicas, balancer: Balancer
) -> None:
    with balancer(tmp_path / "lb", signed_replicas.ports) as url, httpx.Client() as http:
        sent: set[str] = set()
        for n in range(40):
            single, batch = f"{url}/push/status-report?n={n}", f"{url}/push/status-reports/"
            body = _report(f"signed-{n}")
            headers = _signed(single, body, FORM["Content-Type"])
            assert http.post(single, content=body, headers=headers).status_code == 200
            items = [f'{{"smsMsgId": "signed-b{n}-{i}", "status": "DELIVRD"}}' for i in range(2)]
            body = f'{{"statusReportList": [{", ".join(items)}]}}'.encode()
            headers = _signed(batch, body, JSON["Content-Type"])
            assert http.post(batch, content=body, headers=headers).status_code == 200
            sent |= {f"signed-{n}", f"signed-b{n}-0", f"signed-b{n}-1"}
        target = f"{url}/push/status-report"
        forged = _signed(f"{target}?other=1", _report("forged"), FORM["Content-Type"])
        answer = http.post(target, content=_report("forged"), headers=forged)
        assert (answer.status_code, answer.json()["reason"]) == (401, "signature")
    assert signed_replicas.stored() == sent
    assert len(sent) == 120


def test_the_haproxy_example_sends_every_push_to_the_replica_that_is_up(
    tmp_path: Path, receivers: tuple[list[int], PushStore]
) -> None:
    ports, store = receivers
    down = free_port()  # a replica that does not answer: stopped, or its node lost
    with haproxy(tmp_path / "lb", [ports[0], down]) as url, httpx.Client(timeout=30) as http:
        for n in range(10):
            answer = http.post(
                f"{url}/push/status-report", content=_report(f"up-{n}"), headers=FORM
            )
            assert answer.status_code == 200, answer.text
    assert _stored(store) == {f"up-{n}" for n in range(10)}
