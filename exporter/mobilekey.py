"""The key of the stored numbers' hashes: a copy of the store does not give the numbers back.

A push store keeps a number masked (``4402****00``) and, to answer the details contract's
``mobile`` filter, as HMAC-SHA256 of its digits under ``receiver.mobile_key``. An unkeyed
hash would protect nothing: a country's 10**10 to 10**12 numbers are hashed in minutes,
so whoever holds a copy of the store (a backup, a volume, a read-only role) would hold
every number. Without a key no hash is kept and the filter is refused
(:data:`NO_KEY_MESSAGE`): nothing searchable by number is stored.

A store keeps the key's :attr:`MobileKey.fingerprint` (the HMAC of a text no number
hashes to) and refuses to be written with another key: replicas sharing a PostgreSQL
database would hash one number differently and find only their own messages. A key is
rotated by naming the old one as ``receiver.mobile_key_previous``: the store takes the
new key and clears the old key's hashes (see :func:`key_change`).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from exporter.errors import BadParameter, StoreUnavailable

MIN_KEY_LENGTH = 32
"""Characters a key needs at least: ``openssl rand -hex 32`` gives 64."""
_FINGERPRINT_TEXT = b"\0msgsms-exporter mobile key fingerprint"
"""What a fingerprint is the HMAC of: it starts with NUL, which no number's digits hold."""
NO_KEY_MESSAGE = (
    "mobile: this push store keeps no searchable mobile numbers: searching by number"
    " needs receiver.mobile_key (a secret of 32 characters or more, from {env:} or {file:})"
)
"""Why the ``mobile`` filter is refused by a store written without a key (a 400)."""


@dataclass(frozen=True, slots=True)
class MobileKey:
    """The secret the stored numbers are hashed with; never shown by ``repr``."""

    secret: bytes = field(repr=False)

    def hash(self, mobile: str) -> str:
        """The stored stand-in for a number (its digits, a leading ``+`` aside); "" for none."""
        digits = mobile.lstrip("+")
        if not digits:
            return ""
        return hmac.new(self.secret, digits.encode(), hashlib.sha256).hexdigest()

    @property
    def fingerprint(self) -> str:
        """What the store keeps to recognise the key: it tells nothing of the key itself."""
        return hmac.new(self.secret, _FINGERPRINT_TEXT, hashlib.sha256).hexdigest()


def mobile_hash(mobile: str, key: MobileKey | None) -> str:
    """The hash a store keeps for ``mobile``: "" without a key (nothing to search by)."""
    return "" if key is None else key.hash(mobile)


def filter_hash(mobile: str, key: MobileKey | None) -> str:
    """The hash the ``mobile`` filter compares; BadParameter (a 400) without a key."""
    if key is None:
        raise BadParameter(NO_KEY_MESSAGE)
    return key.hash(mobile)


def key_change(stored: str | None, key: MobileKey, previous: MobileKey | None) -> bool:
    """Whether opening a store that keeps the fingerprint ``stored`` (None: none yet) with
    ``key`` changes it: True for a new store or a rotation (the stored hashes are then
    cleared); StoreUnavailable for a key the store does not know."""
    if stored is None:
        return True
    if hmac.compare_digest(stored, key.fingerprint):
        return False
    if previous is not None and hmac.compare_digest(stored, previous.fingerprint):
        return True
    raise StoreUnavailable(
        "the store's mobile numbers were hashed with another receiver.mobile_key: every"
        " exporter writing one store needs the same key. To change the key, give the old"
        " one as receiver.mobile_key_previous; if it is lost, see docs/push.md"
        " (Mobile numbers) to start a new key"
    )
