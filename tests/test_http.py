"""The HTTP layer over real sockets: strict framing, every refusal counted, bounded clients."""

from __future__ import annotations

import contextlib
import re
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import httpx
import pytest
from exporter_process import push_exporter
from prometheus_client import CollectorRegistry, generate_latest
from structlog.testing import capture_logs

from exporter.config import ReceiverConfig
from exporter.receiver import Receiver
from exporter.sqlitestore import PushStore
from exporter.web import Reply, Request, Response, Router, ServerLimits, WebServer, text
from exporter.webconfig import parse_web_config
from exporter.webstats import HttpCollector

PASSWORD = "scrape-pass-77aa"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
# A minute before the run: the receiver refuses report times far from its clock.
REPORT = b"smsMsgId=chunked-1&status=DELIVRD&updateTime=" + time.strftime(
    "%Y-%m-%dT%H%%3A%M%%3A%SZ", time.gmtime(time.time() - 60)
).encode("ascii")


@dataclass
class Served:
    server: WebServer
    port: int
    release: threading.Event

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rejected(self) -> dict[str, float]:
        """msgsms_http_requests_rejected_total by reason, and the dropped connections."""
        registry = CollectorRegistry()
        registry.register(HttpCollector(self.server.stats))
        values: dict[str, float] = {}
        for line in generate_latest(registry).decode().splitlines():
            if line.startswith("msgsms_http_") and "{" in line:
                name, _, rest = line.partition("{")
                label, _, value = rest.partition("} ")
                values[f"{name}:{label.split('=')[1].strip(chr(34))}"] = float(value)
            elif line.startswith("msgsms_http_"):
                name, _, value = line.partition(" ")
                values[name] = float(value)
        return values


def _router(release: threading.Event) -> Router:
    def fail(_request: Request) -> Response:
        raise RuntimeError("a bug in a route")

    def wait(_request: Request) -> Response:
        release.wait(30)
        return text(200, "released")

    def where(request: Request, reply: Reply) -> None:
        reply(text(200, threading.current_thread().name))

    router = Router()
    router.add("/echo", lambda r: Response(200, r.body), methods=("POST",))
    router.add_deferred("/where", where)
    router.add("/-/healthy", lambda _r: text(200, "OK"), fast=lambda _r: text(200, "OK"))
    router.add("/private", lambda _r: text(200, "secret"))
    router.add("/fail", fail)
    router.add("/wait", wait)
    return router


@pytest.fixture
def served() -> Iterator[Served]:
    release = threading.Event()
    web = parse_web_config({"basic_auth_users": {"prom": HASH}})
    server = WebServer(
        _router(release),
        "127.0.0.1",
        0,
        auth=web.auth(),
        open_paths={"/echo", "/-/healthy", "/fail", "/wait", "/where"},
        limits=ServerLimits(head_timeout=1.0, request_timeout=2.0, max_connections=16),
    )
    server.start()
    yield Served(server, server.address[1], release)
    release.set()
    server.stop()


def _exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes, read until the server closes (or 10 s of silence)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            pass
    return answer


def _status_lines(answer: bytes) -> list[bytes]:
    return re.findall(rb"HTTP/1\.1 \d{3} [^\r]*", answer)


def test_a_chunked_body_reaches_the_route_decoded(served: Served) -> None:
    raw = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
        b"\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"
    )
    answer = _exchange(served.port, raw)
    assert _status_lines(answer) == [b"HTTP/1.1 200 OK"]
    assert answer.endswith(b"\r\n\r\nhello, world")


def test_a_chunked_single_report_is_stored_with_one_answer(tmp_path: Path) -> None:
    with PushStore(tmp_path / "push.db") as store:
        receiver = Receiver(ReceiverConfig(store_path=store.path), store)
        router = Router()
        receiver.add_routes(router)
        server = WebServer(router, "127.0.0.1", 0)
        server.start()
        try:
            head = (
                b"POST /push/status-report HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            chunks = b"".join(
                b"%x\r\n%s\r\n" % (len(part), part) for part in (REPORT[:20], REPORT[20:])
            )
            answer = _exchange(server.address[1], head + chunks + b"0\r\n\r\n")
        finally:
            server.stop()
        assert _status_lines(answer) == [b"HTTP/1.1 200 OK"]  # one answer, not two
        assert store.message_count() == 1


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400, "length_and_chunked"),
        (b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 400, "length_and_chunked"),
        (b"Content-Length: 1_0\r\n", 400, "bad_content_length"),
        (b"Content-Length: -1\r\n", 400, "bad_content_length"),
        (b"Content-Length: +5\r\n", 400, "bad_content_length"),
        (b"Content-Length: 5\r\nContent-Length: 5\r\n", 400, "bad_content_length"),
        (b"Transfer-Encoding: gzip\r\n", 400, "bad_transfer_encoding"),
        (b"Transfer-Encoding: chunked, gzip\r\n", 400, "bad_transfer_encoding"),
        (b"Transfer-Encoding: gzip, chunked\r\n", 501, "unsupported_transfer_coding"),
        (b"Content-Length: 1048577\r\n", 413, "body_too_large"),
        (b"X-Folded: a\r\n b\r\n", 400, "bad_request"),
    ],
)
def test_ambiguous_or_malformed_framing_is_refused_and_counted(
    served: Served, headers: bytes, status: int, reason: str
) -> None:
    raw = b"POST /echo HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\nhello"
    answer = _exchange(served.port, raw)
    assert _status_lines(answer)[0].startswith(f"HTTP/1.1 {status} ".encode())
    assert b"Connection: close\r\n" in answer
    assert served.rejected()[f"msgsms_http_requests_rejected_total:{reason}"] == 1


