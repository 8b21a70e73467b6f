"""The password verifier under a flood of wrong passwords, through a real server on loopback.

bcrypt at cost 10 (about 50 ms a check here), as operators' hashes cost at least that: the
flood must outlast the good requests for the ordering to mean anything.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import bcrypt
from exposition import Samples, samples, value
from prometheus_client import CollectorRegistry, generate_latest

from exporter.app import Exporter
from exporter.config import Config, ReceiverConfig, push_account
from exporter.verifier import WAITING_CHECKS
from exporter.webconfig import WebConfig
from exporter.webstats import HttpCollector

FLOOD = 200
PASSWORD = "right-pass-3c9e"


def _http_counters(exporter: Exporter) -> Samples:
    """The HTTP layer's counters now (the scrape's live part may be 100 ms old)."""
    registry = CollectorRegistry()
    registry.register(HttpCollector(exporter.http_stats))
    return samples(generate_latest(registry))


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def _ask(
    port: int, method: str, path: str, authorization: str, body: bytes = b""
) -> tuple[int, bytes]:
    """One request on its own connection: the status and the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: exporter\r\nAuthorization: {authorization}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    answer = await reader.read()
    writer.close()
    return int(answer.split(b" ", 2)[1]), answer


async def _flood_then_good_requests(port: int) -> tuple[list[int], list[str], list[int], int]:
    """200 distinct wrong passwords at once, then (once the first is answered) a send
    registration and a scrape with the right one: the flood's statuses in the order they
    were answered, with ``good`` marking where the registration's answer came."""
    good = _basic("prom", PASSWORD)
    assert (await _ask(port, "GET", "/metrics", good))[0] == 200  # verified once, remembered
    order: list[str] = []

    async def wrong(i: int) -> tuple[int, bytes]:
        answer = await _ask(port, "GET", "/metrics", _basic("prom", f"guess-{i}"))
        order.append(str(answer[0]))
        return answer

    flood = [asyncio.create_task(wrong(i)) for i in range(FLOOD)]
    await asyncio.wait(flood, return_when=asyncio.FIRST_COMPLETED)
    send_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    sends = [{"message_id": "m1", "template_id": "tplA", "send_time": send_time}]
    registration, scrape = await asyncio.gather(
        _ask(port, "POST", "/push/sends", good, json.dumps(sends).encode()),
        _ask(port, "GET", "/metrics", good),
    )
    order.append("good")
    answers = await asyncio.gather(*flood)
    retry_after = [a for status, a in answers if status == 503 and b"\r\nRetry-After: 1\r\n" in a]
    good_statuses = [registration[0], scrape[0]]
    return [status for status, _ in answers], order, good_statuses, len(retry_after)


def test_requests_with_verified_credentials_never_wait_behind_a_flood_of_wrong_passwords(
    tmp_path: Path,
) -> None:
    receiver = ReceiverConfig(store_path=str(tmp_path / "push.db"))
    config = Config(accounts=(push_account("push"),), receiver=receiver)
    web = WebConfig(users={"prom": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10))})
    with Exporter(config) as exporter:
        _, port = exporter.start("127.0.0.1", 0, web=web)
        statuses, order, good, retry_after = asyncio.run(_flood_then_good_requests(port))
        exposition = _http_counters(exporter)
    assert good == [200, 200]  # the registration, and a scrape
    # Before: the registration waited in the worker pool behind the flood's bcrypt checks
    # (169 of 200 answered first, 9 s at cost 10). Now no check stands before it.
    checked_first = order[: order.index("good")].count("401")
    assert checked_first <= WAITING_CHECKS + 1, order
    # The checks waiting are bounded: the rest of the flood is refused at once, counted.
    refused = statuses.count(503)
    assert refused > 0 and refused + statuses.count(401) == FLOOD
    assert retry_after == refused
    rejected = "msgsms_http_requests_rejected_total"
    assert value(exposition, rejected, reason="auth_overloaded") == refused
    assert value(exposition, rejected, reason="unauthorized") == statuses.count(401)
