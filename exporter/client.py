"""The upstream adapter: signed HTTP calls to the sending-details contract and template list.

Every httpx error is translated into the exporter's exception tree here, and every
request is counted in :class:`RequestStats`, whatever its outcome, with its answer's
``Date`` (the upstream's clock: :mod:`exporter.clockskew`).

A failed request is retried (:class:`RetryPolicy`) when a retry can help: connection
errors, timeouts, 5xx, 429, 408 and bodies that are not the contract's shape. The wait
is ``Retry-After`` when the upstream sends one (a longer one than the policy's cap is
not waited for: the request fails and the next poll tries again), otherwise exponential
backoff with full jitter. Retries stop at ``max_attempts`` per request and when the
poll's request budget (:class:`~exporter.budget.Budget`, shared with the engine) is spent;
each one is paid from it and counted in ``RequestStats.retries``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import structlog

from exporter import __version__
from exporter.budget import Budget
from exporter.config import AccountConfig
from exporter.errors import (
    UpstreamError,
    UpstreamMalformed,
    UpstreamRejected,
    UpstreamUnavailable,
)
from exporter.records import DETAILS_PATH, DetailsPage, DetailsQuery, parse_page
from exporter.signing import sign_request
from exporter.stats import RequestStats
from exporter.templates import (
    TEMPLATE_PAGE_LIMIT,
    TEMPLATES_PATH,
    SmsTemplate,
    parse_template_page,
)
from exporter.timestamps import parse_http_date

T = TypeVar("T")
USER_AGENT = f"msgsms-exporter/{__version__}"
RETRYABLE_STATUSES = frozenset({408, 429})

log = structlog.get_logger("msgsms_exporter.client")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failed upstream request is tried again."""

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 30.0

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(max_delay, base_delay * 2**(retry-1))]."""
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * 2 ** (retry - 1)))

    def delay(self, error: UpstreamError, retry: int, rng: random.Random) -> float | None:
        """Seconds to wait before retry number ``retry``, or None when not to retry."""
        if retry >= self.max_attempts or not _retryable(error):
            return None
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= self.max_retry_after else None
        return self.backoff(retry, rng)


def _retryable(error: UpstreamError) -> bool:
    if isinstance(error, UpstreamUnavailable | UpstreamMalformed):
        return True
    return error.status in RETRYABLE_STATUSES


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_text(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    return str(body.get("error_code", ""))[:40], str(body.get("error_msg", ""))[:200]


class DetailsClient:
    """Signed, counted calls to one account's sending-details and template-list endpoints."""

    def __init__(
        self,
        account: AccountConfig,
        http: httpx.Client,
        *,
        stats: RequestStats | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retry: RetryPolicy | None = None,
        budget: Budget | None = None,
        sleep: Callable[[float], object] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.account = account
        self.stats = stats or RequestStats()
        self.retry = retry or RetryPolicy()
        self.budget = budget
        self._http = http
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()

    def query(self, query: DetailsQuery) -> DetailsPage:
        """One page of sending details."""
        return self._retried("send_details", DETAILS_PATH, query.params(), parse_page)

    def list_templates(self) -> list[SmsTemplate]:
        """Every template of the account, following the real API's paging."""
        path = TEMPLATES_PATH.format(project_id=self.account.project_id)
        templates: list[SmsTemplate] = []
        offset = 0
        while True:
            params = {"limit": str(TEMPLATE_PAGE_LIMIT), "offset": str(offset)}
            page = self._retried("templates", path, params, parse_template_page)
            templates.extend(page.templates)
            offset += len(page.templates)
            if not page.templates or offset >= page.total:
                return templates

    def _headers(self, url: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        credentials = self.account.credentials
        if credentials is not None:
            return sign_request("GET", url, headers, b"", credentials, self._clock())
        if self.account.token is not None:
            headers["X-Auth-Token"] = self.account.token.value
        return headers

    @contextmanager
    def _counted(self, endpoint: str) -> Iterator[list[str]]:
        code = ["error"]
        started = time.perf_counter()
        try:
            yield code
        finally:
            self.stats.observe(endpoint, code[0], time.perf_counter() - started)

    def _retried(
        self, endpoint: str, path: str, params: dict[str, str], parse: Callable[[Any], T]
    ) -> T:
        """``parse`` of a GET's body, retried by the policy inside the poll's budget."""
        retry = 0
        while True:
            try:
                return parse(self._get(endpoint, path, params))
            except UpstreamError as error:
                retry += 1
                delay = self.retry.delay(error, retry, self._rng)
                if delay is None or (self.budget is not None and not self.budget.left):
                    raise
                if self.budget is not None:
                    self.budget.take()
                self.stats.count_retry()
                log.debug(
                    "retrying upstream request",
                    endpoint=endpoint,
                    retry=retry,
                    reason=error.reason,
                    status=error.status,
                    delay_seconds=round(delay, 3),
                )
                self._sleep(delay)

    def _get(self, endpoint: str, path: str, params: dict[str, str]) -> Any:
        url = f"{self.account.endpoint}{path}?{urlencode(params)}"
        with self._counted(endpoint) as code:
            try:
                response = self._http.get(url, headers=self._headers(url))
            except httpx.TimeoutException as exc:
                raise UpstreamUnavailable(f"{endpoint}: timed out") from exc
            except httpx.TransportError as exc:
                # The OS's or TLS's words: refused, no such host, certificate not trusted.
                # They name neither the URL nor a credential.
                reason = str(exc)[:200]
                named = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
                raise UpstreamUnavailable(f"{endpoint}: {named}") from exc
            except httpx.HTTPError as exc:
                raise UpstreamUnavailable(f"{endpoint}: {type(exc).__name__}") from exc
            code[0] = str(response.status_code)
            # Every answer (a refusal too) tells the upstream's clock.
            self.stats.observe_date(parse_http_date(response.headers.get("Date")))
            if response.status_code >= 500:
                raise UpstreamUnavailable(
                    f"{endpoint}: HTTP {response.status_code}",
                    status=response.status_code,
                    retry_after=_retry_after(response.headers.get("Retry-After")),
                )
            if response.status_code >= 400:
                error_code, error_msg = _error_text(response)
                raise UpstreamRejected(
                    f"{endpoint}: HTTP {response.status_code} {error_code} {error_msg}".strip(),
                    status=response.status_code,
                    error_code=error_code,
                    retry_after=_retry_after(response.headers.get("Retry-After")),
                )
            try:
                return response.json()
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise UpstreamMalformed(f"{endpoint}: body is not JSON") from exc


def build_http_client(account: AccountConfig, timeout: float) -> httpx.Client:
    """The httpx client for one account: TLS verification on unless configured off."""
    verify: bool | str = account.ca_file or account.tls_verify
    return httpx.Client(timeout=timeout, verify=verify, follow_redirects=False)
