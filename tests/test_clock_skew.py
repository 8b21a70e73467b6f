"""The upstream's clock from its answers' ``Date``: minutes are settled on the upstream's
clock, never the exporter's, and the skew is exported.

The simulator runs as a real HTTP server on a manual clock; the exporter's clock is the
simulator's moved by a fixed offset, so every instant is known exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import structlog
from conftest import Simulator, config_for
from exposition import Samples, exported_window, value
from exposition import samples as parse_samples

from exporter.app import Exporter
from exporter.client import DetailsClient
from exporter.clockskew import MAX_SKEW_CORRECTION_SECONDS, ClockSkew
from exporter.config import AccountConfig
from exporter.errors import UpstreamRejected
from exporter.ranges import minute_floor
from exporter.records import DetailsQuery
from exporter.stats import RequestStats
from exporter.timestamps import parse_http_date

SETTLE = 180.0  # the default settle_delay
AHEAD = 840.0  # within the 15 minutes SDK-HMAC-SHA256 signing tolerates


def _exporter(
    sim: Simulator, offset: Callable[[], float], request: pytest.FixtureRequest, **kwargs: object
) -> Exporter:
    """An exporter of the simulator whose clock is the simulator's plus ``offset()``."""
    config = config_for(sim.url, windows=(3600.0, 900.0))
    exporter = Exporter(config, clock=lambda: sim.now() + offset(), **kwargs)  # type: ignore[arg-type]
    request.addfinalizer(exporter.stop)  # before the test ends, so no socket outlives it
    return exporter


def _expected(truth: dict) -> dict:
    return {
        tid: {k: t[k] for k in ("success", "failed", "sending", "status_codes")}
        for tid, t in truth.items()
    }


def _check_windows(sim: Simulator, s: Samples) -> int:
    """Every window shown complete is settled on the simulator's clock and equals its
    truth; how many were complete."""
    settled_end = minute_floor(sim.now() - SETTLE)
    complete = 0
    for window in ("1h", "15m"):
        start = value(s, "msgsms_window_start_timestamp_seconds", window=window)
        end = value(s, "msgsms_window_end_timestamp_seconds", window=window)
        if value(s, "msgsms_window_complete", window=window) != 1:
            continue
        assert end <= settled_end, f"{window} complete up to {end}, settled only to {settled_end}"
        assert exported_window(s, window) == _expected(sim.truth(start, end)), window
        complete += 1
    return complete


def test_an_exporter_clock_ahead_of_the_upstream_never_shows_an_unsettled_window_complete(
    manual_simulator: Simulator, request: pytest.FixtureRequest
) -> None:
    sim = manual_simulator
    exporter = _exporter(sim, lambda: AHEAD, request)
    complete = 0
    for _ in range(40):
        sim.advance(60)
        assert exporter.poll_once()
        s = parse_samples(exporter.exposition_text())
        complete += _check_windows(sim, s)
        assert value(s, "msgsms_upstream_clock_skew_seconds", account="sim") == AHEAD
        # The window ends settle_delay before the upstream's now, not the exporter's.
        end = value(s, "msgsms_window_end_timestamp_seconds", window="1h")
        assert end == minute_floor(sim.now() - SETTLE)
        assert value(s, "msgsms_data_lag_seconds", account="sim") == SETTLE
    assert complete == 80  # both windows, at every poll: the skew costs no completeness


def test_an_exporter_clock_behind_the_upstream_is_not_moved_forward(
    manual_simulator: Simulator, request: pytest.FixtureRequest
) -> None:
    sim = manual_simulator
    exporter = _exporter(sim, lambda: -300.0, request)
    for _ in range(10):
        sim.advance(60)
        assert exporter.poll_once()
        s = parse_samples(exporter.exposition_text())
        assert _check_windows(sim, s) == 2
        assert value(s, "msgsms_upstream_clock_skew_seconds", account="sim") == -300.0
        end = value(s, "msgsms_window_end_timestamp_seconds", window="1h")
        assert end == minute_floor(sim.now() - 300 - SETTLE)


def test_a_clock_that_jumps_ahead_between_polls_marks_that_poll_incomplete_then_recovers(
    manual_simulator: Simulator, request: pytest.FixtureRequest
) -> None:
    sim = manual_simulator
    offset = [0.0]
    exporter = _exporter(sim, lambda: offset[0], request)
    shown: list[float] = []
    for poll in range(30):
        if poll == 3:
            # Too small a jump to list the templates again (every 10 minutes), so the
            # poll starts with the skew measured before it.
            offset[0] = 300.0
        sim.advance(60)
        assert exporter.poll_once()
        s = parse_samples(exporter.exposition_text())
        complete = _check_windows(sim, s)
        shown.append(value(s, "msgsms_upstream_clock_skew_seconds", account="sim"))
        assert complete == (0 if poll == 3 else 2)  # read before they settled: not right
    assert shown == [0.0] * 3 + [300.0] * 27


