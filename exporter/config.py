"""The configuration: frozen, typed objects the rest of the exporter reads.

:mod:`exporter.configfile` reads them from YAML; secrets arrive as :class:`Secret` values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from exporter.signing import Credentials

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
"""In a receiver path, stands for the name of each account with ``source: push``."""
DEFAULT_MAX_TEMPLATES = 300


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
        """True when the account exports the template: listed, or (discovered) passing the
        include/exclude patterns."""
        if not self.discover:
            return template_id in self.ids
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
    mobile_key: Secret | None = None
    """Key of the stored numbers' hashes (the ``mobile`` filter); none kept without it."""
    mobile_key_previous: Secret | None = None
    """The key being rotated away from: a store that knows it takes ``mobile_key``."""


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
