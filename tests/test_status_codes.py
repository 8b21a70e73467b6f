import pytest

from exporter.status_codes import StatusCategory, categorize, describe


@pytest.mark.parametrize(
    ("code", "category"),
    [
        ("DELIVRD", StatusCategory.DELIVERED),
        ("EXPIRED", StatusCategory.EXPIRED),
        ("MC:0001", StatusCategory.EXPIRED),
        ("UNDELIV", StatusCategory.INVALID_NUMBER),
        ("MK:0005", StatusCategory.INVALID_NUMBER),
        ("MK:1004", StatusCategory.CONTENT_BLOCKED),
        ("MK:1006", StatusCategory.CARRIER_REJECTED),
        ("CL26:12", StatusCategory.CARRIER_REJECTED),
        ("SC:0016", StatusCategory.BLACKLISTED),
        ("KEYWORD", StatusCategory.CONTENT_BLOCKED),
        ("MILIMIT", StatusCategory.RATE_LIMITED),
        ("E200018", StatusCategory.PLATFORM_CONFIG),
        ("E200027", StatusCategory.PLATFORM_CONFIG),
        ("E200028", StatusCategory.UNKNOWN),
        ("e000628", StatusCategory.PLATFORM_CONFIG),
        ("NEWCODE", StatusCategory.UNKNOWN),
    ],
)
def test_categorizes_codes_by_exact_match_then_prefix(code, category):
    assert categorize(code) is category


def test_describes_known_codes_and_falls_back_to_the_category():
    assert describe("E000629") == "The SMS package is used up in 'stop when used up' mode."
    assert describe("SMGPERR:5") == "Rejected by the carrier or supplier."
