"""RFC 3339 timestamps on the wire, float epoch seconds inside."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+ -]\d{2}:\d{2})$"
)
"""A space for the offset's sign is a ``+``: sent unescaped in a query or a form body, a
``+`` arrives decoded as a space (``10:00:00+08:00`` → ``10:00:00 08:00``)."""
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_EARLIEST = datetime(1, 1, 1, tzinfo=UTC).timestamp()
_LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
MAX_DURATION_DAYS = 3650
"""Longer durations are typos; much longer ones overflow the clock and sleep calls."""


@lru_cache(maxsize=256)
def _second(text: str) -> int:
    return int(datetime.fromisoformat(text + "+00:00").timestamp())


def parse_rfc3339(text: str) -> float:
    """Epoch seconds of an RFC 3339 timestamp; ValueError when it is not one."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text[:40]!r}")
    if len(text) == 20 and text[19] == "Z" and text[10] == "T":
        # Huawei's form, 2026-11-26T10:00:00Z: reports of one second share a parse.
        return float(_second(text[:19]))
    if len(text) == 24 and text[23] == "Z" and text[19] == ".":
        # The contract's own form, 2026-11-26T10:00:00.250Z: one parse per second of text.
        return (_second(text[:19]) * 1000 + int(text[20:23])) / 1000
    frac = match.group(7)
    base = text[: match.start(7)] if frac else text[: match.start(8)]
    zone = match.group(8)
    if zone in ("Z", "z"):
        zone = "+00:00"
    elif zone[0] == " ":
        zone = "+" + zone[1:]
    stamp = datetime.fromisoformat(base.replace("t", "T").replace(" ", "T") + zone)
    seconds = stamp.timestamp()
    if not _EARLIEST <= seconds <= _LATEST:
        # 9999-12-31T23:00:00-05:00 is in year 10000 in UTC: no date can show it.
        raise ValueError(f"outside years 0001-9999 in UTC: {text[:40]!r}")
    if frac:
        # Round to whole milliseconds: the contract's resolution, and exact in floats.
        millis = round(float(frac) * 1000)
        return (round(seconds) * 1000 + millis) / 1000
    return float(round(seconds))


def format_rfc3339(seconds: float) -> str:
    """UTC RFC 3339 with millisecond precision, e.g. ``2026-11-26T10:00:00.250Z``."""
    millis = round(seconds * 1000)
    whole, frac = divmod(millis, 1000)
    stamp = datetime.fromtimestamp(whole, tz=UTC)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{frac:03d}Z"


def parse_http_date(text: str | None) -> float | None:
    """Epoch seconds of an HTTP ``Date`` header (``Mon, 07 Dec 2026 22:10:43 GMT``, or
    the obsolete forms RFC 9110 still accepts); None when missing or not a date."""
    if not text or len(text) > 64:
        return None
    try:
        stamp = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if stamp.tzinfo is None:  # "-0000": UTC with no claim about the local zone
        stamp = stamp.replace(tzinfo=UTC)
    try:
        return stamp.timestamp()
    except (OverflowError, ValueError):
        return None


def parse_duration(text: str) -> float:
    """Seconds of a Prometheus-style duration such as ``90s``, ``5m``, ``1h``, ``2d``."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"not a duration (use e.g. 30s, 5m, 1h): {text!r}")
    number, unit = match.groups()
    # Compared as integers: a number of hundreds of digits does not fit a float.
    if int(number) > MAX_DURATION_DAYS * 86400 * 1000:
        raise ValueError(f"too long, at most {MAX_DURATION_DAYS}d")
    seconds = int(number) * _UNIT_SECONDS[unit]
    if seconds > MAX_DURATION_DAYS * 86400:
        raise ValueError(f"too long, at most {MAX_DURATION_DAYS}d")
    return seconds
