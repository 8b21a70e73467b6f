"""Status codes of Huawei Message & SMS reports, grouped into bounded categories.

The grouping is the project's own (Huawei publishes hundreds of codes and no grouping);
it keeps the ``category`` label bounded whatever codes carriers invent. Where a code's
meaning comes from Huawei's status-code tables (``api-msgsms/sms_05_0051``) the
category follows it: ``SC:0004`` is a red-list interception, ``MK:0000`` is "normal",
carrier codes ``1`` and ``24`` are number problems, and the HLR/MSC codes ``MK:0037``,
``MK:0040``, ``MK:0041`` and ``MK:0055``..``MK:0057`` are network-side failures.
``tests/test_status_codes.py`` checks every mapping against a table naming its source.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache


class StatusCategory(StrEnum):
    """A bounded family of status codes."""

    DELIVERED = "delivered"
    EXPIRED = "expired"
    INVALID_NUMBER = "invalid_number"
    CARRIER_REJECTED = "carrier_rejected"
    BLACKLISTED = "blacklisted"
    CONTENT_BLOCKED = "content_blocked"
    RATE_LIMITED = "rate_limited"
    PLATFORM_CONFIG = "platform_config"
    UNKNOWN = "unknown"


DELIVERED_CODE = "DELIVRD"
EXPIRED_CODE = "EXPIRED"
NON_FINAL_CODES = frozenset({"ACCEPTD", "ENROUTE"})
"""Codes that report progress, not a result: the message stays ``sending``.