def test_an_answer_given_to_the_details_view_between_polls_is_not_taken_for_skew(
    manual_simulator: Simulator, request: pytest.FixtureRequest
) -> None:
    sim = manual_simulator
    exporter = _exporter(sim, lambda: 0.0, request)
    for _ in range(3):
        sim.advance(60)
        assert exporter.poll_once()
        assert exporter.details.run({"last": "1h"}).status == 200  # dated a minute early
        sim.advance(60)
        assert exporter.poll_once()
        s = parse_samples(exporter.exposition_text())
        assert value(s, "msgsms_upstream_clock_skew_seconds", account="sim") == 0
        end = value(s, "msgsms_window_end_timestamp_seconds", window="1h")
        assert end == minute_floor(sim.now() - SETTLE)
        assert _check_windows(sim, s) == 2


class _DateRewriter(httpx.BaseTransport):
    """Loopback HTTP whose answers carry ``date`` as their ``Date`` (None: no ``Date``)."""

    def __init__(self, date: str | None) -> None:
        self._inner = httpx.HTTPTransport()
        self._date = date

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self._inner.handle_request(request)
        headers = [(k, v) for k, v in answer.headers.raw if k.lower() != b"date"]
        if self._date is not None:
            headers.append((b"Date", self._date.encode()))
        return httpx.Response(
            answer.status_code, headers=headers, stream=answer.stream, extensions=answer.extensions
        )

    def close(self) -> None:
        self._inner.close()


def _rewriting(date: str | None) -> Callable[[AccountConfig, float], httpx.Client]:
    def build(account: AccountConfig, timeout: float) -> httpx.Client:
        return httpx.Client(timeout=timeout, transport=_DateRewriter(date))

    return build


@pytest.mark.parametrize("date", [None, "", "yesterday", "Mon, 32 Dec 2026 25:61:00 GMT"])
def test_an_answer_without_a_readable_date_changes_nothing(
    manual_simulator: Simulator, request: pytest.FixtureRequest, date: str | None
) -> None:
    sim = manual_simulator
    exporter = _exporter(sim, lambda: 0.0, request, http_factory=_rewriting(date))
    for _ in range(3):
        sim.advance(60)
        assert exporter.poll_once()
        s = parse_samples(exporter.exposition_text())
        assert _check_windows(sim, s) == 2
        assert "msgsms_upstream_clock_skew_seconds" not in s
        end = value(s, "msgsms_window_end_timestamp_seconds", window="1h")
        assert end == minute_floor(sim.now() - SETTLE)


def test_an_absurd_date_in_the_past_delays_the_windows_and_marks_them_incomplete(
    manual_simulator: Simulator, request: pytest.FixtureRequest
) -> None:
    sim = manual_simulator
    epoch = "Thu, 01 Jan 1970 00:00:00 GMT"
    exporter = _exporter(sim, lambda: 0.0, request, http_factory=_rewriting(epoch))
    for _ in range(3):
        sim.advance(60)
        assert exporter.poll_once()  # polls go on
        s = parse_samples(exporter.exposition_text())
        assert value(s, "msgsms_up", account="sim") == 1
        assert value(s, "msgsms_upstream_clock_skew_seconds", account="sim") == sim.now()
        assert value(s, "msgsms_window_complete", window="1h") == 0
        end = value(s, "msgsms_window_end_timestamp_seconds", window="1h")
        assert end == minute_floor(sim.now() - MAX_SKEW_CORRECTION_SECONDS - SETTLE)


def test_an_absurd_date_in_the_future_moves_nothing_forward(
    manual_simulator: Simulator, request: pytest.FixtureRequest
) -> None:
    sim = manual_simulator
    late = "Fri, 31 Dec 9999 23:59:59 GMT"
    exporter = _exporter(sim, lambda: 0.0, request, http_factory=_rewriting(late))
    for _ in range(3):
        sim.advance(60)
        assert exporter.poll_once()
        s = parse_samples(exporter.exposition_text())
        assert _check_windows(sim, s) == 2
        end = value(s, "msgsms_window_end_timestamp_seconds", window="1h")
        assert end == minute_floor(sim.now() - SETTLE)


def test_a_large_skew_is_logged_once_when_it_appears(
    manual_simulator: Simulator, request: pytest.FixtureRequest
) -> None:
    sim = manual_simulator
    exporter = _exporter(sim, lambda: AHEAD, request)
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            sim.advance(60)
            assert exporter.poll_once()
    warnings = [e for e in logs if e["event"] == "upstream clock differs"]
    assert warnings == [
        {
            "event": "upstream clock differs",
            "log_level": "warning",
            "account": "sim",
            "exporter_ahead_seconds": AHEAD,
            "window_moved_back_seconds": AHEAD,
        }
    ]


