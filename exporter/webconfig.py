"""``--web.config.file``: TLS and basic auth in the Prometheus exporter-toolkit format.

    tls_server_config:
      cert_file: /etc/msgsms-exporter/tls.crt
      key_file: /etc/msgsms-exporter/tls.key
      min_version: TLS12            # TLS12 (default) or TLS13
    basic_auth_users:
      prometheus: $2b$12$...        # bcrypt hashes only

Parsed once into a frozen :class:`WebConfig`; every problem is reported with its
location. Passwords are checked with bcrypt (constant time); each verdict is remembered
by a salted digest, so scrapes do not pay bcrypt's cost every time.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt

from exporter.errors import ConfigError
from exporter.yamlfile import load_located, unknown_key

_TOP_KEYS = {"tls_server_config", "basic_auth_users"}
_TLS_KEYS = {"cert_file", "key_file", "min_version"}
_TOOLKIT_ONLY = {"http_server_config", "client_auth_type", "client_ca_file", "cipher_suites"}
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


@functools.cache
def _unknown_user_hash() -> bytes:
    """What an unknown user's password is checked against: made on first use, not at
    import (a bcrypt hash costs every process that imports this a tenth of a second)."""
    return bcrypt.hashpw(b"no such user", bcrypt.gensalt(rounds=10))


@dataclass(frozen=True, slots=True)
class TLSServerConfig:
    """The certificate and key the exporter serves with."""

    cert_file: str
    key_file: str
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2

    def context(self) -> ssl.SSLContext:
        """A server-side SSL context; ConfigError when the files do not load."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = self.min_version
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or "invalid"
            raise ConfigError(
                [f"tls_server_config: cannot load the certificate and key: {reason}"]
            ) from None
        return context


REMEMBERED_FAILURES = 1024
"""Wrong credentials remembered (the oldest forgotten first): a client that keeps sending
a stale password is refused without a bcrypt check each time, as exporter-toolkit does."""


class BasicAuth:
    """Checks ``Authorization: Basic`` credentials against bcrypt hashes.

    Each (user, password) pair is checked with bcrypt once: the verdict is remembered by
    a salted digest (every right one, the last :data:`REMEMBERED_FAILURES` wrong ones),
    so a scrape with the right password never waits for bcrypt again.
    """

    def __init__(self, users: dict[str, bytes]) -> None:
        self._users = dict(users)
        self._unknown = _unknown_user_hash()  # made now: the first check costs as the others
        self._pepper = os.urandom(16)
        self._verified: set[bytes] = set()
        self._failed: dict[bytes, None] = {}  # insertion-ordered: the oldest goes first
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BasicAuth(users={sorted(self._users)!r})"

    def _digest(self, user: str, password: str) -> bytes:
        return hmac.new(self._pepper, f"{user}\0{password}".encode(), hashlib.sha256).digest()

    def cached(self, user: str, password: str) -> bool | None:
        """The remembered verdict on these credentials, or None when they need bcrypt."""
        digest = self._digest(user, password)
        with self._lock:
            if digest in self._verified:
                return True
            return False if digest in self._failed else None

    def check(self, user: str, password: str) -> bool:
        """True when ``password`` is the user's; unknown users cost the same bcrypt check.

        Slow (a bcrypt hash, ~0.1 s of CPU at cost 10) unless the verdict is remembered:
        the web server runs it on its password verifier, one at a time.
        """
        verdict = self.cached(user, password)
        if verdict is not None:
            return verdict
        digest = self._digest(user, password)
        hashed = self._users.get(user, self._unknown)
        ok = bcrypt.checkpw(password.encode(), hashed) and user in self._users
        with self._lock:
            if ok:
                self._verified.add(digest)
            else:
                self._failed[digest] = None
                if len(self._failed) > REMEMBERED_FAILURES:
                    del self._failed[next(iter(self._failed))]
        return ok


@dataclass(frozen=True, slots=True)
class WebConfig:
    """What the exporter's own HTTP server requires of its clients."""

    tls: TLSServerConfig | None = None
    users: dict[str, bytes] = field(default_factory=dict, repr=False)

    def auth(self) -> BasicAuth | None:
        """The basic-auth checker, or None when no users are configured."""
        return BasicAuth(self.users) if self.users else None


def _why(path: str) -> str:
    """Why a certificate or key file cannot be read, as the OS would put it."""
    if not os.path.exists(path):
        return "No such file or directory"
    if os.path.isdir(path):
        return "Is a directory"
    return "Permission denied"


def _tls(raw: object, problems: list[str]) -> TLSServerConfig | None:
    if not isinstance(raw, dict):
        problems.append("tls_server_config: expected a mapping")
        return None
    for key in sorted(raw):
        if key in _TOOLKIT_ONLY:
            problems.append(f"tls_server_config.{key}: not supported by msgsms-exporter")
        elif key not in _TLS_KEYS:
            problems.append(f"tls_server_config.{key}: {unknown_key(key, _TLS_KEYS)}")
    files: dict[str, str] = {}
    for key in ("cert_file", "key_file"):
        value = raw.get(key)
        if not isinstance(value, str) or not value:
            problems.append(f"tls_server_config.{key}: is required (a file path)")
        elif not os.access(value, os.R_OK) or not Path(value).is_file():
            problems.append(f"tls_server_config.{key}: cannot read {value}: {_why(value)}")
        else:
            files[key] = value
    version = raw.get("min_version", "TLS12")
    if version not in _VERSIONS:
        problems.append("tls_server_config.min_version: expected TLS12 or TLS13")
        version = "TLS12"
    if len(files) < 2:
        return None
    return TLSServerConfig(files["cert_file"], files["key_file"], _VERSIONS[version])


def _users(raw: object, problems: list[str]) -> dict[str, bytes]:
    if not isinstance(raw, dict):
        problems.append("basic_auth_users: expected a mapping of user name to bcrypt hash")
        return {}
    users: dict[str, bytes] = {}
    for name, hashed in raw.items():
        where = f"basic_auth_users.{name}"
        if not isinstance(name, str) or not name or ":" in name:
            problems.append(f"{where}: a user name must be a non-empty string without ':'")
        elif not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            problems.append(f"{where}: expected a bcrypt hash ($2a$, $2b$ or $2y$)")
        else:
            try:
                bcrypt.checkpw(b"", hashed.encode())
            except ValueError:
                problems.append(f"{where}: not a valid bcrypt hash")
                continue
            users[name] = hashed.encode()
    return users


def parse_web_config(raw: object) -> WebConfig:
    """Parsed YAML → WebConfig, or ConfigError listing every problem."""
    problems: list[str] = []
    if raw is None:
        return WebConfig()
    if not isinstance(raw, dict):
        raise ConfigError(["web config: expected a mapping"])
    spec: dict[str, Any] = raw
    for key in sorted(spec):
        if key in _TOOLKIT_ONLY:
            problems.append(f"{key}: not supported by msgsms-exporter")
        elif key not in _TOP_KEYS:
            problems.append(f"{key}: {unknown_key(key, _TOP_KEYS)}")
    tls = _tls(spec["tls_server_config"], problems) if "tls_server_config" in spec else None
    users = _users(spec["basic_auth_users"], problems) if "basic_auth_users" in spec else {}
    if problems:
        raise ConfigError(problems)
    if tls is not None:
        tls.context()  # the certificate and key must load now, not at the first client
    return WebConfig(tls=tls, users=users)


def load_web_config(path: str | Path) -> WebConfig:
    """Read and parse a web config file; ConfigError on any problem."""
    return load_located(path, parse_web_config)
