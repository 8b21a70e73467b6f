"""Huawei API-gateway request signing, ``SDK-HMAC-SHA256`` (AK/SK).

Pure functions: the client signs with :func:`sign_request`, the simulator and the
status-report receiver check with :func:`verify_request`. The algorithm follows the
official SDK signer, including the trailing ``/`` added to the canonical URI, and its
``X-Sdk-Content-Sha256``: a body that is not JSON (a form-encoded single status report)
is signed as ``UNSIGNED-PAYLOAD``, the literal standing in for the body's SHA-256. Such a
signature proves who signed and when, not which body: within the 15-minute window a
captured request could be replayed with another body.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit

from exporter.errors import SignatureError

ALGORITHM = "SDK-HMAC-SHA256"
DATE_HEADER = "X-Sdk-Date"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_BODY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
CONTENT_HASH_HEADER = "X-Sdk-Content-Sha256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_HASHED_TYPES = ("application/json", "application/bson")
"""Content types whose bodies the official signer hashes; it signs others unsigned."""
MAX_CLOCK_SKEW_SECONDS = 15 * 60

_AUTH = re.compile(
    rf"^{ALGORITHM}\s+Access=(?P<access>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
    r"\s*Signature=(?P<signature>[0-9a-fA-F]+)\s*$"
)


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access key and its secret. The secret never appears in ``repr``."""

    access_key: str
    secret_key: str

    def __repr__(self) -> str:
        return f"Credentials(access_key={self.access_key!r}, secret_key='***')"


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_uri(path: str) -> str:
    """Each segment percent-encoded (RFC 3986), with a trailing ``/``."""
    segments = [_encode(unquote(segment)) for segment in path.split("/")]
    uri = "/".join(segments)
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(params: Iterable[tuple[str, str]], *, sort_decoded: bool = False) -> str:
    """Parameters sorted by name then value, strictly percent-encoded, joined by ``&``.

    The gateway's documentation sorts the encoded pairs; Huawei's Python SDK signer sorts
    them before encoding (``sort_decoded``). The orders differ only when a name holds a
    character that is encoded: ``aZ`` before ``a[``, but ``a%5B`` before ``aZ``.
    """
    if sort_decoded:
        encoded = [(_encode(name), _encode(value)) for name, value in sorted(params)]
    else:
        encoded = sorted((_encode(name), _encode(value)) for name, value in params)
    return "&".join(f"{name}={value}" for name, value in encoded)


def _query_pairs(query: str) -> list[tuple[str, str]]:
    pairs = []
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((unquote(name.replace("+", " ")), unquote(value.replace("+", " "))))
    return pairs


def signed_header_names(headers: Mapping[str, str]) -> list[str]:
    """Lower-cased, sorted names of the headers to sign (those without ``_``)."""
    return sorted({name.lower() for name in headers if "_" not in name})


def payload_hash(headers: Mapping[str, str], body: bytes) -> str:
    """The canonical request's last line, as the SDK signer and the gateway compute it.

    ``headers`` are lower-cased. An empty body hashes as empty; otherwise a declared
    ``X-Sdk-Content-Sha256`` stands in for the hash (``UNSIGNED-PAYLOAD``, or the hash
    itself, which must then match the body).
    """
    if not body:
        return EMPTY_BODY_SHA256
    actual = hashlib.sha256(body).hexdigest()
    declared = headers.get(CONTENT_HASH_HEADER.lower())
    if declared is None or declared == UNSIGNED_PAYLOAD:
        return declared or actual
    if not hmac.compare_digest(declared.strip().lower().encode(), actual.encode()):
        raise SignatureError(f"{CONTENT_HASH_HEADER} does not match the body")
    return declared.strip()


