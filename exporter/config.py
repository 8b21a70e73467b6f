"""Configuration: YAML parsed once into frozen objects, every problem reported together.

Secrets are named by environment variable or file path, never written inline, and are
resolved here so the rest of the exporter only sees :class:`Secret` values.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import yaml

from exporter.errors import ConfigError
from exporter.signing import Credentials
from exporter.timestamps import parse_duration

T = TypeVar("T")
RESOLUTION_SECONDS = 60
"""Sending time is tallied per minute; windows and their ends fall on whole minutes."""


class EngineKind(StrEnum):
    """How an account's details are read each poll."""

    INCREMENTAL = "incremental"
    FULL_SCAN = "full_scan"


class AccountSource(StrEnum):
    """Where an account's details come from: its endpoint, or the receiver's push store."""

    API = "api"
    PUSH = "push"


class Synchronous(StrEnum):
    """SQLite's ``synchronous`` setting for the push store."""

    NORMAL = "normal"
    FULL = "full"


class Attribution(StrEnum):
    """Where a status report's template comes from (reports carry none)."""

    NONE = "none"
    EXTEND = "extend"
    EXTEND_PAIR = "extend_pair"
    EXTEND_JSON = "extend_json"


ENGINES = tuple(EngineKind)
ACCOUNT_PLACEHOLDER = "{account}"
EXPORTER_PATHS = frozenset(
    {"/", "/metrics", "/details", "/-/healthy", "/-/ready", "/-/reload", "/api/v1/send-details"}
)
"""The exporter's own routes: no receiver path may take one, nor anything under ``/-/``."""
DEFAULT_MAX_TEMPLATES = 300
"""In a receiver path, stands for the name of each account with ``source: push``."""
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret value; never shown by ``repr`` or ``str``."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return "***"


@dataclass(frozen=True, slots=True)
class TemplateSelection:
    """Which templates an account exports: an explicit list, or discovery with patterns."""

    ids: tuple[str, ...] = ()
    discover: bool = False
    include: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()

    def selects(self, template_id: str, template_name: str = "") -> bool:
        """True when a discovered template passes the include/exclude patterns."""
        if self.include and not any(
            p.search(template_id) or p.search(template_name) for p in self.include
        ):
            return False
        return not any(p.search(template_id) or p.search(template_name) for p in self.exclude)


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """One Message & SMS account (project) to poll."""

    name: str
    endpoint: str
    project_id: str
    templates: TemplateSelection
    access_key: str | None = None
    secret_key: Secret | None = None
    token: Secret | None = None
    tls_verify: bool = True
    ca_file: str | None = None
    source: AccountSource = AccountSource.API

    @property
    def credentials(self) -> Credentials | None:
        """AK/SK for request signing, when configured."""
        if self.access_key is None or self.secret_key is None:
            return None
        return Credentials(self.access_key, self.secret_key.value)


def push_account(name: str, templates: TemplateSelection | None = None) -> AccountConfig:
    """An account fed only by the receiver's push store: no endpoint, project or keys.

    ``templates`` defaults to discovering every template the pushes name.
    """
    return AccountConfig(
        name=name,
        endpoint="",
        project_id="",
        templates=templates or TemplateSelection(discover=True),
        source=AccountSource.PUSH,
    )


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    """The status-report receiver: push paths, its store, signing and attribution.

    The store is an SQLite file (``store_path``) or a PostgreSQL database that several
    exporters may share (``store_url``, a libpq URL; secret because of its password).
    """

    store_path: str
    store_url: Secret | None = None
    single_path: str = "/push/status-report"
    batch_path: str = "/push/status-reports"
    sends_path: str = "/push/sends"
    retention: float = 73 * 3600.0
    synchronous: Synchronous = Synchronous.NORMAL
    signing_keys: tuple[Credentials, ...] = ()
    key_accounts: tuple[tuple[str, str], ...] = ()
    """(access key, push account) for keys bound to one account: they route its pushes."""
    attribution: Attribution = Attribution.NONE
    attribution_key: str = ""
    details_api: bool = False
    allow_unsigned: bool = False
    """Serve unauthenticated push paths on a non-loopback address (refused otherwise)."""
    registration_token: Secret | None = None
    """Bearer token that authorizes send registrations (besides basic auth and signing)."""
    max_templates: int = DEFAULT_MAX_TEMPLATES
    """Distinct templates pushes may add; beyond, they count under ``template="other"``."""


