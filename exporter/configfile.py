"""The configuration file: YAML read into a frozen :class:`Config`, every problem reported
together, each located at the file and line of the key it concerns."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from exporter.config import (
    ENGINES,
    RESOLUTION_SECONDS,
    AccountConfig,
    AccountSource,
    Config,
    EngineKind,
    TemplateSelection,
)
from exporter.configreader import ConfigReader, boolean, duration, nonempty_text, positive_int
from exporter.errors import ConfigError
from exporter.receiverconfig import check_push_routing, check_receiver_paths, parse_receiver
from exporter.yamlfile import load_located

T = TypeVar("T")
_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,64}$")


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


def _duration_or_zero(value: object) -> float:
    if value in (0, "0", "0s"):
        return 0.0
    return duration(value)


def _engine(value: object) -> EngineKind:
    if value not in ENGINES:
        raise ValueError(f"expected one of {', '.join(ENGINES)}")
    return EngineKind(str(value))


def _endpoint(value: object) -> str:
    text = nonempty_text(value)
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


def _templates(reader: ConfigReader, raw: object, where: str) -> TemplateSelection:
    if raw == [] or raw == {}:  # would select nothing: the account would export nothing
        reader.problem(where, "selects no template: list template ids, or {discover: true}")
        return TemplateSelection()
    if isinstance(raw, list):
        ids = []
        for index, item in enumerate(raw):
            if isinstance(item, str) and item:
                ids.append(item)
            elif isinstance(item, int | float) and not isinstance(item, bool):
                # An id of digits (20261126, 0123: octal) is a number to YAML 1.1.
                reader.problem(
                    f"{where}[{index}]",
                    "expected a template id string; YAML read this one as a number: quote it",
                )
            else:
                reader.problem(f"{where}[{index}]", "expected a template id string")
        return TemplateSelection(ids=tuple(ids))
    if not isinstance(raw, dict):
        reader.problem(where, "expected a list of template ids, or {discover: true}")
        return TemplateSelection()
    spec = reader.mapping(raw, where, {"discover", "include", "exclude"})
    discover = reader.get(spec, "discover", where, boolean, False)
    if spec and not discover:
        reader.problem(f"{where}.discover", "set to true, or list template ids instead")
    return TemplateSelection(
        discover=bool(discover),
        include=reader.get(spec, "include", where, _patterns, ()) or (),
        exclude=reader.get(spec, "exclude", where, _patterns, ()) or (),
    )


def _windows(reader: ConfigReader, spec: dict[str, Any]) -> tuple[float, ...]:
    if "window" in spec and "windows" in spec:
        reader.problem("windows", "give either 'window' or 'windows', not both")
        return ()
    if "windows" not in spec:
        single = reader.get(spec, "window", "", duration)
        return () if single is None else (single,)
    raw = spec["windows"]
    if not isinstance(raw, list) or not raw:
        reader.problem("windows", "expected a non-empty list of durations")
        return ()
    out = []
    for index, item in enumerate(raw):
        try:
            out.append(duration(item))
        except ValueError as exc:
            reader.problem(f"windows[{index}]", str(exc))
    if len(set(out)) != len(out):
        reader.problem("windows", "lists a window twice")
    return tuple(sorted(set(out)))


_ACCOUNT_KEYS = {"name", "source", "endpoint", "project_id", "credentials", "templates", "tls"}


def _account(reader: ConfigReader, raw: object, where: str) -> AccountConfig | None:
    spec = reader.mapping(raw, where, _ACCOUNT_KEYS)
    if not spec:
        return None
    name = reader.get(spec, "name", where, nonempty_text, "default") or "default"
    if not _NAME.match(name):
        reader.problem(f"{where}.name", "use letters, digits, '_', '.' or '-' (at most 64)")
    source = reader.get(spec, "source", where, nonempty_text, "api") or "api"
    if source not in tuple(AccountSource):
        reader.problem(f"{where}.source", "expected 'api' or 'push'")
    push = source == AccountSource.PUSH
    if push and "endpoint" in spec:
        reader.problem(f"{where}.endpoint", "not used with source: push")
    endpoint = "" if push else reader.get(spec, "endpoint", where, _endpoint, required=True)
    project_id = reader.get(
        spec, "project_id", where, nonempty_text, "" if push else None, required=not push
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
    verify = reader.get(tls, "verify", f"{where}.tls", boolean, True)
    ca_file = reader.get(tls, "ca_file", f"{where}.tls", nonempty_text)
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
    "request_timeout": duration,
    "page_size": positive_int,
    "top_status_codes": positive_int,
    "max_query_span": duration,
    "request_budget": positive_int,
    "review_hold_horizon": duration,
    "max_staleness": positive_int,
    "settle_delay": _duration_or_zero,
    "engine": _engine,
}
"""Top-level settings with a plain conversion, in the order their problems are reported."""


def parse_config(raw: object, env: Mapping[str, str]) -> Config:
    """Turn parsed YAML into a Config, or raise ConfigError listing every problem."""
    reader = ConfigReader(env)
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
    receiver = parse_receiver(reader, spec["receiver"]) if "receiver" in spec else None
    pushed = [a.name for a in accounts if a.source == AccountSource.PUSH]
    if pushed and "receiver" not in spec:
        reader.problem("receiver", f"is required: account {pushed[0]!r} uses source: push")
    if receiver is not None:
        check_receiver_paths(reader, receiver, pushed)
        check_push_routing(reader, receiver, pushed)
    names = [a.name for a in accounts]
    for name in sorted({n for n in names if names.count(n) > 1}):
        reader.problem("accounts", f"account name {name!r} is used more than once")
    defaults = Config(accounts=())

    def setting(key: str, convert: Callable[[object], Any]) -> Any:
        return _or(reader.get(spec, key, "", convert), getattr(defaults, key))

    poll_interval = setting("poll_interval", duration)
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


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and parse a YAML config file; ConfigError on any problem, each located at
    the file and the line of the key it concerns."""
    return load_located(path, lambda raw: parse_config(raw, os.environ if env is None else env))
