"""The API gateway's checks: credentials, the per-credential rate limit, one query at a time.

The sending API (``batchSendSms``) takes the application's key and secret, here the
simulator's AK/SK pair: signed as SDK-HMAC-SHA256 like the other APIs, or with Huawei's
``X-WSSE`` UsernameToken (``PasswordDigest`` = Base64 of the hex SHA-256 of Nonce +
Created + AppSecret), refused with Huawei's ``E0000xx`` codes.

Signature date skew: with the real clock the ``X-Sdk-Date`` is checked against the wall
clock, like Huawei's gateway. With the manual clock a client may sign with either the
simulated time or its own wall clock, so the date is accepted when it is within the
allowed skew of either.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from exporter.errors import AuthError, SignatureError
from exporter.signing import DATE_FORMAT, MAX_CLOCK_SKEW_SECONDS, verify_request

DEFAULT_ACCESS_KEY = "demo-access-key"
DEFAULT_SECRET_KEY = "demo-secret-key"  # noqa: S105 - documented demo credential
DEFAULT_TOKEN = "demo-token"  # noqa: S105 - documented demo credential
WSSE_AUTHORIZATION = 'WSSE realm="SDP",profile="UsernameToken",type="Appkey"'
WSSE_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_WSSE_FIELD = re.compile(r'(\w+)\s*=\s*"([^"]*)"')


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


def wsse_digest(nonce: str, created: str, app_secret: str) -> str:
    """Huawei's PasswordDigest: Base64 of the lower-hex SHA-256 of Nonce + Created + AppSecret."""
    hexed = hashlib.sha256((nonce + created + app_secret).encode()).hexdigest()
    return base64.b64encode(hexed.encode()).decode()


def wsse_headers(app_key: str, app_secret: str, created: datetime, nonce: str) -> dict[str, str]:
    """The ``Authorization`` and ``X-WSSE`` headers Huawei's sending samples build."""
    stamp = created.astimezone(UTC).strftime(WSSE_TIME_FORMAT)
    digest = wsse_digest(nonce, stamp, app_secret)
    token = (
        f'UsernameToken Username="{app_key}",PasswordDigest="{digest}",'
        f'Nonce="{nonce}",Created="{stamp}"'
    )
    return {"Authorization": WSSE_AUTHORIZATION, "X-WSSE": token}


def _fields(value: str) -> dict[str, str]:
    return {name.lower(): text for name, text in _WSSE_FIELD.findall(value)}


def authenticate_wsse(
    headers: Mapping[str, str],
    credentials: Credentials,
    sim_now: float,
    wall_now: float,
    manual_clock: bool,
) -> str:
    """The sending API's WSSE caller (``app:<key>``), or AuthError with Huawei's code.

    ``Created`` is accepted within 15 minutes of the wall clock, or of the simulated
    clock when it is manual (as for signatures).
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    authorization = lowered.get("authorization", "").strip()
    if not authorization:
        raise AuthError("E000001", "Authorization is not contained in the HTTP header.")
    scheme, _, rest = authorization.partition(" ")
    if scheme != "WSSE":
        raise AuthError("E000008", "Authorization: expected WSSE (or SDK-HMAC-SHA256).")
    params = _fields(rest)
    for name, missing, wrong, expected in (
        ("realm", "E000002", "E000004", "SDP"),
        ("profile", "E000003", "E000005", "UsernameToken"),
        ("type", "E000007", "E000006", "Appkey"),
    ):
        if name not in params:
            raise AuthError(missing, f"{name} is not contained in Authorization.")
        if params[name] != expected:
            raise AuthError(wrong, f"The value of {name} in Authorization must be {expected}.")
    token = lowered.get("x-wsse", "").strip()
    if not token:
        raise AuthError("E000020", "X-WSSE is not contained in the HTTP header.")
    if not token.startswith("UsernameToken"):
        raise AuthError("E000026", "UsernameToken is not contained in X-WSSE.")
    fields = _fields(token.removeprefix("UsernameToken"))
    for name, code in (
        ("username", "E000021"),
        ("nonce", "E000022"),
        ("created", "E000023"),
        ("passworddigest", "E000024"),
    ):
        if not fields.get(name):
            label = "PasswordDigest" if name == "passworddigest" else name.capitalize()
            raise AuthError(code, f"{label} is not contained in X-WSSE.")
    try:
        created = datetime.strptime(fields["created"], WSSE_TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise AuthError(
            "E000025", "The format of Created is incorrect: expected yyyy-MM-ddTHH:mm:ssZ."
        ) from None
    if not hmac.compare_digest(fields["username"], credentials.access_key):
        raise AuthError("E000102", "Invalid app_key.")
    expected = wsse_digest(fields["nonce"], fields["created"], credentials.secret_key)
    if not hmac.compare_digest(fields["passworddigest"], expected):
        raise AuthError("E000105", "Invalid PasswordDigest.")
    signed_at = created.timestamp()
    close = abs(signed_at - wall_now) <= MAX_CLOCK_SKEW_SECONDS
    if not close and not (manual_clock and abs(signed_at - sim_now) <= MAX_CLOCK_SKEW_SECONDS):
        raise AuthError("E000110", "Created is more than 15 minutes from the server clock.")
    return f"app:{credentials.access_key}"


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