@dataclass(frozen=True, slots=True)
class Config:
    """The whole exporter configuration."""

    accounts: tuple[AccountConfig, ...]
    receiver: ReceiverConfig | None = None
    poll_interval: float = 60.0
    windows: tuple[float, ...] = (3600.0,)
    request_timeout: float = 10.0
    page_size: int = 100
    top_status_codes: int = 10
    max_query_span: float = 86400.0
    request_budget: int = 2000
    review_hold_horizon: float = 900.0
    max_staleness: int = 3
    settle_delay: float = 180.0
    engine: EngineKind = EngineKind.INCREMENTAL

    @property
    def window(self) -> float:
        """The longest window: how far back the poller must read."""
        return max(self.windows)

    @property
    def push_accounts(self) -> tuple[str, ...]:
        """The names of the accounts fed by the receiver, in configuration order."""
        return tuple(a.name for a in self.accounts if a.source == AccountSource.PUSH)


class _Reader:
    """Walks the raw YAML, collecting located problems instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def mapping(self, raw: object, where: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            if where:
                self.problem(where, "expected a mapping")
            else:
                self.problem("top level", "expected a mapping of settings" + _got(raw))
            return {}
        for key in raw:
            if key not in allowed:
                self.problem(f"{where}.{key}" if where else str(key), unknown_key(key, allowed))
        return raw

    def expand(self, value: object, where: str, encode: Callable[[str], str] = str) -> object:
        if not isinstance(value, str):
            return value

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.env:
                self.problem(where, f"environment variable {name} is not set")
                return ""
            return encode(self.env[name])

        return _ENV_REF.sub(substitute, value)

    def get(
        self,
        raw: Mapping[str, Any],
        key: str,
        where: str,
        convert: Callable[[object], T],
        default: T | None = None,
        *,
        required: bool = False,
    ) -> T | None:
        path = f"{where}.{key}" if where else key
        if key not in raw or raw[key] is None:
            if required:
                self.problem(path, "is required")
            return default
        before = len(self.problems)
        value = self.expand(raw[key], path)
        if len(self.problems) > before:
            return default
        try:
            return convert(value)
        except (TypeError, ValueError) as exc:
            self.problem(path, str(exc))
            return default

    def secret(self, raw: object, where: str) -> Secret | None:
        spec = self.mapping(raw, where, {"env", "file"})
        if not spec:
            return None
        if len(spec) != 1:
            self.problem(where, "give exactly one of 'env' or 'file'")
            return None
        key = "env" if "env" in spec else "file"
        name = spec[key]
        if not isinstance(name, str) or not name:
            expected = "an environment variable name" if key == "env" else "a file path"
            self.problem(f"{where}.{key}", f"expected {expected}")
            return None
        if key == "env":
            if name not in self.env:
                self.problem(f"{where}.env", f"environment variable {name} is not set")
                return None
            return Secret(self.env[name])
        try:
            return Secret(Path(name).read_text(encoding="utf-8").strip())
        except OSError as exc:
            self.problem(f"{where}.file", f"cannot read {name}: {exc.strerror}")
        except UnicodeDecodeError:  # the message would quote the secret's bytes
            self.problem(f"{where}.file", f"{name} is not UTF-8 text")
        return None


def _got(raw: object) -> str:
    """What the top level of a file holds instead of a mapping."""
    if raw is None:
        return ", the file is empty"
    return f", got a {'list' if isinstance(raw, list) else 'single value'}"


def unknown_key(key: object, allowed: set[str]) -> str:
    """``unknown key`` with the closest allowed spelling, if one is close."""
    close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
    return f"unknown key, did you mean {close[0]!r}?" if close else "unknown key"


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def _duration(value: object) -> float:
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


def _duration_or_zero(value: object) -> float:
    if value in (0, "0", "0s"):
        return 0.0
    return _duration(value)


def _engine(value: object) -> EngineKind:
    if value not in ENGINES:
        raise ValueError(f"expected one of {', '.join(ENGINES)}")
    return EngineKind(str(value))


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _positive_int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError("expected a positive integer")
    return value


def _endpoint(value: object) -> str:
    text = _text(value)
    if not re.match(r"^https?://[^/\s]+", text):
        raise ValueError("expected an http:// or https:// URL")
    return text.rstrip("/")


def _patterns(value: object) -> tuple[re.Pattern[str], ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of regular expressions")
    try:
        return tuple(re.compile(v) for v in value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from exc


def _templates(reader: _Reader, raw: object, where: str) -> TemplateSelection:
    if isinstance(raw, list):
        ids = []
        for index, item in enumerate(raw):
            if isinstance(item, str) and item:
                ids.append(item)
            else:
                reader.problem(f"{where}[{index}]", "expected a template id string")
        return TemplateSelection(ids=tuple(ids))
    spec = reader.mapping(raw, where, {"discover", "include", "exclude"})
    discover = reader.get(spec, "discover", where, _boolean, False)
    if spec and not discover:
        reader.problem(f"{where}.discover", "set to true, or list template ids instead")
    return TemplateSelection(
        discover=bool(discover),
        include=reader.get(spec, "include", where, _patterns, ()) or (),
        exclude=reader.get(spec, "exclude", where, _patterns, ()) or (),
    )


def _windows(reader: _Reader, spec: dict[str, Any]) -> tuple[float, ...]:
    if "window" in spec and "windows" in spec:
        reader.problem("windows", "give either 'window' or 'windows', not both")
        return ()
    if "windows" not in spec:
        single = reader.get(spec, "window", "", _duration)
        return () if single is None else (single,)
    raw = spec["windows"]
    if not isinstance(raw, list) or not raw:
        reader.problem("windows", "expected a non-empty list of durations")
        return ()
    out = []
    for index, item in enumerate(raw):
        try:
            out.append(_duration(item))
        except ValueError as exc:
            reader.problem(f"windows[{index}]", str(exc))
    if len(set(out)) != len(out):
        reader.problem("windows", "lists a window twice")
    return tuple(sorted(set(out)))


_ACCOUNT_KEYS = {"name", "source", "endpoint", "project_id", "credentials", "templates", "tls"}


def _account(reader: _Reader, raw: object, where: str) -> AccountConfig | None:
    spec = reader.mapping(raw, where, _ACCOUNT_KEYS)
    if not spec:
        return None
    name = reader.get(spec, "name", where, _text, "default") or "default"
    if not _NAME.match(name):
        reader.problem(f"{where}.name", "use letters, digits, '_', '.' or '-' (at most 64)")
    source = reader.get(spec, "source", where, _text, "api") or "api"
    if source not in tuple(AccountSource):
        reader.problem(f"{where}.source", "expected 'api' or 'push'")
    push = source == AccountSource.PUSH
    if push and "endpoint" in spec:
        reader.problem(f"{where}.endpoint", "not used with source: push")
    endpoint = "" if push else reader.get(spec, "endpoint", where, _endpoint, required=True)
    project_id = reader.get(
        spec, "project_id", where, _text, "" if push else None, required=not push
    )
    creds_where = f"{where}.credentials"
    raw_creds = spec.get("credentials", {} if push else None)
    if raw_creds is None:
        reader.problem(creds_where, "is required (access_key and secret_key, or token)")
        raw_creds = {}
    creds = reader.mapping(raw_creds, creds_where, {"access_key", "secret_key", "token"})
    found = {
        key: reader.secret(creds[key], f"{creds_where}.{key}")
        for key in ("access_key", "secret_key", "token")
        if key in creds
    }
    access, secret, token = (found.get(k) for k in ("access_key", "secret_key", "token"))
    if creds and ("access_key" in creds) != ("secret_key" in creds):
        reader.problem(creds_where, "access_key and secret_key go together")
    if creds and "token" not in creds and "access_key" not in creds:
        reader.problem(creds_where, "give access_key and secret_key, or token")
    if "templates" not in spec:
        reader.problem(f"{where}.templates", "is required (a list of ids, or discover: true)")
        templates = TemplateSelection()
    else:
        templates = _templates(reader, spec["templates"], f"{where}.templates")
    tls = reader.mapping(spec.get("tls", {}), f"{where}.tls", {"verify", "ca_file"})
    verify = reader.get(tls, "verify", f"{where}.tls", _boolean, True)
    ca_file = reader.get(tls, "ca_file", f"{where}.tls", _text)
    if ca_file is not None and not Path(ca_file).is_file():
        reader.problem(f"{where}.tls.ca_file", f"cannot read {ca_file}")
    if endpoint is None or project_id is None:
        return None
    return AccountConfig(
        name=name,
        endpoint=endpoint,
        project_id=project_id,
        templates=templates,
        access_key=access.value if access else None,
        secret_key=secret,
        token=token,
        tls_verify=bool(verify),
        ca_file=ca_file,
        source=AccountSource.PUSH if push else AccountSource.API,
    )


_RECEIVER_KEYS = {
    "store_path",
    "store_url",
    "paths",
    "retention",
    "synchronous",
    "signing",
    "attribution",
    "details_api",
    "allow_unsigned",
    "registration_token",
    "max_templates",
}
_ATTRIBUTION_MODES = tuple(Attribution)


def _path(value: object) -> str:
    text = _text(value)
    if not re.match(r"^/[A-Za-z0-9/_.~-]*$", text.replace(ACCOUNT_PLACEHOLDER, "a", 1)):
        raise ValueError("expected an absolute URL path such as /push/status-report")
    return text


def _store_url(reader: _Reader, spec: Mapping[str, Any]) -> Secret | None:
    """``store_url``: a string (``${VAR}`` expanded) or ``{env: NAME}`` / ``{file: PATH}``."""
    raw, where = spec.get("store_url"), "receiver.store_url"
    if raw is None:
        return None
    if isinstance(raw, dict):
        url = reader.secret(raw, where)
    elif isinstance(raw, str):
        try:
            written = urlsplit(raw)
        except ValueError:  # its message is generic; the URL may hold a password
            reader.problem(where, "is not a valid URL (check the brackets around an IPv6 host)")
            return None
        if written.password and "${" not in written.password:
            reader.problem(where, "write the password as ${VAR}, or give the URL by {env:}/{file:}")
            return None
        # A variable in the user or password goes in percent-encoded: a password with
        # @ : / # % ? or a space would otherwise change where the URL points.
        userinfo, at, hostinfo = written.netloc.rpartition("@")
        if at and "${" in userinfo:
            encoded = reader.expand(userinfo, where, lambda v: quote(v, safe=""))
            raw = urlunsplit(written._replace(netloc=f"{encoded}@{hostinfo}"))
        expanded = reader.expand(raw, where)
        url = Secret(expanded) if isinstance(expanded, str) else None
    else:
        reader.problem(where, "expected a postgresql:// URL, {env: NAME} or {file: PATH}")
        return None
    if url is None:
        return None
    try:
        scheme = urlsplit(url.value).scheme
    except ValueError:
        scheme = ""
    if scheme not in ("postgresql", "postgres"):
        reader.problem(where, "expected a postgresql:// URL")
        return None
    try:
        from psycopg.conninfo import conninfo_to_dict

        from exporter.pgurl import split_url
    except ImportError:
        reader.problem(where, "needs the postgres extra: pip install 'msgsms-exporter[postgres]'")
        return None
    try:
        libpq = split_url(url.value)[0]
    except ValueError as exc:
        reader.problem(where, str(exc))
        return None
    try:
        conninfo_to_dict(libpq)
    except Exception:  # psycopg's message may quote the URL, password included
        reader.problem(where, "is not a valid libpq URL")
        return None
    return url


def _receiver(reader: _Reader, raw: object) -> ReceiverConfig | None:
    spec = reader.mapping(raw, "receiver", _RECEIVER_KEYS)
    store_path = reader.get(spec, "store_path", "receiver", _text)
    store_url = _store_url(reader, spec)
    if ("store_path" in spec) == ("store_url" in spec):
        reader.problem("receiver", "give store_path (SQLite) or store_url (PostgreSQL), one")
    d = ReceiverConfig(store_path="")
    paths = reader.mapping(spec.get("paths", {}), "receiver.paths", {"single", "batch", "sends"})
    single, batch, sends = (
        reader.get(paths, key, "receiver.paths", _path, default) or default
        for key, default in (
            ("single", d.single_path),
            ("batch", d.batch_path),
            ("sends", d.sends_path),
        )
    )
    if len({single, batch, sends}) != 3:
        reader.problem("receiver.paths", "single, batch and sends need different paths")
    synchronous = reader.get(spec, "synchronous", "receiver", _text, d.synchronous.value)
    if synchronous not in tuple(Synchronous):
        reader.problem("receiver.synchronous", "expected 'normal' or 'full'")
        synchronous = d.synchronous
    signing = reader.mapping(spec.get("signing", {}), "receiver.signing", {"keys"})
    keys: list[Credentials] = []
    key_accounts: list[tuple[str, str]] = []
    raw_keys = signing.get("keys", [])
    if not isinstance(raw_keys, list):
        reader.problem("receiver.signing.keys", "expected a list of key pairs")
        raw_keys = []
    for index, item in enumerate(raw_keys):
        where = f"receiver.signing.keys[{index}]"
        pair = reader.mapping(item, where, {"access_key", "secret_key", "account"})
        access, secret = (
            reader.secret(pair[k], f"{where}.{k}") if k in pair else None
            for k in ("access_key", "secret_key")
        )
        bound = reader.get(pair, "account", where, _text)
        if "access_key" not in pair or "secret_key" not in pair:
            reader.problem(where, "give access_key and secret_key")
        elif access is not None and secret is not None:
            keys.append(Credentials(access.value, secret.value))
            if bound is not None:
                key_accounts.append((access.value, bound))
    per_account = [dict(key_accounts).get(k.access_key, "") for k in keys]
    if any(per_account.count(name) > 2 for name in per_account):
        reader.problem(
            "receiver.signing.keys", "at most two key pairs per account (the old and the new)"
        )
    attribution = reader.mapping(
        spec.get("attribution", {}), "receiver.attribution", {"from", "key"}
    )
    mode = reader.get(attribution, "from", "receiver.attribution", _text, "none") or "none"
    key = reader.get(attribution, "key", "receiver.attribution", _text, "") or ""
    if mode not in _ATTRIBUTION_MODES:
        reader.problem(
            "receiver.attribution.from", f"expected one of {', '.join(_ATTRIBUTION_MODES)}"
        )
        mode = Attribution.NONE
    elif mode in ("extend_pair", "extend_json") and not key:
        reader.problem("receiver.attribution.key", f"is required with from: {mode}")
    details_api = bool(reader.get(spec, "details_api", "receiver", _boolean, False))
    allow_unsigned = bool(reader.get(spec, "allow_unsigned", "receiver", _boolean, False))
    token = (
        reader.secret(spec["registration_token"], "receiver.registration_token")
        if "registration_token" in spec
        else None
    )
    max_templates = reader.get(spec, "max_templates", "receiver", _positive_int, d.max_templates)
    if store_path is None and store_url is None:
        return None
    return ReceiverConfig(
        store_path=store_path or "",
        store_url=store_url,
        single_path=single,
        batch_path=batch,
        sends_path=sends,
        retention=reader.get(spec, "retention", "receiver", _duration, d.retention) or d.retention,
        synchronous=Synchronous(synchronous),
        signing_keys=tuple(keys),
        key_accounts=tuple(key_accounts),
        attribution=Attribution(mode),
        attribution_key=key,
        details_api=details_api,
        allow_unsigned=allow_unsigned,
        registration_token=token,
        max_templates=max_templates or d.max_templates,
    )


def _check_receiver_paths(reader: _Reader, receiver: ReceiverConfig, pushed: list[str]) -> None:
    """No push path may shadow one of the exporter's routes (``/metrics``, ``/-/reload``)."""
    paths = {
        "single": receiver.single_path,
        "batch": receiver.batch_path,
        "sends": receiver.sends_path,
    }
    for key, path in paths.items():
        served = {path.replace(ACCOUNT_PLACEHOLDER, name) for name in pushed or [""]}
        # A push path is served with and without a trailing "/": neither may be taken.
        taken = sorted(
            p for p in served if (p.rstrip("/") or "/") in EXPORTER_PATHS or p.startswith("/-/")
        )
        if taken:
            reader.problem(
                f"receiver.paths.{key}", f"{taken[0]} is one of the exporter's own paths"
            )


