"""The PostgreSQL store's URL: libpq's parameters, our defaults, and one of our own.

``prepared_statements=off`` (default ``on``) is for a connection pooler in transaction
mode that does not carry prepared statements from one transaction to the next
(PgBouncer before 1.21, or later without ``max_prepared_statements``). psycopg prepares
a statement on the server once it has run five times, and there each transaction may
run on another server connection: the prepared name is missing there (``prepared
statement "_pg3_0" does not exist``), or is another client's statement. Preparing saves
PostgreSQL about a quarter of its CPU per group commit of 50 reports (2.7 ms instead of
3.5, measured on loopback), so it stays on for a direct connection. The parameter is
taken out of the URL before libpq reads it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from psycopg.conninfo import conninfo_to_dict

PREPARED_STATEMENTS = "prepared_statements"
PREPARE_THRESHOLD = 5
"""Runs of a statement before psycopg prepares it (psycopg's default)."""
_SWITCH = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}
# A silent network loss fails a statement after 10 s instead of the kernel's 15 minutes.
_DEFAULTS = {
    "connect_timeout": "3",
    "tcp_user_timeout": "10000",
    "application_name": "msgsms-exporter",
}


def split_url(url: str) -> tuple[str, bool]:
    """The libpq URL and whether statements may be prepared; ValueError for a bad switch."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prepared = True
    for key, value in query:
        if key == PREPARED_STATEMENTS:
            if value.lower() not in _SWITCH:
                raise ValueError(f"{PREPARED_STATEMENTS}: expected on or off, not {value!r}")
            prepared = _SWITCH[value.lower()]
    libpq = [(k, v) for k, v in query if k != PREPARED_STATEMENTS]
    # %20 for a space, as libpq decodes it: urlencode's default '+' reached libpq as a
    # plus (options=-c%20statement_timeout%3D5000 became '-c+statement_timeout=5000').
    return urlunsplit(parts._replace(query=urlencode(libpq, quote_via=quote))), prepared


def connection_settings(url: str) -> dict[str, Any]:
    """psycopg's connection arguments: the URL's parameters (TLS passes through), our
    defaults for what it leaves out, and the prepare threshold (None: never prepare)."""
    libpq, prepared = split_url(url)
    params: dict[str, Any] = {k: str(v) for k, v in conninfo_to_dict(libpq).items()}
    for key, value in _DEFAULTS.items():
        params.setdefault(key, value)
    params["prepare_threshold"] = PREPARE_THRESHOLD if prepared else None
    return params


def unverified_host(url: str) -> str | None:
    """The host, when the URL reaches a remote server without verifying its certificate."""
    params = conninfo_to_dict(split_url(url)[0])
    host = str(params.get("host") or params.get("hostaddr") or "")
    local = not host or host.startswith("/") or host in ("localhost", "127.0.0.1", "::1")
    if local or params.get("sslmode") in ("verify-ca", "verify-full"):
        return None
    return host