def test_every_refusal_of_the_http_layer_is_counted_by_reason(served: Served) -> None:
    url = served.url
    assert httpx.get(f"{url}/private").status_code == 401
    assert httpx.get(f"{url}/private", auth=("prom", "wrong")).status_code == 401
    assert httpx.get(f"{url}/private", auth=("prom", PASSWORD)).text == "secret\n"
    assert httpx.get(f"{url}/nowhere", auth=("prom", PASSWORD)).status_code == 404
    assert httpx.delete(f"{url}/echo").status_code == 405
    assert httpx.get(f"{url}/fail").status_code == 500
    assert httpx.post(f"{url}/echo", content=b"x" * (1024 * 1024 + 1)).status_code == 413
    assert httpx.get(f"{url}/echo", headers={f"x-{i}": "v" for i in range(120)}).status_code == 431
    assert _status_lines(_exchange(served.port, b"GET /echo HTTP/2.0\r\n\r\n")) == [
        b"HTTP/1.1 505 HTTP Version Not Supported"
    ]
    assert _status_lines(_exchange(served.port, b"\x16\x03\x01\x02\x00\x01\x00")) == [
        b"HTTP/1.1 400 Bad Request"
    ]
    counts = served.rejected()
    expected = {
        "unauthorized": 2,
        "not_found": 1,
        "method_not_allowed": 1,
        "internal_error": 1,
        "body_too_large": 1,
        "head_too_large": 1,
        "unsupported_version": 1,
        "bad_request": 1,
        "timeout": 0,
    }
    for reason, count in expected.items():
        assert counts[f"msgsms_http_requests_rejected_total:{reason}"] == count, reason


@pytest.mark.parametrize(
    "head",
    [
        b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 70_000 + b"\r\n",
        b"POST /echo?q=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n",
    ],
    ids=["header line", "request target"],
)
def test_a_head_over_64_kib_is_refused_even_when_it_arrives_in_one_read(
    served: Served, head: bytes
) -> None:
    raw = head + b"Content-Length: 5\r\n\r\nhello"
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        # The whole request is in the socket before the server reads: one read takes it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert _status_lines(answer) == [b"HTTP/1.1 431 Request Header Fields Too Large"]
    assert served.rejected()["msgsms_http_requests_rejected_total:head_too_large"] == 1


def test_pipelined_requests_are_answered_in_order_and_100_continue_is_sent(
    served: Served,
) -> None:
    raw = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none"
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\ntwo"
        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    answer = _exchange(served.port, raw)
    assert _status_lines(answer) == [b"HTTP/1.1 200 OK"] * 3
    assert answer.index(b"\r\n\r\none") < answer.index(b"\r\n\r\ntwo") < answer.index(b"OK\n")
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n")
        sock.sendall(b"Content-Length: 4\r\nConnection: close\r\n\r\n")
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"body")
        assert sock.recv(65536).endswith(b"\r\n\r\nbody")


