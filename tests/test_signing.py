from datetime import UTC, datetime

import pytest

from exporter.errors import SignatureError
from exporter.signing import (
    Credentials,
    canonical_query,
    canonical_uri,
    sign_request,
    verify_request,
)

CREDS = Credentials("AKEXAMPLE", "SKEXAMPLE")
TEMPLATES_URL = (
    "https://msgsms.cn-north-4.myhuaweicloud.com/v2/0123456789abcdef0123456789abcdef"
    "/msgsms/templates?limit=10&offset=0&region=intl"
)
TEMPLATES_HEADERS = {
    "Content-Type": "application/json",
    "X-Project-Id": "0123456789abcdef0123456789abcdef",
    "X-Sdk-Date": "20240101T000000Z",
}
PUSH_URL = "https://127.0.0.1:9000/api/v1/status-reports"
PUSH_BODY = b'{"statusReportList":[{"smsMsgId":"a_1","status":"DELIVRD"}]}'
PUSH_HEADERS = {"Content-Type": "application/json", "X-Sdk-Date": "20261126T110500Z"}


def test_signs_template_list_request_like_the_official_sdk():
    headers = sign_request("GET", TEMPLATES_URL, TEMPLATES_HEADERS, b"", CREDS, datetime.now(UTC))
    assert headers["Authorization"] == (
        "SDK-HMAC-SHA256 Access=AKEXAMPLE, "
        "SignedHeaders=content-type;host;x-project-id;x-sdk-date, "
        "Signature=cf8cb746fa6da57f3b876c0e0b97b6efec96eb9abcb00a5443317231d351c5eb"
    )


def test_signs_push_with_body_like_the_official_sdk():
    headers = sign_request("POST", PUSH_URL, PUSH_HEADERS, PUSH_BODY, CREDS, datetime.now(UTC))
    assert headers["Authorization"].endswith(
        "SignedHeaders=content-type;host;x-sdk-date, "
        "Signature=3434057ea1f840e8e7af495f4eec39650b08d8e3df3b2ec1f04769409f78ecb9"
    )


def _known_push_headers():
    return {
        **PUSH_HEADERS,
        "Host": "127.0.0.1:9000",
        "Authorization": "SDK-HMAC-SHA256 Access=AKEXAMPLE, SignedHeaders=content-type;host;"
        "x-sdk-date, Signature=3434057ea1f840e8e7af495f4eec39650b08d8e3df3b2ec1f04769409f78ecb9",
    }


def test_verifies_the_known_push_signature():
    now = datetime(2026, 11, 26, 11, 6, tzinfo=UTC)
    key = verify_request(
        "POST", PUSH_URL, _known_push_headers(), PUSH_BODY, {"AKEXAMPLE": "SKEXAMPLE"}, now
    )
    assert key == "AKEXAMPLE"


def test_verifies_the_known_template_list_signature():
    headers = {
        **TEMPLATES_HEADERS,
        "Host": "msgsms.cn-north-4.myhuaweicloud.com",
        "Authorization": "SDK-HMAC-SHA256 Access=AKEXAMPLE, SignedHeaders=content-type;host;"
        "x-project-id;x-sdk-date, "
        "Signature=cf8cb746fa6da57f3b876c0e0b97b6efec96eb9abcb00a5443317231d351c5eb",
    }
    now = datetime(2024, 1, 1, 0, 1, tzinfo=UTC)
    assert (
        verify_request("GET", TEMPLATES_URL, headers, b"", {"AKEXAMPLE": "SKEXAMPLE"}, now)
        == "AKEXAMPLE"
    )


def test_chooses_the_secret_by_access_key_among_two_pairs():
    now = datetime(2026, 11, 26, 11, 6, tzinfo=UTC)
    secrets = {"OLDKEY": "old-secret", "AKEXAMPLE": "SKEXAMPLE"}
    assert (
        verify_request("POST", PUSH_URL, _known_push_headers(), PUSH_BODY, secrets, now)
        == "AKEXAMPLE"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"body": b"{}"}, "signature does not match"),
        ({"secrets": {"AKEXAMPLE": "other"}}, "signature does not match"),
        ({"secrets": {"OTHER": "SKEXAMPLE"}}, "unknown access key"),
        ({"now": datetime(2026, 11, 26, 11, 30, tzinfo=UTC)}, "more than 15 minutes"),
    ],
)
def test_rejects_tampered_or_late_requests(change, message):
    args = {
        "body": PUSH_BODY,
        "secrets": {"AKEXAMPLE": "SKEXAMPLE"},
        "now": datetime(2026, 11, 26, 11, 6, tzinfo=UTC),
    }
    args.update(change)
    with pytest.raises(SignatureError, match=message):
        verify_request(
            "POST", PUSH_URL, _known_push_headers(), args["body"], args["secrets"], args["now"]
        )


def test_rejects_a_missing_authorization_header():
    with pytest.raises(SignatureError, match="not SDK-HMAC-SHA256"):
        verify_request("GET", PUSH_URL, {}, b"", {"AKEXAMPLE": "SKEXAMPLE"}, datetime.now(UTC))


def test_round_trips_a_signature_with_encoded_query_values():
    url = (
        "http://127.0.0.1:9171/api/v1/send-details?start_time=2026-11-26T10%3A00%3A00.000Z&limit=10"
    )
    now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    headers = sign_request("GET", url, {}, b"", CREDS, now)
    assert verify_request("GET", url, headers, b"", {"AKEXAMPLE": "SKEXAMPLE"}, now) == "AKEXAMPLE"


def test_canonical_forms_follow_the_sdk_rules():
    assert canonical_uri("/v2/a b/templates") == "/v2/a%20b/templates/"
    assert canonical_query([("b", "x y"), ("a", "1:2*"), ("a", "0~")]) == "a=0~&a=1%3A2%2A&b=x%20y"
    assert repr(CREDS) == "Credentials(access_key='AKEXAMPLE', secret_key='***')"
