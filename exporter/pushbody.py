"""A push's body as its headers describe it: media type, charset and content coding.

Checked before a body is parsed, each with its own refusal: a media type the route does
not take, or a charset Python does not know, is 415 ``content_type``; a content coding
other than ``gzip`` or ``deflate`` is 415 ``content_encoding``; a compressed body that
does not decompress is 400 ``bad_encoding``, and one that grows past the body limit once
decompressed is 413 ``body_too_large`` (a small "zip bomb" never expands in memory).
A signature covers the bytes as sent, so it is checked before decompression.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from functools import lru_cache

from exporter.connection import MAX_BODY_BYTES
from exporter.errors import PushRejected
from exporter.routing import Request

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
"""zlib's window bits for each supported coding (gzip's header, or zlib's)."""
_PRINTABLE = bytes(range(0x20, 0x7F))
_TEXT_AS = {"application/json": ("text/plain",)}
"""Other media types a path of that format reads as its own."""


def charset_of(
    request: Request, media_type: str, elsewhere: Mapping[str, str] | None = None
) -> str:
    """The body's charset (``utf-8`` when none is given); 415 unless its Content-Type is
    ``media_type`` (parameters aside) and the charset is one Python decodes.
    ``elsewhere`` names the path that takes another media type, for the refusal to say.

    A body without a Content-Type is read as the path's format (RFC 9110 8.3 lets the
    recipient examine it), and JSON labelled ``text/plain`` as JSON (a client's default
    for a text body): either way it is parsed, so what is not that format is still a 400
    naming the problem, while a report Huawei pushes once is not lost to a label."""
    given, *parameters = request.headers.get("content-type", "").split(";")
    if given.strip().lower() not in (media_type, "", *_TEXT_AS.get(media_type, ())):
        shown = given.strip()[:60] or "missing"
        path = (elsewhere or {}).get(given.strip().lower())
        hint = f"; {shown} goes to {path}" if path else ""
        raise PushRejected(
            "content_type", f"Content-Type must be {media_type} (it is {shown}{hint})", 415
        )
    charset = "utf-8"
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower() or charset
    if not _ascii_compatible(charset[:40]):
        message = f"charset {charset[:40]!r} is not supported (use UTF-8, or GBK and the like)"
        raise PushRejected("content_type", message, 415)
    return charset


@lru_cache(maxsize=64)
def _ascii_compatible(charset: str) -> bool:
    """True for a text encoding that reads ASCII as ASCII (UTF-8, GBK, Latin-1...): the
    syntax of a form or of JSON is ASCII. Not UTF-16, UTF-7, IDNA, nor base64's kin."""
    try:
        return _PRINTABLE.decode(charset) == _PRINTABLE.decode("ascii")
    except (LookupError, UnicodeError, ValueError):
        return False


def decoded_body(request: Request) -> bytes:
    """The body without its content coding (``gzip``, ``deflate`` or none)."""
    coding = request.headers.get("content-encoding", "identity").strip().lower()
    if coding in ("identity", ""):
        return request.body
    wbits = _WBITS.get(coding)
    if wbits is None:
        raise PushRejected(
            "content_encoding",
            f"Content-Encoding {coding[:40]!r} is not supported: send gzip, deflate or none",
            415,
        )
    if coding == "deflate" and not _zlib_wrapped(request.body):
        wbits = -zlib.MAX_WBITS
    parts: list[bytes] = []
    rest, room = request.body, MAX_BODY_BYTES + 1
    while rest:  # a gzip body may hold several members, one after the other
        inflater = zlib.decompressobj(wbits)
        try:
            part = inflater.decompress(rest, room)
        except zlib.error as exc:
            raise PushRejected("bad_encoding", f"body is not valid {coding}: {exc}") from exc
        room -= len(part)
        if room <= 0:
            raise PushRejected(
                "body_too_large", f"body larger than {MAX_BODY_BYTES} bytes decompressed", 413
            )
        if not inflater.eof:
            raise PushRejected("bad_encoding", f"body is not valid {coding}: it is truncated")
        parts.append(part)
        rest = inflater.unused_data
    return b"".join(parts)


def _zlib_wrapped(body: bytes) -> bool:
    """True when a ``deflate`` body has zlib's header (RFC 9110); some clients send the
    raw deflate stream instead, as browsers accept too."""
    return len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0