def _check_push_routing(reader: _Reader, receiver: ReceiverConfig, pushed: list[str]) -> None:
    """Every push must find its account: by its path, or by the key that signed it."""
    for index, (_, name) in enumerate(receiver.key_accounts):
        if name not in pushed:
            reader.problem(
                f"receiver.signing.keys[{index}].account", f"no account {name!r} uses source: push"
            )
    paths = {"single": receiver.single_path, "batch": receiver.batch_path}
    paths["sends"] = receiver.sends_path
    bound = {name for _, name in receiver.key_accounts}
    for key, path in paths.items():
        if ACCOUNT_PLACEHOLDER in path:
            if not pushed:
                reader.problem(
                    f"receiver.paths.{key}", "{account} needs an account with source: push"
                )
            continue
        if len(pushed) > 1 and (
            len(receiver.key_accounts) < len(receiver.signing_keys) or bound != set(pushed)
        ):
            reader.problem(
                f"receiver.paths.{key}",
                "several accounts use source: push: put {account} in the path"
                f" (/push/{{account}}{path.removeprefix('/push')}), or bind every signing key"
                " to an account (receiver.signing.keys[].account)",
            )


_TOP_KEYS = {
    "accounts",
    "receiver",
    "poll_interval",
    "window",
    "windows",
    "request_budget",
    "review_hold_horizon",
    "max_staleness",
    "settle_delay",
    "engine",
    "request_timeout",
    "page_size",
    "top_status_codes",
    "max_query_span",
}