def test_a_gateway_clock_off_by_more_than_signing_tolerates_shows_in_the_skew_gauge(
    manual_simulator: Simulator, request: pytest.FixtureRequest
) -> None:
    sim = manual_simulator
    exporter = _exporter(sim, lambda: 0.0, request)
    sim.advance(60)
    assert exporter.poll_once()
    sim.post("/-/faults", {"rules": [{"fault": "clock_skew", "seconds": 1800}]})
    sim.advance(60)
    assert not exporter.poll_once()  # APIG.0303: the signature's date is 30 minutes off
    s = parse_samples(exporter.exposition_text())
    assert value(s, "msgsms_up", account="sim") == 0
    assert value(s, "msgsms_upstream_clock_skew_seconds", account="sim") == -1800
    sim.http.delete(f"{sim.url}/-/faults").raise_for_status()
    sim.advance(60)
    assert exporter.poll_once()  # behind: nothing moved forward, and measured again
    s = parse_samples(exporter.exposition_text())
    assert _check_windows(sim, s) == 2
    assert value(s, "msgsms_upstream_clock_skew_seconds", account="sim") == 0


def test_the_simulators_date_is_its_own_clock(manual_simulator: Simulator) -> None:
    sim = manual_simulator
    sim.advance(90.75)
    answer = httpx.get(f"{sim.url}/-/healthy")
    assert parse_http_date(answer.headers["Date"]) == int(sim.now())
    refused = httpx.get(f"{sim.url}/api/v1/send-details")  # unsigned: a gateway refusal
    assert refused.status_code == 401
    assert parse_http_date(refused.headers["Date"]) == int(sim.now())


# -- pure parts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("Mon, 07 Dec 2026 22:10:43 GMT", 1796681443.0),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 784111777.0),  # RFC 850, still to be accepted
        ("Sun Nov  6 08:49:37 1994", 784111777.0),  # asctime
        ("Mon, 07 Dec 2026 22:10:43 +0800", 1796681443.0 - 8 * 3600),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
        (None, None),
        ("", None),
        ("garbage", None),
        ("Mon, 32 Dec 2026 22:10:43 GMT", None),
        ("Mon, 07 Dec 99999 22:10:43 GMT", None),
        ("x" * 1000, None),
    ],
)
def test_http_dates_parse_to_epoch_seconds_or_none(text: str | None, seconds: float | None) -> None:
    assert parse_http_date(text) == seconds


@pytest.mark.parametrize(
    ("skew", "correction", "uncorrected"),
    [
        (0.0, 0.0, False),
        (1.9, 0.0, False),  # Date's whole seconds and the flight: no skew
        (2.0, 2.0, False),
        (840.0, 840.0, False),
        (900.0, 900.0, False),
        (901.0, 900.0, True),
        (-300.0, 0.0, False),  # behind: windows lag, never moved forward
        (-1e9, 0.0, False),
    ],
)
def test_only_an_exporter_ahead_is_corrected_and_at_most_by_the_signing_tolerance(
    skew: float, correction: float, uncorrected: bool
) -> None:
    assert ClockSkew(skew).correction == correction
    assert ClockSkew(skew).uncorrected is uncorrected


def _count_and_date(client: DetailsClient) -> tuple[int, float] | None:
    newest = client.stats.newest_date()
    return None if newest is None else (newest.count, newest.date)


def test_the_skew_is_taken_as_the_answer_arrived_not_after_the_work_that_followed() -> None:
    # A busy minute's fold takes a second or more after its last page arrived: read then,
    # the exporter's clock made an upstream whose clock agrees look 2 s or more behind,
    # and its newest minute was taken for unsettled.
    now = [1796681443.4]
    stats = RequestStats(clock=lambda: now[0])
    stats.observe_date(1796681443.0)  # Date: whole seconds, written as the answer left
    now[0] += 3.0  # the poll works on
    newest = stats.newest_date()
    assert newest is not None
    assert ClockSkew(newest.received - newest.date).correction == 0.0
    assert newest.received - newest.date == pytest.approx(0.4)


def test_every_answer_of_the_client_notes_its_date() -> None:
    dates = iter(["Mon, 07 Dec 2026 22:10:43 GMT", "nonsense", "Mon, 07 Dec 2026 22:10:44 GMT"])

    def answer(request: httpx.Request) -> httpx.Response:
        body = {"results": [], "total": 0} if "templates" in request.url.path else {}
        return httpx.Response(400 if not body else 200, json=body, headers={"Date": next(dates)})

    account = config_for("http://upstream.test").accounts[0]
    with httpx.Client(transport=httpx.MockTransport(answer)) as http:
        client = DetailsClient(account, http)
        client.list_templates()
        assert _count_and_date(client) == (1, 1796681443.0)
        with pytest.raises(UpstreamRejected, match="HTTP 400"):
            client.query(DetailsQuery(0, 60))
        assert _count_and_date(client) == (1, 1796681443.0)  # no date: the last one stays
        with pytest.raises(UpstreamRejected, match="HTTP 400"):
            client.query(DetailsQuery(0, 60))
        assert _count_and_date(client) == (2, 1796681444.0)  # a refusal's counts too