``ACCEPTD`` is Huawei's "accepted by the carrier"; ``ENROUTE`` is the SMPP state of a
message still on its way. A final report (any other code) replaces them.
"""

_C = StatusCategory
_EXACT: dict[str, StatusCategory] = {
    DELIVERED_CODE: _C.DELIVERED,
    EXPIRED_CODE: _C.EXPIRED,
    "E200034": _C.EXPIRED,
    "E200038": _C.EXPIRED,
    "ID:0061": _C.EXPIRED,
    "ID:0062": _C.EXPIRED,
    "UNDELIV": _C.INVALID_NUMBER,
    "LT:0001": _C.INVALID_NUMBER,
    "1": _C.INVALID_NUMBER,
    "24": _C.INVALID_NUMBER,
    "E200041": _C.INVALID_NUMBER,
    "REJECTD": _C.CARRIER_REJECTED,
    "DELETED": _C.CARRIER_REJECTED,
    "DJ:0255": _C.CARRIER_REJECTED,
    "MK:1006": _C.CARRIER_REJECTED,
    "MK:1007": _C.CARRIER_REJECTED,
    # Network-side (HLR unknown error, no answer, SGSN reject; HLR or MSC overload):
    # the carrier's network failed, the number itself may be fine.
    "MK:0037": _C.CARRIER_REJECTED,
    "MK:0040": _C.CARRIER_REJECTED,
    "MK:0041": _C.CARRIER_REJECTED,
    "MK:0055": _C.CARRIER_REJECTED,
    "MK:0056": _C.CARRIER_REJECTED,
    "MK:0057": _C.CARRIER_REJECTED,
    # "Normal": not a number error; as a final code it says nothing about delivery.
    "MK:0000": _C.UNKNOWN,
    "BLACK": _C.BLACKLISTED,
    "TDBLACK": _C.BLACKLISTED,
    "TSBLACK": _C.BLACKLISTED,
    "MBBLACK": _C.BLACKLISTED,
    "SC:0003": _C.BLACKLISTED,
    "SC:0004": _C.BLACKLISTED,
    "SC:0005": _C.BLACKLISTED,
    "SC:0013": _C.BLACKLISTED,
    "SC:0016": _C.BLACKLISTED,
    "ID:0096": _C.BLACKLISTED,
    "E000632": _C.BLACKLISTED,
    "KEYWORD": _C.CONTENT_BLOCKED,
    "MK:1004": _C.CONTENT_BLOCKED,
    "SC:0001": _C.CONTENT_BLOCKED,
    "SC:0006": _C.CONTENT_BLOCKED,
    "SC:0014": _C.CONTENT_BLOCKED,
    "SC:0015": _C.CONTENT_BLOCKED,
    "SC:0017": _C.CONTENT_BLOCKED,
    "SC:0018": _C.CONTENT_BLOCKED,
    "E200051": _C.CONTENT_BLOCKED,
    "MILIMIT": _C.RATE_LIMITED,
    "LIMIT": _C.RATE_LIMITED,
    "BEYONDN": _C.RATE_LIMITED,
    "CTLIMIT": _C.RATE_LIMITED,
    "E200036": _C.RATE_LIMITED,
    **{f"E2000{n}": _C.PLATFORM_CONFIG for n in range(18, 28)},
    "E200032": _C.PLATFORM_CONFIG,
    "E200035": _C.PLATFORM_CONFIG,
    "E000628": _C.PLATFORM_CONFIG,
    "E000629": _C.PLATFORM_CONFIG,
    "UNKNOWN": _C.UNKNOWN,
}

# Checked in order after the exact table, so MK:1004 etc. keep their own category.
_PREFIXES: tuple[tuple[str, StatusCategory], ...] = (
    ("MC:", _C.EXPIRED),
    ("MA:", _C.EXPIRED),
    ("MK:", _C.INVALID_NUMBER),
    ("MN:", _C.INVALID_NUMBER),
    ("MI:", _C.INVALID_NUMBER),
    ("CL26:", _C.CARRIER_REJECTED),
    ("SGIP:", _C.CARRIER_REJECTED),
    ("SMGPERR:", _C.CARRIER_REJECTED),
)

_MEANINGS: dict[str, str] = {
    DELIVERED_CODE: "Delivered to the handset.",
    EXPIRED_CODE: "No status report within 72 hours; the platform marked it expired.",
    "UNDELIV": "Undeliverable: the number is invalid, out of service or unreachable.",
    "REJECTD": "Rejected by the carrier.",
    "DELETED": "Deleted by the carrier.",
    "BLACK": "The number is on a blacklist.",
    "KEYWORD": "The content contains a sensitive word.",
    "MILIMIT": "Per-number per-minute sending limit reached.",
    "LIMIT": "Per-number per-day sending limit reached.",
    "E200018": "Sender channel check failed (signature not approved or wrong sender).",
    "E200019": "Sender channel check failed (signature not approved or wrong sender).",
    "E200020": "The signature does not match the template's signature.",
    "E200021": "The signature does not match the template's signature.",
    "E200024": "The application has no international SMS capability.",
    "E000628": "The destination country or region is not allowed.",
    "E000629": "The SMS package is used up in 'stop when used up' mode.",
    "SC:0003": "The number is on the platform blacklist.",
    "SC:0016": "The recipient unsubscribed.",
    "SC:0001": "Rejected by manual review of the content.",
    "SC:0004": "Intercepted by the red list.",
    "MK:0000": "Normal: the carrier reported no error.",
    "MK:0037": "HLR unknown error (network side).",
    "MK:0040": "No answer from the HLR (network side).",
    "MK:0041": "Rejected by the SGSN (network side).",
    "MK:0055": "HLR or MSC overload (network side).",
    "MK:0056": "HLR or MSC overload (network side).",
    "MK:0057": "HLR or MSC overload (network side).",
    "1": "The carrier reports a number problem (empty or invalid number).",
    "24": "The carrier reports a number problem (empty or invalid number).",
    "ACCEPTD": "Accepted by the carrier; a final report follows.",
    "E200036": "Sending frequency limit reached.",
    "UNKNOWN": "The carrier reported an unknown status.",
}

_CATEGORY_MEANINGS: dict[StatusCategory, str] = {
    _C.DELIVERED: "Delivered.",
    _C.EXPIRED: "Expired before delivery.",
    _C.INVALID_NUMBER: "The number is invalid or unreachable.",
    _C.CARRIER_REJECTED: "Rejected by the carrier or supplier.",
    _C.BLACKLISTED: "The number is blacklisted or unsubscribed.",
    _C.CONTENT_BLOCKED: "The content was blocked.",
    _C.RATE_LIMITED: "A sending frequency limit was hit.",
    _C.PLATFORM_CONFIG: "Configuration problem on the sender's side (fixable by us).",
    _C.UNKNOWN: "Unknown status.",
}


@lru_cache(maxsize=4096)
def categorize(code: str) -> StatusCategory:
    """The category of a status code; unmapped codes are ``unknown``."""
    code = code.strip().upper()
    exact = _EXACT.get(code)
    if exact is not None:
        return exact
    for prefix, category in _PREFIXES:
        if code.startswith(prefix):
            return category
    return StatusCategory.UNKNOWN


def describe(code: str) -> str:
    """A short human meaning for a status code (falls back to its category's)."""
    return _MEANINGS.get(code.strip().upper()) or _CATEGORY_MEANINGS[categorize(code)]


def is_final(code: str) -> bool:
    """True when a status code is a result (success or failure), not progress."""
    return code.strip().upper() not in NON_FINAL_CODES


def is_platform_code(code: str) -> bool:
    """True when Huawei's platform produced the code (not billed): ``E`` or ``SC:`` prefix."""
    return code.startswith(("E", "SC:")) and code != EXPIRED_CODE
