"""The ``receiver:`` section: push paths, store, signing keys, attribution; and the checks
that every push path is free and finds its account."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from exporter.config import ACCOUNT_PLACEHOLDER, Attribution, ReceiverConfig, Secret, Synchronous
from exporter.configreader import ConfigReader, boolean, duration, nonempty_text, positive_int
from exporter.mobilekey import MIN_KEY_LENGTH
from exporter.signing import Credentials

EXPORTER_PATHS = frozenset(
    {"/", "/metrics", "/details", "/-/healthy", "/-/ready", "/-/reload", "/api/v1/send-details"}
)
"""The exporter's own routes: no receiver path may take one, nor anything under ``/-/``."""

POSTGRES_EXTRA_MISSING = (
    "needs the postgres extra (psycopg): in a clone, pip install '.[postgres]'"
    " (msgsms-exporter is not on PyPI); the container image has it"
)
"""The package is installed from a clone or its wheel, so the extra is named as pip takes it
there: ``pip install 'msgsms-exporter[postgres]'`` would ask PyPI for another package."""

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
    "mobile_key",
    "mobile_key_previous",
}
_ATTRIBUTION_MODES = tuple(Attribution)


def _path(value: object) -> str:
    text = nonempty_text(value)
    if not re.match(r"^/[A-Za-z0-9/_.~-]*$", text.replace(ACCOUNT_PLACEHOLDER, "a", 1)):
        raise ValueError("expected an absolute URL path such as /push/status-report")
    # Requests are routed with runs of "/" merged, and clients resolve "." and "..": such
    # a path would never be reached.
    if "//" in text or {".", ".."} & set(text.split("/")):
        raise ValueError("expected a path without //, /./ or /../, such as /push/status-report")
    return text


def _synchronous(value: object) -> Synchronous:
    """``normal`` or ``full``; YAML reads SQLite's ``off`` (or ``on``) as a boolean."""
    if isinstance(value, str) and value in tuple(Synchronous):
        return Synchronous(value)
    offered = "expected 'normal' or 'full'"
    raise ValueError(f"{offered} (SQLite's off is not offered: a power loss could lose reports)")


def _store_url(reader: ConfigReader, spec: Mapping[str, Any]) -> Secret | None:
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
        reader.problem(where, POSTGRES_EXTRA_MISSING)
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


def _mobile_key(reader: ConfigReader, spec: Mapping[str, Any], name: str) -> Secret | None:
    """A key of the numbers' hashes: a secret long enough not to be guessed."""
    if name not in spec:
        return None
    where = f"receiver.{name}"
    key = reader.secret(spec[name], where)
    if key is not None and len(key.value) < MIN_KEY_LENGTH:
        reader.problem(
            where,
            f"expected a key of {MIN_KEY_LENGTH} characters or more (openssl rand -hex 32);"
            f" got {len(key.value)}",
        )
        return None
    return key


def parse_receiver(reader: ConfigReader, raw: object) -> ReceiverConfig | None:
    """The ``receiver:`` section; None when it names no store (a problem is recorded)."""
    spec = reader.mapping(raw, "receiver", _RECEIVER_KEYS)
    store_path = reader.get(spec, "store_path", "receiver", nonempty_text)
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
    # Each path is served with and without a trailing "/": those must differ too.
    if len({p.rstrip("/") for p in (single, batch, sends)}) != 3:
        reader.problem(
            "receiver.paths", "single, batch and sends need different paths (a final / aside)"
        )
    synchronous = reader.get(spec, "synchronous", "receiver", _synchronous, d.synchronous)
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
        bound = reader.get(pair, "account", where, nonempty_text)
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
    mode = reader.get(attribution, "from", "receiver.attribution", nonempty_text, "none") or "none"
    key = reader.get(attribution, "key", "receiver.attribution", nonempty_text, "") or ""
    if mode not in _ATTRIBUTION_MODES:
        reader.problem(
            "receiver.attribution.from", f"expected one of {', '.join(_ATTRIBUTION_MODES)}"
        )
        mode = Attribution.NONE
    elif mode in ("extend_pair", "extend_json") and not key:
        reader.problem("receiver.attribution.key", f"is required with from: {mode}")
    details_api = bool(reader.get(spec, "details_api", "receiver", boolean, False))
    allow_unsigned = bool(reader.get(spec, "allow_unsigned", "receiver", boolean, False))
    token = (
        reader.secret(spec["registration_token"], "receiver.registration_token")
        if "registration_token" in spec
        else None
    )
    max_templates = reader.get(spec, "max_templates", "receiver", positive_int, d.max_templates)
    mobile_key = _mobile_key(reader, spec, "mobile_key")
    previous = _mobile_key(reader, spec, "mobile_key_previous")
    if previous is not None and mobile_key is None:
        reader.problem("receiver.mobile_key_previous", "needs receiver.mobile_key (the new key)")
    if store_path is None and store_url is None:
        return None
    return ReceiverConfig(
        store_path=store_path or "",
        store_url=store_url,
        single_path=single,
        batch_path=batch,
        sends_path=sends,
        retention=reader.get(spec, "retention", "receiver", duration, d.retention) or d.retention,
        synchronous=synchronous or d.synchronous,
        signing_keys=tuple(keys),
        key_accounts=tuple(key_accounts),
        attribution=Attribution(mode),
        attribution_key=key,
        details_api=details_api,
        allow_unsigned=allow_unsigned,
        registration_token=token,
        max_templates=max_templates or d.max_templates,
        mobile_key=mobile_key,
        mobile_key_previous=previous,
    )


def check_receiver_paths(reader: ConfigReader, receiver: ReceiverConfig, pushed: list[str]) -> None:
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


def check_push_routing(reader: ConfigReader, receiver: ReceiverConfig, pushed: list[str]) -> None:
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


def reload_problem(old: ReceiverConfig | None, new: ReceiverConfig | None) -> str | None:
    """Why a reload cannot turn ``old`` into ``new``; None when it can.

    A reload replaces the push credentials (signing keys and the accounts they are bound
    to, the registration token), so a key is rotated without the restart that would
    refuse Huawei's pushes meanwhile. Whether signing or the token is on at all decides
    which paths skip basic auth, fixed when the server starts; the rest needs a restart.
    """
    if old == new:
        return None
    if old is None or new is None:
        return "receiver: adding or removing the receiver needs a restart"
    credentials = ("signing_keys", "key_accounts", "registration_token")
    if replace(new, **{name: getattr(old, name) for name in credentials}) != old:
        return (
            "receiver: changing the receiver needs a restart (a reload replaces its signing"
            " keys and registration token only)"
        )
    if bool(old.signing_keys) != bool(new.signing_keys):
        return "receiver.signing: turning push signing on or off needs a restart"
    if (old.registration_token is None) != (new.registration_token is None):
        return "receiver.registration_token: adding or removing it needs a restart"
    return None
