"""Status code → category, checked row by row against a table that names each fact's source."""

from __future__ import annotations

import pytest

from exporter.status_codes import (
    NON_FINAL_CODES,
    StatusCategory,
    categorize,
    describe,
    is_final,
    is_platform_code,
)

C = StatusCategory
# Where each fact comes from:
HUAWEI = "Huawei status-code tables (support.huaweicloud.com api-msgsms/sms_05_0051)"
PUSH = "Huawei status report API (api-msgsms/sms_05_0003): DELIVRD the only success"
GROUPING = "the project's grouping of Huawei's codes (README, status-code categories)"
PREFIX = "the project's prefix rule (codes of one supplier family share a category)"
FALLBACK = "the project's rule: an unmapped code is unknown, never a guess"

CATEGORY_TABLE: list[tuple[str, StatusCategory, str]] = [
    ("DELIVRD", C.DELIVERED, PUSH),
    ("EXPIRED", C.EXPIRED, HUAWEI),  # written by the platform 72 h after sending
    ("E200034", C.EXPIRED, GROUPING),
    ("E200038", C.EXPIRED, GROUPING),
    ("ID:0061", C.EXPIRED, GROUPING),
    ("MC:0001", C.EXPIRED, PREFIX),
    ("MA:0022", C.EXPIRED, PREFIX),
    ("UNDELIV", C.INVALID_NUMBER, GROUPING),
    ("LT:0001", C.INVALID_NUMBER, GROUPING),
    ("E200041", C.INVALID_NUMBER, GROUPING),
    ("MK:0005", C.INVALID_NUMBER, PREFIX),
    ("MN:0001", C.INVALID_NUMBER, PREFIX),
    ("MI:0024", C.INVALID_NUMBER, PREFIX),
    ("1", C.INVALID_NUMBER, HUAWEI),  # carrier: empty or invalid number
    ("24", C.INVALID_NUMBER, HUAWEI),  # carrier: empty or invalid number
    ("MK:0000", C.UNKNOWN, HUAWEI),  # "normal": not a number error
    ("MK:0037", C.CARRIER_REJECTED, HUAWEI),  # HLR unknown error
    ("MK:0040", C.CARRIER_REJECTED, HUAWEI),  # no answer from the HLR
    ("MK:0041", C.CARRIER_REJECTED, HUAWEI),  # SGSN reject
    ("MK:0055", C.CARRIER_REJECTED, HUAWEI),  # HLR or MSC overload
    ("MK:0056", C.CARRIER_REJECTED, HUAWEI),
    ("MK:0057", C.CARRIER_REJECTED, HUAWEI),
    ("REJECTD", C.CARRIER_REJECTED, GROUPING),
    ("DELETED", C.CARRIER_REJECTED, GROUPING),
    ("DJ:0255", C.CARRIER_REJECTED, GROUPING),
    ("MK:1006", C.CARRIER_REJECTED, GROUPING),
    ("MK:1007", C.CARRIER_REJECTED, GROUPING),
    ("CL26:12", C.CARRIER_REJECTED, PREFIX),
    ("SGIP:13", C.CARRIER_REJECTED, PREFIX),
    ("SMGPERR:5", C.CARRIER_REJECTED, PREFIX),
    ("BLACK", C.BLACKLISTED, GROUPING),
    ("TDBLACK", C.BLACKLISTED, GROUPING),
    ("SC:0003", C.BLACKLISTED, HUAWEI),  # platform blacklist
    ("SC:0004", C.BLACKLISTED, HUAWEI),  # red-list interception
    ("SC:0016", C.BLACKLISTED, HUAWEI),  # recipient unsubscribed
    ("E000632", C.BLACKLISTED, GROUPING),
    ("KEYWORD", C.CONTENT_BLOCKED, HUAWEI),  # sensitive word
    ("MK:1004", C.CONTENT_BLOCKED, GROUPING),
    ("SC:0001", C.CONTENT_BLOCKED, HUAWEI),  # rejected by manual content review
    ("E200051", C.CONTENT_BLOCKED, GROUPING),
    ("MILIMIT", C.RATE_LIMITED, HUAWEI),  # per-number minute limit
    ("LIMIT", C.RATE_LIMITED, HUAWEI),  # per-number day limit
    ("E200036", C.RATE_LIMITED, GROUPING),
    ("E200018", C.PLATFORM_CONFIG, HUAWEI),  # sender channel check failed
    ("E200020", C.PLATFORM_CONFIG, HUAWEI),  # signature does not match the template
    ("E200024", C.PLATFORM_CONFIG, HUAWEI),  # no international capability
    ("E200027", C.PLATFORM_CONFIG, GROUPING),
    ("e000628", C.PLATFORM_CONFIG, HUAWEI),  # country not allowed (any case)
    ("E000629", C.PLATFORM_CONFIG, HUAWEI),  # package used up
    ("E200028", C.UNKNOWN, FALLBACK),
    ("UNKNOWN", C.UNKNOWN, HUAWEI),
    ("NEWCODE", C.UNKNOWN, FALLBACK),
]


@pytest.mark.parametrize(
    ("code", "category", "source"), CATEGORY_TABLE, ids=[row[0] for row in CATEGORY_TABLE]
)
def test_each_code_has_the_category_its_source_gives(
    code: str, category: StatusCategory, source: str
) -> None:
    assert categorize(code) is category, source


def test_every_row_of_the_table_names_a_source_and_codes_are_not_repeated() -> None:
    codes = [code.upper() for code, _, _ in CATEGORY_TABLE]
    assert len(codes) == len(set(codes))
    assert {source for _, _, source in CATEGORY_TABLE} <= {HUAWEI, PUSH, GROUPING, PREFIX, FALLBACK}


@pytest.mark.parametrize(
    ("code", "platform"),
    [("E200018", True), ("SC:0001", True), ("EXPIRED", False), ("DELIVRD", False), ("1", False)],
)
def test_platform_codes_are_those_prefixed_e_or_sc(code: str, platform: bool) -> None:
    assert is_platform_code(code) is platform


def test_acceptd_is_not_final_every_other_code_of_the_table_is() -> None:
    # Huawei (shared facts §5): ACCEPTD is intermediate; a later final report replaces it.
    assert not is_final("ACCEPTD")
    assert all(is_final(code) for code, _, _ in CATEGORY_TABLE)


def test_describes_known_codes_and_falls_back_to_the_category() -> None:
    assert describe("E000629") == "The SMS package is used up in 'stop when used up' mode."
    assert describe("SC:0004") == "Intercepted by the red list."
    assert describe("MK:0000") == "Normal: the carrier reported no error."
    assert describe("ACCEPTD") == "Accepted by the carrier; a final report follows."
    assert describe("SMGPERR:5") == "Rejected by the carrier or supplier."


@pytest.mark.parametrize(
    ("code", "final"),
    [
        ("ACCEPTD", False),
        ("acceptd", False),
        ("ENROUTE", False),
        ("DELIVRD", True),
        ("UNDELIV", True),
        ("EXPIRED", True),
        ("UNKNOWN", True),
        ("E200018", True),
    ],
)
def test_only_progress_codes_are_not_final(code, final):
    assert is_final(code) is final
    assert {"ACCEPTD", "ENROUTE"} == NON_FINAL_CODES
