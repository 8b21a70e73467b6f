"""The upstream adapter: errors translated, retries with backoff, budget and Retry-After.

Unit tests over ``httpx.MockTransport``: no sockets, no real sleeps (the sleep and the
random generator are injected).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import httpx
import pytest
from conftest import DEMO_SK, account_for

from exporter.budget import Budget, Budgeted
from exporter.client import DetailsClient, RetryPolicy
from exporter.errors import UpstreamMalformed, UpstreamRejected, UpstreamUnavailable
from exporter.records import DetailsQuery

PAGE = {"total": 0, "offset": 0, "limit": 10, "records": []}
QUERY = DetailsQuery(start_time=1764151200.0, end_time=1764154800.0)
ACCOUNT = account_for("http://upstream.test")

Answer = httpx.Response | Exception


class Script:
    """Answers requests from a list, then 200 with an empty page."""

    def __init__(self, *answers: Answer) -> None:
        self.answers: Iterator[Answer] = iter(answers)
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        answer = next(self.answers, httpx.Response(200, json=PAGE))
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def make_client() -> Iterator[Callable[..., tuple[DetailsClient, list[float]]]]:
    opened: list[httpx.Client] = []

    def make(
        script: Script, budget: int | None = None, **policy: float
    ) -> tuple[DetailsClient, list[float]]:
        slept: list[float] = []
        http = httpx.Client(transport=httpx.MockTransport(script))
        opened.append(http)
        client = DetailsClient(
            ACCOUNT,
            http,
            retry=RetryPolicy(**policy),  # type: ignore[arg-type]
            budget=None if budget is None else Budget(budget),
            sleep=slept.append,
            rng=random.Random(7),
        )
        return client, slept

    yield make
    for http in opened:
        http.close()


def test_5xx_burst_is_retried_with_full_jitter_backoff(make_client) -> None:
    script = Script(httpx.Response(502), httpx.Response(500), httpx.Response(504))
    client, slept = make_client(script, base_delay=1.0, max_delay=3.0)
    assert client.query(QUERY).total == 0
    assert script.requests == 4
    assert len(slept) == 3
    # Retry n waits uniform in [0, min(max_delay, base * 2**(n-1))].
    assert [0 <= s <= bound for s, bound in zip(slept, (1.0, 2.0, 3.0), strict=True)] == [True] * 3
    assert random.Random(7).uniform(0, 1.0) == slept[0]
    totals = client.stats.totals()
    assert totals.retries == 3
    assert totals.by_code == {
        ("send_details", "502"): 1,
        ("send_details", "500"): 1,
        ("send_details", "504"): 1,
        ("send_details", "200"): 1,
    }


def test_attempts_are_bounded_and_the_last_error_is_raised(make_client) -> None:
    script = Script(*[httpx.Response(503) for _ in range(10)])
    client, _slept = make_client(script, max_attempts=4)
    with pytest.raises(UpstreamUnavailable, match="HTTP 503"):
        client.query(QUERY)
    assert script.requests == 4
    assert client.stats.retries == 3


def test_429_waits_exactly_its_retry_after_and_is_counted_as_throttled(make_client) -> None:
    throttled = httpx.Response(
        429, headers={"Retry-After": "2.5"}, json={"error_code": "APIG.0308"}
    )
    client, slept = make_client(Script(throttled))
    client.query(QUERY)
    assert slept == [2.5]
    assert (client.stats.throttled, client.stats.retries) == (1, 1)


def test_429_without_retry_after_backs_off(make_client) -> None:
    client, slept = make_client(Script(httpx.Response(429), httpx.Response(429)), base_delay=0.5)
    client.query(QUERY)
    assert len(slept) == 2
    assert 0 <= slept[0] <= 0.5
    assert 0 <= slept[1] <= 1.0
    assert client.stats.throttled == 2


def test_a_retry_after_longer_than_the_cap_is_not_waited_for(make_client) -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "3600"}))
    client, slept = make_client(script, max_retry_after=30.0)
    with pytest.raises(UpstreamRejected) as caught:
        client.query(QUERY)
    assert caught.value.retry_after == 3600
    assert slept == []
    assert script.requests == 1


def test_503_retry_after_is_honoured(make_client) -> None:
    client, slept = make_client(Script(httpx.Response(503, headers={"Retry-After": "4"})))
    client.query(QUERY)
    assert slept == [4.0]


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (httpx.ConnectError("refused"), "ConnectError: refused"),
        (httpx.RemoteProtocolError("Server disconnected"), "RemoteProtocolError: Server disc"),
        (httpx.ReadTimeout("slow"), "timed out"),
    ],
)
def test_connection_failures_are_retried(make_client, failure: Exception, message: str) -> None:
    client, _slept = make_client(Script(failure, failure, failure, failure))
    with pytest.raises(UpstreamUnavailable, match=message):
        client.query(QUERY)
    assert client.stats.totals().by_code == {("send_details", "error"): 4}
    assert client.stats.retries == 3


def test_truncated_json_and_wrong_page_shape_are_retried(make_client) -> None:
    script = Script(
        httpx.Response(200, content=b'{"total": 3, "reco'),
        httpx.Response(200, json={**PAGE, "total": "3"}),
    )
    client, _slept = make_client(script)
    assert client.query(QUERY).total == 0
    assert client.stats.retries == 2


def test_malformed_bodies_fail_after_the_last_attempt(make_client) -> None:
    client, _ = make_client(Script(*[httpx.Response(200, content=b"{") for _ in range(4)]))
    with pytest.raises(UpstreamMalformed):
        client.query(QUERY)


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "APIG.0303"), (401, "APIG.0307"), (400, "MSGSMS.0400"), (404, "MSGSMS.0404")],
)
def test_rejections_that_a_retry_cannot_fix_are_not_retried(
    make_client, status: int, code: str
) -> None:
    script = Script(httpx.Response(status, json={"error_code": code, "error_msg": "no"}))
    client, slept = make_client(script)
    with pytest.raises(UpstreamRejected) as caught:
        client.query(QUERY)
    assert caught.value.error_code == code
    assert (script.requests, slept, client.stats.retries) == (1, [], 0)


def test_retries_stop_when_the_polls_request_budget_is_spent(make_client) -> None:
    script = Script(*[httpx.Response(503) for _ in range(20)])
    client, _ = make_client(script, budget=6, max_attempts=4)
    assert client.budget is not None
    paid = Budgeted(client, client.budget)  # as the engine queries: one budget for both
    with pytest.raises(UpstreamUnavailable):
        paid.query(QUERY)  # 4 attempts, 3 retries
    with pytest.raises(UpstreamUnavailable):
        paid.query(QUERY)  # 2 more requests reach the budget of 6
    assert script.requests == 6
    assert client.budget.used == 6
    client.budget.renew()  # the next poll has a fresh budget
    with pytest.raises(UpstreamUnavailable):
        paid.query(QUERY)
    assert script.requests == 10


def test_template_list_is_retried_too(make_client) -> None:
    listing = {"results": [{"template_id": "T1"}], "total": 1}
    script = Script(httpx.Response(500), httpx.Response(200, json=listing))
    client, _ = make_client(script)
    assert [t.template_id for t in client.list_templates()] == ["T1"]
    assert client.stats.totals().by_code == {("templates", "500"): 1, ("templates", "200"): 1}


def test_errors_never_carry_the_secret_key(make_client) -> None:
    failure = httpx.Response(401, json={"error_code": "APIG.0301", "error_msg": "bad signature"})
    client, _ = make_client(Script(failure))
    with pytest.raises(UpstreamRejected) as caught:
        client.query(QUERY)
    assert DEMO_SK not in repr(caught.value) + str(caught.value)
    assert DEMO_SK not in repr(ACCOUNT)


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0)
    rng = random.Random(1)
    assert max(policy.backoff(10, rng) for _ in range(200)) <= 5.0
