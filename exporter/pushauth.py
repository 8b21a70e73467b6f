"""Who may push: Huawei's signature for reports; a token, basic auth or the signature for
send registrations; and whether a listen address lets anyone forge either.

Huawei cannot send a password, so status reports are authenticated by push signing
(``SDK-HMAC-SHA256``, the AK/SK set in the console). Send registrations come from the
operator's own application, which should not hold Huawei's push secret: it may send
``Authorization: Bearer <receiver.registration_token>`` or the web config's basic auth.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlencode

from exporter.config import ReceiverConfig
from exporter.errors import PushRejected, SignatureError
from exporter.signing import ALGORITHM, verify_request
from exporter.web import Request

BasicCheck = Callable[[str], bool]
"""True when an ``Authorization: Basic`` value names a user of the web config."""


class PushGate:
    """Checks each push request's credentials; PushRejected (401) when they fail."""

    def __init__(
        self,
        config: ReceiverConfig,
        *,
        clock: Callable[[], float],
        basic_auth: BasicCheck | None = None,
    ) -> None:
        self._secrets = {k.access_key: k.secret_key for k in config.signing_keys}
        token = config.registration_token
        self._token = token.value.encode() if token is not None else None
        self._basic = basic_auth
        self._clock = clock

    def report(self, request: Request) -> str | None:
        """The access key that signed a status report; None when signing is off."""
        return self._verify(request) if self._secrets else None

    def registration(self, request: Request) -> str | None:
        """The access key when the registration is signed; None when a token, basic auth
        or nothing (no credential configured: the web layer's basic auth applied) admits it."""
        if not self._secrets and self._token is None:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self._token is not None:
            if hmac.compare_digest(value.strip().encode(), self._token):
                return None
            raise PushRejected("unauthorized", "wrong registration token", 401)
        if scheme == "basic" and self._basic is not None and self._basic(header):
            return None
        if self._secrets and scheme == ALGORITHM.lower():
            return self._verify(request)
        raise PushRejected(
            "unauthorized",
            "send registrations need Authorization: Bearer <registration token>, basic auth"
            " or Huawei's push signature",
            401,
        )

    def _verify(self, request: Request) -> str:
        pairs = [(k, v) for k, values in request.query.items() for v in values]
        host = request.headers.get("host", "localhost")
        url = f"http://{host}{request.path}" + (f"?{urlencode(pairs)}" if pairs else "")
        now = datetime.fromtimestamp(self._clock(), UTC)
        headers = request.headers
        if not all(value.isascii() for value in headers.values()):
            headers = {name: _as_signed(value) for name, value in headers.items()}
        try:
            return verify_request(request.method, url, headers, request.body, self._secrets, now)
        except SignatureError as exc:
            raise PushRejected("signature", f"bad push signature: {exc}", 401) from exc


def _as_signed(value: str) -> str:
    """A header value as the signer saw it: the HTTP layer reads header bytes as
    Latin-1, while Huawei's signer signs the text and sends its UTF-8 bytes."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def is_loopback(host: str) -> bool:
    """True for addresses only this machine reaches (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a name: it may resolve to anything
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address.is_loopback


def unsigned_exposure(config: ReceiverConfig, host: str, basic_auth: bool) -> str | None:
    """What is wrong when anyone reaching ``host`` could forge pushes; None when nobody can.

    Reports are authenticated when signing keys are set, or when basic auth guards every
    path (then the report URL must carry the credentials). Registrations are then too.
    """
    if config.signing_keys or basic_auth or is_loopback(host):
        return None
    return (
        f"receiver: the push paths on {host or '0.0.0.0'} would accept reports and"
        " registrations from anyone: set receiver.signing.keys (and enable push signing in"
        " Huawei's console), or listen on 127.0.0.1 behind a proxy that authenticates, or"
        " set receiver.allow_unsigned: true to accept unsigned pushes"
    )