@pytest.mark.parametrize("echoes", [0, 2])
def test_a_client_that_half_closes_after_its_requests_gets_every_answer(
    served: Served, echoes: int
) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        for n in range(echoes):
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbod%d" % n)
        sock.sendall(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")  # answered once released
        sock.shutdown(socket.SHUT_WR)  # as nc -N does: nothing more to send
        time.sleep(0.2)  # the server reads the end of the stream while /wait waits
        served.release.set()
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert _status_lines(answer) == [b"HTTP/1.1 200 OK"] * (echoes + 1)
    assert answer.endswith(b"\r\n\r\nreleased\n")


def test_an_http_1_0_client_expecting_100_continue_gets_only_the_final_answer(
    served: Served,
) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        sock.sendall(b"body")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert _status_lines(answer) == [b"HTTP/1.1 200 OK"]
    assert answer.endswith(b"\r\n\r\nbody")


@pytest.mark.parametrize(
    ("request_line", "message"),
    [
        (b"PRI * HTTP/2.0\r\n\r\nSM", b"HTTP/2 is not served: use HTTP/1.1\n"),
        (b"GET /echo HTTP/1.2", b"only HTTP/1.0 and HTTP/1.1 are served\n"),
        (b"GET /echo HTTP/3.0", b"only HTTP/1.0 and HTTP/1.1 are served\n"),
    ],
    ids=["http2 preface", "1.2", "3.0"],
)
def test_an_http_version_not_served_is_refused_as_an_unsupported_version(
    served: Served, request_line: bytes, message: bytes
) -> None:
    answer = _exchange(served.port, request_line + b"\r\n\r\n")
    assert _status_lines(answer) == [b"HTTP/1.1 505 HTTP Version Not Supported"]
    assert answer.endswith(message)
    assert served.rejected()["msgsms_http_requests_rejected_total:unsupported_version"] == 1


def test_an_http_1_0_client_asking_for_keep_alive_is_told_it_is_kept(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\none"
        )
        first = sock.recv(65536)
        sock.sendall(b"POST /echo HTTP/1.0\r\nContent-Length: 3\r\n\r\ntwo")  # not kept
        second = b""
        while chunk := sock.recv(65536):
            second += chunk
    assert b"\r\nConnection: keep-alive\r\n" in first
    assert first.endswith(b"\r\n\r\none")
    assert b"\r\nConnection: close\r\n" in second
    assert second.endswith(b"\r\n\r\ntwo")


@pytest.mark.parametrize(
    "cut",
    [
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nshort",
        b"POST /echo HTTP/1.1\r\nHo",
    ],
    ids=["body", "head"],
)
def test_a_request_cut_short_by_the_client_is_answered_400_and_counted(
    served: Served, cut: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(cut)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert _status_lines(answer) == [b"HTTP/1.1 400 Bad Request"]
    assert answer.endswith(b"the request ended before it was complete\n")
    assert served.rejected()["msgsms_http_requests_rejected_total:incomplete"] == 1


def test_the_whole_head_has_a_deadline_not_each_read(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\n")
        answer = b""
        for n in range(300):  # a header line every 0.1 s: 30 s if never cut off
            try:
                sock.sendall(f"X-Slow-{n}: 1\r\n".encode())
            except OSError:
                break
            time.sleep(0.1)
            sock.setblocking(False)
            try:
                answer += sock.recv(1024)
            except BlockingIOError:
                pass
            except OSError:
                break
            finally:
                sock.setblocking(True)
            if answer:
                break
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert n < 299
    assert served.rejected()["msgsms_http_requests_rejected_total:timeout"] == 1


def _slow(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /-/healthy HTTP/1.1\r\nX-Slow: 1\r\n")  # a head never finished
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed ``sock``: an end of stream, or a reset when it closed
    before reading all that was sent (a loaded machine may evict a connection that soon)."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def test_at_the_cap_the_oldest_connection_in_its_request_head_is_evicted(
    served: Served,
) -> None:
    slow = [_slow(served.port) for _ in range(16)]
    try:
        with httpx.Client() as http:  # one more connection: the oldest slow one goes
            assert http.get(f"{served.url}/-/healthy").text == "OK\n"
        assert _closed_by_server(slow[0])
        counts = served.rejected()
        assert counts["msgsms_http_connections_dropped_total:evicted"] >= 1
        assert counts["msgsms_http_connections_limit"] == 16
    finally:
        for sock in slow:
            sock.close()


def test_at_the_cap_with_every_connection_busy_a_new_one_is_closed(served: Served) -> None:
    busy = []
    for _ in range(16):
        sock = socket.create_connection(("127.0.0.1", served.port), timeout=10)
        sock.sendall(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        busy.append(sock)
    try:
        deadline = time.monotonic() + 30  # a hang guard
        while served.rejected()["msgsms_http_connections"] < 16:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)  # let the last ones reach their route
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{served.url}/-/healthy", timeout=10)
        assert served.rejected()["msgsms_http_connections_dropped_total:over_capacity"] >= 1
        served.release.set()
        for sock in busy:
            assert sock.recv(1024).startswith(b"HTTP/1.1 200 OK\r\n")
        assert httpx.get(f"{served.url}/-/healthy").text == "OK\n"
    finally:
        for sock in busy:
            sock.close()


def test_idle_and_slow_connections_cost_no_thread(served: Served) -> None:
    # Which threads, not how many: an earlier test's threads may still be ending.
    before = set(threading.enumerate())
    held = [_slow(served.port) for _ in range(12)]
    try:
        assert httpx.get(f"{served.url}/-/healthy").text == "OK\n"
        assert set(threading.enumerate()) - before == set()
    finally:
        for sock in held:
            sock.close()


def _metric(exposition: str, name: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the exposition")


def test_with_1024_descriptors_1100_slow_clients_leave_metrics_and_pushes_served(
    tmp_path: Path,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1400:  # this test's own 1,100 sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    with push_exporter(tmp_path, nofile=1024) as exporter:
        slow = [_slow(exporter.port) for _ in range(1100)]
        try:
            metrics = httpx.get(f"{exporter.url}/metrics", timeout=30).text
            # The cap leaves the store, the logs and the upstream clients room.
            assert _metric(metrics, "msgsms_http_connections_limit") == 1024 - 64 - 128
            assert _metric(metrics, "msgsms_http_connections") <= 1024 - 64 - 128
            assert exporter.post_single("beside-slow-clients") == 200
            evicted = 'msgsms_http_connections_dropped_total{reason="evicted"}'
            assert _metric(metrics, evicted) >= 1100 - (1024 - 64 - 128)
        finally:
            for sock in slow:
                sock.close()
        assert httpx.get(f"{exporter.url}/metrics", timeout=30).status_code == 200
        assert "beside-slow-clients" in exporter.stored()


FD_LIMITED_SERVER = """
import resource, sys
from exporter.web import Router, ServerLimits, WebServer, text
from exporter.webstats import HttpStats
from prometheus_client import CollectorRegistry, generate_latest
from exporter.webstats import HttpCollector
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
stats = HttpStats()
registry = CollectorRegistry()
registry.register(HttpCollector(stats))
router = Router()
router.add("/metrics", lambda _r: text(200, generate_latest(registry).decode()))
server = WebServer(router, "127.0.0.1", 0, limits=ServerLimits(max_connections=1000), stats=stats)
server.start()
print(server.address[1], flush=True)
sys.stdin.read()
server.stop()
"""


def test_out_of_descriptors_accept_evicts_the_oldest_waiting_and_does_not_spin() -> None:
    # A cap above the descriptor limit (64), to reach EMFILE on purpose.
    proc = subprocess.Popen(
        [sys.executable, "-c", FD_LIMITED_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        port = int(proc.stdout.readline())
        slow = [_slow(port) for _ in range(150)]
        try:
            first = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
            time.sleep(0.5)  # a spinning accept would count failures all along
            second = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        finally:
            for sock in slow:
                sock.close()
        failures = 'msgsms_http_connections_dropped_total{reason="out_of_descriptors"}'
        evicted = 'msgsms_http_connections_dropped_total{reason="evicted"}'
        assert 1 <= _metric(first, failures) <= 150 + 1
        assert _metric(second, failures) - _metric(first, failures) <= 1  # the second GET's
        assert _metric(first, evicted) >= 150 - 64
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def test_a_large_or_compressed_body_is_parsed_in_a_worker_thread_not_on_the_loop(
    served: Served,
) -> None:
    """A deferred route (a push) starts on the event loop; a megabyte form of 170,000
    fields took the loop a second there, stalling every other client."""
    small = httpx.post(f"{served.url}/where", content=b"x" * 1000)
    large = httpx.post(f"{served.url}/where", content=b"x" * 20_000)
    gzipped = httpx.post(f"{served.url}/where", content=b"x", headers={"Content-Encoding": "gzip"})
    assert small.text == "web\n"
    assert large.text.startswith("web-route") and gzipped.text.startswith("web-route")


def test_an_answer_ready_after_the_server_stopped_is_dropped_with_a_warning() -> None:
    # A push whose write outlived the shutdown (a store waiting on another process's
    # lock) was answered to a closed event loop: a RuntimeError with its traceback.
    held: list[Reply] = []
    routed = threading.Event()

    def hold(_request: Request, reply: Reply) -> None:
        held.append(reply)
        routed.set()

    router = Router()
    router.add_deferred("/hold", hold)
    server = WebServer(router, "127.0.0.1", 0, open_paths={"/hold"})
    server.start()

    def post() -> None:
        with contextlib.suppress(httpx.TransportError):  # closed unanswered at the stop
            httpx.post(f"http://127.0.0.1:{server.address[1]}/hold", content=b"", timeout=30)

    client = threading.Thread(target=post)
    client.start()
    assert routed.wait(30)
    server.stop(grace=0)
    client.join()
    with capture_logs() as logs:
        held[0](text(200, "stored"))
    assert [(e["log_level"], e["event"], e["status"]) for e in logs] == [
        ("warning", "answer ready after the server stopped: its client got none", 200)
    ]