_SETTINGS: dict[str, Callable[[object], Any]] = {
    "request_timeout": _duration,
    "page_size": _positive_int,
    "top_status_codes": _positive_int,
    "max_query_span": _duration,
    "request_budget": _positive_int,
    "review_hold_horizon": _duration,
    "max_staleness": _positive_int,
    "settle_delay": _duration_or_zero,
    "engine": _engine,
}
"""Top-level settings with a plain conversion, in the order their problems are reported."""


def parse_config(raw: object, env: Mapping[str, str]) -> Config:
    """Turn parsed YAML into a Config, or raise ConfigError listing every problem."""
    reader = _Reader(env)
    spec = reader.mapping(raw, "", _TOP_KEYS)
    accounts: list[AccountConfig] = []
    raw_accounts = spec.get("accounts")
    if not isinstance(raw_accounts, list) or not raw_accounts:
        reader.problem("accounts", "expected a non-empty list of accounts")
    else:
        for index, item in enumerate(raw_accounts):
            account = _account(reader, item, f"accounts[{index}]")
            if account is not None:
                accounts.append(account)
    receiver = _receiver(reader, spec["receiver"]) if "receiver" in spec else None
    pushed = [a.name for a in accounts if a.source == AccountSource.PUSH]
    if pushed and "receiver" not in spec:
        reader.problem("receiver", f"is required: account {pushed[0]!r} uses source: push")
    if receiver is not None:
        _check_receiver_paths(reader, receiver, pushed)
        _check_push_routing(reader, receiver, pushed)
    names = [a.name for a in accounts]
    for name in sorted({n for n in names if names.count(n) > 1}):
        reader.problem("accounts", f"account name {name!r} is used more than once")
    defaults = Config(accounts=())

    def setting(key: str, convert: Callable[[object], Any]) -> Any:
        return _or(reader.get(spec, key, "", convert), getattr(defaults, key))

    poll_interval = setting("poll_interval", _duration)
    windows = _windows(reader, spec) or defaults.windows
    config = Config(
        accounts=tuple(accounts),
        receiver=receiver,
        poll_interval=poll_interval,
        windows=windows,
        **{key: setting(key, convert) for key, convert in _SETTINGS.items()},
    )
    key = "windows" if "windows" in spec else "window"
    if config.window > config.max_query_span:
        reader.problem(key, "must not be longer than max_query_span (default 24h)")
    if any(w % RESOLUTION_SECONDS for w in config.windows):
        reader.problem(key, f"must be whole multiples of {RESOLUTION_SECONDS}s")
    if config.page_size > 100:
        reader.problem("page_size", "must be at most 100 (the contract's maximum page)")
    if reader.problems:
        raise ConfigError(reader.problems)
    return config


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader refusing a key given twice in one mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<: *defaults' then overriding a key is allowed
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> object:
    """Parsed YAML, or ConfigError located at ``source:line:column``."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"{where}: {problem}"]) from None


def _read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{path}:{line}: not UTF-8 text (byte {exc.start})"]) from None


def read_yaml(path: str | Path) -> object:
    """A YAML file, parsed; ConfigError naming the file when it cannot be read or parsed."""
    return parse_yaml(_read_text(path), str(path))


def key_lines(node: yaml.Node | None, where: str = "") -> dict[str, int]:
    """Each key path of a composed YAML document (``accounts[0].name``) → its line."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{where}.{key.value}" if where else str(key.value)
            lines[path] = key.start_mark.line + 1
            lines.update(key_lines(value, path))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[f"{where}[{index}]"] = item.start_mark.line + 1
            lines.update(key_lines(item, f"{where}[{index}]"))
    return lines


def locate(problems: list[str], source: str, lines: Mapping[str, int]) -> list[str]:
    """``path: message`` → ``source:line: path: message``, at the nearest key written."""
    located = []
    for problem in problems:
        where = problem.split(": ", 1)[0]
        parts = re.split(r"(?=[.\[])", where)
        prefixes = ("".join(parts[:n]) for n in range(len(parts), 0, -1))
        line = next((lines[p] for p in prefixes if p in lines), None)
        located.append(f"{source}:{line}: {problem}" if line else f"{source}: {problem}")
    return located


def load_located(path: str | Path, parse: Callable[[object], T]) -> T:
    """``parse`` applied to a YAML file; its problems located at ``file:line``."""
    text = _read_text(path)
    raw = parse_yaml(text, str(path))
    try:
        return parse(raw)
    except ConfigError as error:
        lines = key_lines(yaml.compose(text, Loader=_UniqueKeyLoader))
        raise ConfigError(locate(error.problems, str(path), lines)) from None


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and parse a YAML config file; ConfigError on any problem, each located at
    the file and the line of the key it concerns."""
    return load_located(path, lambda raw: parse_config(raw, os.environ if env is None else env))