def string_to_sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    signed: list[str],
    *,
    query: str | None = None,
) -> str:
    """The text whose HMAC is the signature (``query``: the canonical query, if not the
    gateway's of the URL's)."""
    parts = urlsplit(url)
    lowered = {name.lower(): value for name, value in headers.items()}
    canonical_headers = "".join(f"{name}:{lowered.get(name, '').strip()}\n" for name in signed)
    canonical_request = "\n".join(
        [
            method.upper(),
            canonical_uri(parts.path or "/"),
            canonical_query(_query_pairs(parts.query)) if query is None else query,
            canonical_headers,
            ";".join(signed),
            payload_hash(lowered, body),
        ]
    )
    digest = hashlib.sha256(canonical_request.encode()).hexdigest()
    return f"{ALGORITHM}\n{lowered.get(DATE_HEADER.lower(), '')}\n{digest}"


def _signature(secret_key: str, text: str) -> str:
    return hmac.new(secret_key.encode(), text.encode(), hashlib.sha256).hexdigest()


def sign_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    credentials: Credentials,
    now: datetime,
) -> dict[str, str]:
    """Headers to send: the given ones plus ``Host``, ``X-Sdk-Date`` and ``Authorization``."""
    out = {name: value for name, value in headers.items() if name.lower() != "authorization"}
    if not any(name.lower() == "host" for name in out):
        out["Host"] = urlsplit(url).netloc
    if not any(name.lower() == DATE_HEADER.lower() for name in out):
        out[DATE_HEADER] = now.astimezone(UTC).strftime(DATE_FORMAT)
    content_type = next((v for k, v in out.items() if k.lower() == "content-type"), "")
    if content_type and not content_type.lower().startswith(_HASHED_TYPES):
        out.setdefault(CONTENT_HASH_HEADER, UNSIGNED_PAYLOAD)  # as the official signer does
    signed = signed_header_names(out)
    signature = _signature(credentials.secret_key, string_to_sign(method, url, out, body, signed))
    out["Authorization"] = (
        f"{ALGORITHM} Access={credentials.access_key}, "
        f"SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    return out


@dataclass(frozen=True, slots=True)
class Authorization:
    """The parts of an ``Authorization: SDK-HMAC-SHA256 ...`` header."""

    access_key: str
    signed_headers: list[str]
    signature: str


def parse_authorization(value: str) -> Authorization:
    """Split an Authorization header; SignatureError when it is not SDK-HMAC-SHA256."""
    if not value.strip():
        raise SignatureError(
            f"no Authorization header: the request must be signed ({ALGORITHM}, enable push"
            " signing in Huawei's console)"
        )
    match = _AUTH.match(value.strip())
    if match is None:
        raise SignatureError(f"Authorization header is not {ALGORITHM}")
    return Authorization(
        access_key=match.group("access"),
        signed_headers=match.group("signed").lower().split(";"),
        signature=match.group("signature").lower(),
    )


def verify_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Mapping[str, str],
    now: datetime,
    max_skew_seconds: float = MAX_CLOCK_SKEW_SECONDS,
) -> str:
    """Check a signed request; return its access key or raise SignatureError.

    ``secrets`` maps access keys to secret keys, so two key pairs can be active at once.
    ``url`` must carry the ``Host`` the client signed.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    auth = parse_authorization(lowered.get("authorization", ""))
    secret = secrets.get(auth.access_key)
    if secret is None:
        raise SignatureError("unknown access key")
    if "x-sdk-date" not in auth.signed_headers:
        raise SignatureError("X-Sdk-Date is not signed")
    try:
        stamp = datetime.strptime(lowered.get("x-sdk-date", ""), DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise SignatureError("X-Sdk-Date is missing or malformed") from exc
    if abs((now - stamp).total_seconds()) > max_skew_seconds:
        raise SignatureError("X-Sdk-Date is more than 15 minutes from the server clock")
    expected = _signature(secret, string_to_sign(method, url, lowered, body, auth.signed_headers))
    if hmac.compare_digest(expected, auth.signature):
        return auth.access_key
    pairs = _query_pairs(urlsplit(url).query)
    decoded_order = canonical_query(pairs, sort_decoded=True)
    if decoded_order != canonical_query(pairs):  # as the Python SDK signer sorts it
        text = string_to_sign(method, url, lowered, body, auth.signed_headers, query=decoded_order)
        if hmac.compare_digest(_signature(secret, text), auth.signature):
            return auth.access_key
    raise SignatureError("signature does not match")
