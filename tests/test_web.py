"""The /metrics path: rendered once per snapshot, gzip when asked, over a real server."""

from __future__ import annotations

import gzip
import http.client
import sys
import threading
from collections.abc import Iterable, Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exporter.snapshot import AccountSnapshot, SnapshotBoard
from exporter.web import ExpositionCache, Router, WebServer, accepts_gzip


class CountingCollector(Collector):
    """One gauge whose value is how many times it was collected."""

    def __init__(self, name: str = "demo_value", series: int = 200) -> None:
        self.name = name
        self.series = series
        self.collections = 0

    def collect(self) -> Iterable[GaugeMetricFamily]:
        self.collections += 1
        # Enough repeated lines that gzip has something to do.
        family = GaugeMetricFamily(self.name, "A value.", labels=["series"])
        for series in range(self.series):
            family.add_metric([f"s{series:03d}"], float(self.collections))
        yield family


def _publish(board: SnapshotBoard) -> None:
    board.publish(AccountSnapshot(account="main", up=True, poll_interval=60.0))


def _registry(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


@pytest.fixture
def cache() -> tuple[ExpositionCache, CountingCollector, SnapshotBoard]:
    collector = CountingCollector()
    board = SnapshotBoard(["main"])
    return ExpositionCache(_registry(collector), lambda: board.version), collector, board


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


def test_live_part_is_rendered_again_when_100_ms_old_and_the_polled_part_once() -> None:
    polled = CountingCollector()
    live = CollectorRegistry()
    pushes = Counter("demo_pushes", "Pushes received.", registry=live)
    now = [1000.0]
    exposition = ExpositionCache(
        _registry(polled), lambda: "one version", live, live_max_age=0.1, clock=lambda: now[0]
    )
    exposition.refresh()
    for count in range(1, 4):
        pushes.inc()
        assert f"\ndemo_pushes_total {count - 1}.0\n".encode() in exposition.body()
        now[0] += 0.15
        text = exposition.body()
        assert f"\ndemo_pushes_total {count}.0\n".encode() in text
        assert text.startswith(b"# HELP demo_value A value.")
        # One gzip stream: the polled part's, continued with the live part.
        assert gzip.decompress(exposition.body(gzipped=True)) == text
    assert polled.collections == 1


def test_a_new_poll_renders_the_polled_part_again_at_once(
    cache: tuple[ExpositionCache, CountingCollector, SnapshotBoard],
) -> None:
    exposition, collector, board = cache
    exposition.refresh()
    _publish(board)
    exposition.refresh()
    assert collector.collections == 2
    assert b'demo_value{series="s199"} 2.0' in gzip.decompress(exposition.body(gzipped=True))


def test_a_scrape_sends_the_last_exposition_while_another_renders_the_live_part() -> None:
    entered, release = threading.Event(), threading.Event()

    class SlowLive(Collector):
        def __init__(self) -> None:
            self.collections = 0

        def collect(self) -> Iterable[GaugeMetricFamily]:
            self.collections += 1
            if self.collections > 1:
                entered.set()
                release.wait(10)
            yield GaugeMetricFamily("demo_live", "Live.", value=self.collections)

    now = [0.0]
    exposition = ExpositionCache(
        _registry(CountingCollector()), lambda: 1, _registry(SlowLive()), clock=lambda: now[0]
    )
    first = exposition.body()
    now[0] = 1.0
    rendering = threading.Thread(target=exposition.body)
    rendering.start()
    try:
        assert entered.wait(10)
        assert exposition.body() is first  # not queued behind the rendering
    finally:
        release.set()
        rendering.join(10)
    assert b"\ndemo_live 2.0\n" in exposition.body()


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
