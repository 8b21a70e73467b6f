"""The API gateway's checks: credentials, the per-credential rate limit, one query at a time.

Signature date skew: with the real clock the ``X-Sdk-Date`` is checked against the wall
clock, like Huawei's gateway. With the manual clock a client may sign with either the
simulated time or its own wall clock, so the date is accepted when it is within the
allowed skew of either.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from exporter.errors import AuthError, SignatureError
from exporter.signing import DATE_FORMAT, MAX_CLOCK_SKEW_SECONDS, verify_request

DEFAULT_ACCESS_KEY = "demo-access-key"
DEFAULT_SECRET_KEY = "demo-secret-key"  # noqa: S105 - documented demo credential
DEFAULT_TOKEN = "demo-token"  # noqa: S105 - documented demo credential


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the simulator accepts: one account's AK/SK pair and its token."""

    access_key: str = DEFAULT_ACCESS_KEY
    secret_key: str = DEFAULT_SECRET_KEY
    token: str = DEFAULT_TOKEN
    account: str = "simulator"
    """The user both credentials belong to: one query at a time is per account."""

    def __repr__(self) -> str:
        return f"Credentials(access_key={self.access_key!r}, secret_key='***', token='***')"


def authenticate(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    credentials: Credentials,
    sim_now: float,
    wall_now: float,
    manual_clock: bool,
    skew_seconds: float = 0.0,
) -> str:
    """The caller's principal (``ak:...`` or ``token``), or AuthError.

    ``skew_seconds`` moves the gateway's clock (the clock-skew fault).
    """
    sim_now += skew_seconds
    wall_now += skew_seconds
    lowered = {name.lower(): value for name, value in headers.items()}
    token = lowered.get("x-auth-token")
    if token is not None:
        if token != credentials.token:
            raise AuthError("APIG.0307", "the X-Auth-Token is invalid")
        return "token"
    if not lowered.get("authorization", "").strip():
        raise AuthError("APIG.0301", "missing Authorization (SDK-HMAC-SHA256) or X-Auth-Token")
    now = wall_now
    if manual_clock:
        try:
            stamp = datetime.strptime(lowered.get("x-sdk-date", ""), DATE_FORMAT)
            signed_at = stamp.replace(tzinfo=UTC).timestamp()
            if abs(signed_at - sim_now) <= MAX_CLOCK_SKEW_SECONDS:
                now = sim_now
        except ValueError:
            pass
    try:
        access_key = verify_request(
            method,
            url,
            headers,
            body,
            {credentials.access_key: credentials.secret_key},
            datetime.fromtimestamp(now, tz=UTC),
        )
    except SignatureError as exc:
        code = "APIG.0303" if "minutes" in str(exc) else "APIG.0301"
        raise AuthError(code, f"signature rejected: {exc}") from exc
    return f"ak:{access_key}"


class RateLimiter:
    """A token bucket per principal: ``rate`` requests per second, burst ``rate``."""

    def __init__(self, rate: float, monotonic: Callable[[], float]) -> None:
        self.rate = rate
        self._monotonic = monotonic
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, principal: str) -> bool:
        """Take one token; False when the bucket is empty."""
        if self.rate <= 0:
            return True
        now = self._monotonic()
        with self._lock:
            tokens, last = self._buckets.get(principal, (self.rate, now))
            tokens = min(self.rate, tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[principal] = (tokens, now)
                return False
            self._buckets[principal] = (tokens - 1, now)
            return True


class InFlight:
    """At most one running query per account (the console's rule), whatever credential."""

    def __init__(self) -> None:
        self._running: set[str] = set()
        self._lock = threading.Lock()

    def acquire(self, principal: str) -> bool:
        """Mark a query running; False when one already is."""
        with self._lock:
            if principal in self._running:
                return False
            self._running.add(principal)
            return True

    def release(self, principal: str) -> None:
        """Mark the principal's query finished."""
        with self._lock:
            self._running.discard(principal)
