"""Deterministic sharding of templates across exporter replicas.

N replicas each own a disjoint share of the (account, template) pairs, so together they
poll every template exactly once and the upstream query budget is not spent twice.
Ownership uses rendezvous (highest random weight) hashing over SHA-256: it is stable
across processes, machines and Python versions (unlike the salted built-in ``hash()``),
and growing from N to N+1 shards moves only about 1/(N+1) of the templates.

    >>> shard = parse_shard("1/3")
    >>> shard
    Shard(index=1, count=3)
    >>> owner_index("default", "tpl-0001", 3)
    1
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from exporter.errors import ConfigError

AUTO = "auto"
_SHARD = re.compile(r"^(?P<index>auto|\d+)/(?P<count>\d+)$")
_ORDINAL = re.compile(r"-(?P<ordinal>\d+)$")


@dataclass(frozen=True, slots=True)
class Shard:
    """Replica ``index`` (0-based) of ``count`` shards."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"shard count must be at least 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index must be in [0, {self.count}), got {self.index}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


UNSHARDED = Shard(0, 1)


def parse_shard(text: str, *, hostname: str | None = None, where: str = "--shard") -> Shard:
    """Parse ``"i/n"``, or ``"auto/n"`` taking ``i`` from the hostname's ordinal suffix."""
    match = _SHARD.match(text.strip())
    if match is None:
        raise ConfigError([f"{where}: expected 'i/n' or 'auto/n' (e.g. '0/3'), got {text!r}"])
    count = int(match["count"])
    if count < 1:
        raise ConfigError([f"{where}: shard count must be at least 1, got {count}"])
    if match["index"] == AUTO:
        if hostname is None:
            raise ConfigError([f"{where}: 'auto' needs a hostname to take the ordinal from"])
        index = ordinal_from_hostname(hostname, where=where)
    else:
        index = int(match["index"])
    if index >= count:
        raise ConfigError(
            [f"{where}: shard index {index} is out of range for {count} shards (0..{count - 1})"]
        )
    return Shard(index, count)


def ordinal_from_hostname(hostname: str, *, where: str = "--shard") -> int:
    """The StatefulSet ordinal of a pod hostname: ``msgsms-exporter-2`` → 2."""
    name = hostname.split(".", 1)[0]
    match = _ORDINAL.search(name)
    if match is None:
        raise ConfigError(
            [f"{where}: hostname {hostname!r} has no StatefulSet ordinal suffix ('-<n>')"]
        )
    return int(match["ordinal"])


def _weight(account: str, template_id: str, index: int) -> int:
    key = f"{account}\x00{template_id}\x00{index}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big")


def owner_index(account: str, template_id: str, count: int) -> int:
    """The index of the shard, out of ``count``, that owns this template."""
    if count < 1:
        raise ValueError(f"shard count must be at least 1, got {count}")
    if count == 1:
        return 0
    return max(range(count), key=lambda index: _weight(account, template_id, index))


def owns(shard: Shard, account: str, template_id: str) -> bool:
    """True when ``shard`` is the one replica that polls this account's template."""
    return owner_index(account, template_id, shard.count) == shard.index
