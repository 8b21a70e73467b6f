"""Pushes on the wire as odd-but-legal clients send them, byte for byte: pipelined with a
``Connection: close`` in the middle, in absolute form, without ``Host``, expecting
``100-continue`` and refused. Whatever is acknowledged is stored; whatever is not
answered is not stored; every refusal is counted."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from receiver_server import serving_receiver

from exporter.config import ReceiverConfig
from exporter.receiver import Receiver
from exporter.records import DetailsQuery
from exporter.signing import Credentials, sign_request
from exporter.sqlitestore import PushStore
from exporter.web import WebServer

KEY = Credentials("PUSH-AK", "push-secret")
FORM = "application/x-www-form-urlencoded"


@dataclass
class Wire:
    port: int
    store: PushStore
    server: WebServer
    receiver: Receiver

    def exchange(self, raw: bytes, *, then: bytes = b"") -> bytes:
        """Send ``raw`` (and ``then`` once something is answered); read until closed."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(raw)
            answer = b""
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
                    if then:
                        sock.sendall(then)
                        then = b""
            except TimeoutError:
                pass
        return answer

    def stored(self) -> list[str]:
        return sorted(r.message_id for r in self.store.query(DetailsQuery(0, 4e9)).records)


@pytest.fixture
def wire(tmp_path: Path) -> Iterator[Wire]:
    with PushStore(tmp_path / "push.db") as store:
        config = ReceiverConfig(store_path=store.path, signing_keys=(KEY,))
        with serving_receiver(config, store) as (server, receiver):
            yield Wire(server.address[1], store, server, receiver)


def _push(
    message_id: str, target: str = "/push/status-report", *, host: str | None = "x", **extra: str
) -> bytes:
    """A signed single report, as Huawei's signer makes it, with the request line given."""
    updated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    body = f"smsMsgId={message_id}&status=DELIVRD&updateTime={updated}".encode()
    path = re.sub(r"^https?://[^/]*", "", target)
    headers = {"Content-Type": FORM, **extra} | ({"Host": host} if host else {})
    signed = sign_request(
        "POST", f"http://{host or ''}{path}", headers, body, KEY, datetime.now(UTC)
    )
    if host is None:
        del signed["Host"]
    lines = [f"POST {target} HTTP/1.1", *(f"{k}: {v}" for k, v in signed.items())]
    return ("\r\n".join([*lines, f"Content-Length: {len(body)}"]) + "\r\n\r\n").encode() + body


def _statuses(answer: bytes) -> list[bytes]:
    return re.findall(rb"HTTP/1\.1 (\d{3})", answer)


def test_pipelined_pushes_after_a_connection_close_are_neither_answered_nor_stored(
    wire: Wire,
) -> None:
    raw = _push("pipe-1") + _push("pipe-2", Connection="close") + _push("pipe-3")
    assert _statuses(wire.exchange(raw)) == [b"200", b"200"]
    assert wire.stored() == ["pipe-1", "pipe-2"]


def test_absolute_form_targets_and_a_request_without_host_are_stored(wire: Wire) -> None:
    absolute = _push("abs-1", "http://x/push/status-report/?from=proxy", Connection="close")
    assert _statuses(wire.exchange(absolute)) == [b"200"]
    no_host = _push("nohost-1", host=None, Connection="close")
    assert _statuses(wire.exchange(no_host)) == [b"200"]
    assert wire.stored() == ["abs-1", "nohost-1"]


def test_expect_100_continue_refused_for_size_or_signature_stores_nothing_and_counts(
    wire: Wire,
) -> None:
    too_large = (
        b"POST /push/status-report HTTP/1.1\r\nHost: x\r\nContent-Type: "
        + FORM.encode()
        + b"\r\nExpect: 100-continue\r\nContent-Length: 2000000\r\n\r\n"
    )
    assert _statuses(wire.exchange(too_large)) == [b"413"], "no 100 before the refusal"
    forged = _push("forged-1", Expect="100-continue", Connection="close")
    head, _, body = forged.replace(b"Signature=", b"Signature=00").partition(b"\r\n\r\n")
    answer = wire.exchange(head + b"\r\n\r\n", then=body)
    assert _statuses(answer) == [b"100", b"401"]
    assert wire.stored() == []
    assert wire.server.stats.rejected["body_too_large"] == 1
    assert wire.receiver.stats.rejected["signature"] == 1


def _with_header(raw: bytes, line: bytes) -> bytes:
    """``raw`` with one more header line after its request line."""
    request_line, _, rest = raw.partition(b"\r\n")
    return request_line + b"\r\n" + line + b"\r\n" + rest


def test_a_header_repeated_with_the_same_value_is_read_once(wire: Wire) -> None:
    twice = _with_header(_push("twice-1", host="x", Connection="close"), b"Host: x")
    assert _statuses(wire.exchange(twice)) == [b"200"]
    assert wire.stored() == ["twice-1"]


@pytest.mark.parametrize(
    "line",
    [b"Host: elsewhere", b"Content-Type: application/json", b"X-Sdk-Date: 20200101T000000Z"],
)
def test_a_header_repeated_with_another_value_is_refused_and_counted(
    wire: Wire, line: bytes
) -> None:
    conflicting = _with_header(_push("conflict-1"), line)
    answer = wire.exchange(conflicting)
    assert _statuses(answer) == [b"400"]
    name = line.split(b":")[0].decode()
    assert answer.endswith(f"{name.lower()} given twice, with different values\n".encode())
    assert wire.stored() == []
    assert wire.server.stats.rejected == {"conflicting_header": 1}


def test_a_path_with_an_unreserved_character_percent_encoded_is_the_same_path(
    wire: Wire,
) -> None:
    escaped = _push("escaped-1", "/push/status%2Dreport", Connection="close")
    assert _statuses(wire.exchange(escaped)) == [b"200"]
    assert wire.stored() == ["escaped-1"]


@pytest.mark.parametrize(
    ("rewrite", "problem"),
    [
        (
            lambda raw: raw.replace(FORM.encode(), FORM.encode() + b";\r\n charset=utf-8"),
            b"a header folded onto an indented next line (obsolete line folding) is not"
            b" accepted; send each header on one line",
        ),
        (
            lambda raw: raw.replace(b"\r\n", b"\n"),
            b"lines must end with CRLF, not a bare LF",
        ),
    ],
    ids=["obs-fold", "bare-lf"],
)
def test_a_folded_header_or_bare_lf_lines_are_refused_saying_which(
    wire: Wire, rewrite: Callable[[bytes], bytes], problem: bytes
) -> None:
    answer = wire.exchange(rewrite(_push("folded-1")))
    assert _statuses(answer) == [b"400"]
    assert answer.endswith(b"malformed HTTP/1.1 request: " + problem + b"\n")
    assert wire.stored() == []
    assert wire.server.stats.rejected == {"bad_request": 1}
