"""The /metrics path: rendered once per snapshot, gzip when asked, over a real server."""

from __future__ import annotations

import gzip
import http.client
import sys
from collections.abc import Iterable, Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exporter.snapshot import AccountSnapshot, SnapshotBoard
from exporter.web import ExpositionCache, Router, WebServer, accepts_gzip


class CountingCollector(Collector):
    """One gauge whose value is how many times it was collected."""

    def __init__(self) -> None:
        self.collections = 0

    def collect(self) -> Iterable[GaugeMetricFamily]:
        self.collections += 1
        # Enough repeated lines that gzip has something to do.
        family = GaugeMetricFamily("demo_value", "A value.", labels=["series"])
        for series in range(200):
            family.add_metric([f"s{series:03d}"], float(self.collections))
        yield family


def _publish(board: SnapshotBoard) -> None:
    board.publish(AccountSnapshot(account="main", up=True, poll_interval=60.0))


@pytest.fixture
def cache() -> tuple[ExpositionCache, CountingCollector, SnapshotBoard]:
    registry = CollectorRegistry()
    collector = CountingCollector()
    registry.register(collector)
    board = SnapshotBoard(["main"])
    return ExpositionCache(registry, board), collector, board


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, GZIP;q=0.8", True),
        ("*", True),
        ("gzip;q=0", False),
        ("*, gzip;q=0", False),
        ("gzip;q=0.0, *;q=1", False),
        ("gzip;q=nonsense", False),
        ("identity", False),
        ("deflate", False),
        ("", False),
        (None, False),
    ],
)
def test_accept_encoding_allows_gzip_unless_refused(header: str | None, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def test_exposition_renders_once_per_published_snapshot(
    cache: tuple[ExpositionCache, CountingCollector, SnapshotBoard],
) -> None:
    exposition, collector, board = cache
    exposition.refresh()
    assert collector.collections == 1
    first = exposition.body()
    for _ in range(5):
        assert exposition.body() is first
        exposition.body(gzipped=True)
    assert collector.collections == 1
    _publish(board)
    assert b'demo_value{series="s000"} 2.0' in exposition.body()
    assert collector.collections == 2


def test_refresh_prepares_the_gzip_form_that_decompresses_to_the_text(
    cache: tuple[ExpositionCache, CountingCollector, SnapshotBoard],
) -> None:
    exposition, collector, board = cache
    _publish(board)
    exposition.refresh()
    compressed = exposition.body(gzipped=True)
    assert gzip.decompress(compressed) == exposition.body()
    assert len(compressed) < len(exposition.body()) / 5
    assert exposition.body(gzipped=True) is compressed
    exposition.refresh()  # nothing changed: nothing rendered or compressed again
    assert exposition.body(gzipped=True) is compressed
    assert collector.collections == 1


@pytest.fixture
def served(
    cache: tuple[ExpositionCache, CountingCollector, SnapshotBoard],
) -> Iterator[tuple[http.client.HTTPConnection, ExpositionCache]]:
    exposition = cache[0]
    router = Router()
    router.add("/metrics", exposition.route)
    server = WebServer(router, "127.0.0.1", 0)
    server.start()
    connection = http.client.HTTPConnection(*server.address, timeout=10)
    yield connection, exposition
    connection.close()
    server.stop()


def test_metrics_is_gzip_for_a_client_that_asks_like_prometheus(
    served: tuple[http.client.HTTPConnection, ExpositionCache],
) -> None:
    connection, exposition = served
    connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
    response = connection.getresponse()
    body = response.read()
    assert response.status == 200
    assert response.getheader("Content-Encoding") == "gzip"
    assert response.getheader("Vary") == "Accept-Encoding"
    assert response.getheader("Content-Type", "").startswith("text/plain; version=")
    assert int(response.getheader("Content-Length", "0")) == len(body)
    assert gzip.decompress(body) == exposition.body()


def test_metrics_is_plain_text_for_a_client_that_does_not_ask(
    served: tuple[http.client.HTTPConnection, ExpositionCache],
) -> None:
    connection, exposition = served
    for headers in ({}, {"Accept-Encoding": "gzip;q=0, identity"}):
        connection.request("GET", "/metrics", headers=headers)  # same keep-alive connection
        response = connection.getresponse()
        body = response.read()
        assert response.getheader("Content-Encoding") is None
        assert response.getheader("Vary") == "Accept-Encoding"
        assert body == exposition.body()
        assert body.startswith(b"# HELP demo_value A value.")


def test_a_serving_web_server_lets_the_gil_change_hands_every_millisecond() -> None:
    # Scrapes then wait ~1 ms per turn behind a poll folding records, not 5 ms.
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    server = WebServer(Router(), "127.0.0.1", 0)
    try:
        assert sys.getswitchinterval() == 0.005  # constructing changes nothing
        server.start()
        assert sys.getswitchinterval() == pytest.approx(0.001)
    finally:
        server.stop()
        sys.setswitchinterval(before)
