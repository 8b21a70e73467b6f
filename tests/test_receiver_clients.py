"""Signed pushes as Python's HTTP clients send them, each over its own kept-alive
connections: requests (a Session), httpx (sync and async), aiohttp, urllib.request and
http.client (header names in odd case, ``Host`` sent twice). Every report is stored
exactly once and every answer is 200."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import httpx
import pytest
import requests
from receiver_server import serving_receiver

from exporter.config import ReceiverConfig
from exporter.receiver import Receiver
from exporter.records import DetailsQuery
from exporter.signing import Credentials, sign_request
from exporter.sqlitestore import PushStore
from exporter.web import WebServer

KEY = Credentials("PUSH-AK", "push-secret")
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


@dataclass
class Served:
    base: str
    store: PushStore
    server: WebServer
    receiver: Receiver

    def stored(self) -> list[str]:
        """Every stored segment's message id, sorted (a duplicate would show twice)."""
        return sorted(message_id for message_id, _ in self.store.segment_rows())

    def descriptions(self) -> set[str]:
        records = self.store.query(DetailsQuery(0, 4e9, limit=500)).records
        return {r.status_desc for r in records}


def _updated() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))


def _form(message_id: str) -> bytes:
    # A Chinese statusDesc, percent-encoded as a form encoder sends it.
    desc = "%E7%94%A8%E6%88%B7%E4%B8%8D%E5%AD%98%E5%9C%A8"
    return f"smsMsgId={message_id}&status=E200&statusDesc={desc}&updateTime={_updated()}".encode()


def _batch(*message_ids: str) -> bytes:
    items = [{"smsMsgId": m, "status": "DELIVRD", "updateTime": _updated()} for m in message_ids]
    return json.dumps({"statusReportList": items}).encode()


def _signed(url: str, body: bytes, content_type: str) -> dict[str, str]:
    host = url.split("/")[2]
    headers = {"Content-Type": content_type, "Host": host}
    return sign_request("POST", url, headers, body, KEY, datetime.now(UTC))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with PushStore(tmp_path / "push.db") as store:
        config = ReceiverConfig(store_path=store.path, signing_keys=(KEY,))
        with serving_receiver(config, store) as (server, receiver):
            yield Served(f"http://127.0.0.1:{server.address[1]}", store, server, receiver)


def test_a_requests_session_pushes_over_one_kept_alive_connection(served: Served) -> None:
    sent = []
    with requests.Session() as session:
        for n in range(10):
            url, body = f"{served.base}/push/status-report", _form(f"requests-{n}")
            answer = session.post(url, data=body, headers=_signed(url, body, FORM), timeout=10)
            assert (answer.status_code, answer.content) == (200, b"")
            url, body = f"{served.base}/push/status-reports", _batch(f"requests-b{n}")
            answer = session.post(url, data=body, headers=_signed(url, body, JSON), timeout=10)
            assert answer.status_code == 200
            sent += [f"requests-{n}", f"requests-b{n}"]
        assert served.server.stats.connections == 1, "all 20 over one kept-alive connection"
    assert served.stored() == sorted(sent)
    assert "用户不存在" in served.descriptions()


def test_httpx_sync_and_async_clients_push_concurrently_over_http_1_1(served: Served) -> None:
    with httpx.Client(timeout=10) as client:
        for n in range(5):
            url, body = f"{served.base}/push/status-report", _form(f"httpx-{n}")
            answer = client.post(url, content=body, headers=_signed(url, body, FORM))
            assert (answer.http_version, answer.status_code) == ("HTTP/1.1", 200)

    async def pushes() -> list[int]:
        async with httpx.AsyncClient(timeout=10) as client:

            async def one(n: int) -> int:
                url, body = (
                    f"{served.base}/push/status-reports",
                    _batch(f"async-{n}", f"async-{n}x"),
                )
                answer = await client.post(url, content=body, headers=_signed(url, body, JSON))
                return answer.status_code

            return await asyncio.gather(*(one(n) for n in range(20)))

    assert asyncio.run(pushes()) == [200] * 20
    expected = [f"httpx-{n}" for n in range(5)]
    expected += [m for n in range(20) for m in (f"async-{n}", f"async-{n}x")]
    assert served.stored() == sorted(expected)


def test_aiohttp_pushes_concurrently_on_its_pooled_connections(served: Served) -> None:
    async def pushes() -> list[int]:
        async with aiohttp.ClientSession() as session:

            async def one(n: int) -> int:
                single = n % 2 == 0
                path = "/push/status-report" if single else "/push/status-reports"
                url = f"{served.base}{path}"
                body = _form(f"aiohttp-{n}") if single else _batch(f"aiohttp-{n}")
                headers = _signed(url, body, FORM if single else JSON)
                async with session.post(url, data=body, headers=headers) as answer:
                    await answer.read()
                    return answer.status

            return await asyncio.gather(*(one(n) for n in range(20)))

    assert asyncio.run(pushes()) == [200] * 20
    assert served.stored() == sorted(f"aiohttp-{n}" for n in range(20))


def test_urllib_request_pushes_are_stored(served: Served) -> None:
    for n in range(3):
        url, body = f"{served.base}/push/status-report", _form(f"urllib-{n}")
        request = urllib.request.Request(url, body, _signed(url, body, FORM), method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
    assert served.stored() == [f"urllib-{n}" for n in range(3)]


def test_http_client_with_odd_header_case_and_host_sent_twice_is_stored(served: Served) -> None:
    port = served.server.address[1]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for n in range(3):
            url, body = f"{served.base}/push/status-report", _form(f"client-{n}")
            # The caller's Host beside the one putrequest adds (the same value) on the
            # last request; header names in swapped case on all.
            connection.putrequest("POST", "/push/status-report", skip_host=n < 2)
            for name, value in _signed(url, body, FORM).items():
                connection.putheader(name.swapcase(), value)
            connection.putheader("CONTENT-length", str(len(body)))
            connection.endheaders(body)
            answer = connection.getresponse()
            assert (answer.status, answer.read()) == (200, b"")
    finally:
        connection.close()
    assert served.stored() == [f"client-{n}" for n in range(3)]
