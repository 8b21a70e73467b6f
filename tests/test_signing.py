from datetime import UTC, datetime

import pytest

from exporter.errors import SignatureError
from exporter.signing import (
    Credentials,
    canonical_query,
    canonical_uri,
    payload_hash,
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


def test_a_missing_authorization_header_is_told_the_request_must_be_signed():
    with pytest.raises(SignatureError, match=r"^no Authorization header: the request must be"):
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
    # Huawei's Python SDK sorts before encoding: "aZ" comes before "a[" there, while the
    # encoded "a%5B" comes before "aZ".
    params = [("aZ", "2"), ("a[", "1")]
    assert canonical_query(params) == "a%5B=1&aZ=2"
    assert canonical_query(params, sort_decoded=True) == "aZ=2&a%5B=1"
    assert repr(CREDS) == "Credentials(access_key='AKEXAMPLE', secret_key='***')"


FORM_URL = "http://127.0.0.1:9000/push/status-report"
FORM_BODY = (
    b"sequence=1&total=1&orgCode=000&updateTime=2026-11-26T11%3A04%3A46Z&source=2"
    b"&smsMsgId=b9d9b4fe-ad0e-4a2a-a2c7-445505b674ac_6&status=DELIVRD"
)
FORM_HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded",
    "X-Sdk-Date": "20261126T110500Z",
}
# From huaweicloudsdkcore 3.1.219's Signer: a form body is signed as UNSIGNED-PAYLOAD.
FORM_AUTHORIZATION = (
    "SDK-HMAC-SHA256 Access=AKEXAMPLE, "
    "SignedHeaders=content-type;host;x-sdk-content-sha256;x-sdk-date, "
    "Signature=8e63b6d15fbb132f14a4fd6eb845f034c87dcf389a56f81d7ea6808aa46b5cf7"
)
AT_FORM = datetime(2026, 11, 26, 11, 6, tzinfo=UTC)


def test_signs_a_form_body_as_unsigned_payload_like_the_official_sdk():
    headers = sign_request("POST", FORM_URL, FORM_HEADERS, FORM_BODY, CREDS, AT_FORM)
    assert headers["X-Sdk-Content-Sha256"] == "UNSIGNED-PAYLOAD"
    assert headers["Authorization"] == FORM_AUTHORIZATION


def test_verifies_an_unsigned_payload_signature_whatever_the_body():
    headers = {
        **FORM_HEADERS,
        "Host": "127.0.0.1:9000",
        "X-Sdk-Content-Sha256": "UNSIGNED-PAYLOAD",
        "Authorization": FORM_AUTHORIZATION,
    }
    secrets = {"AKEXAMPLE": "SKEXAMPLE"}
    assert verify_request("POST", FORM_URL, headers, FORM_BODY, secrets, AT_FORM) == "AKEXAMPLE"
    # The trade-off, documented: the body is not part of what was signed.
    assert verify_request("POST", FORM_URL, headers, b"smsMsgId=x&status=Y", secrets, AT_FORM)
    without = {k: v for k, v in headers.items() if k != "X-Sdk-Content-Sha256"}
    with pytest.raises(SignatureError, match="signature does not match"):
        verify_request("POST", FORM_URL, without, FORM_BODY, secrets, AT_FORM)


def test_a_declared_body_hash_must_be_the_bodys():
    import hashlib

    declared = {**FORM_HEADERS, "X-Sdk-Content-Sha256": hashlib.sha256(FORM_BODY).hexdigest()}
    headers = sign_request("POST", FORM_URL, declared, FORM_BODY, CREDS, AT_FORM)
    secrets = {"AKEXAMPLE": "SKEXAMPLE"}
    assert verify_request("POST", FORM_URL, headers, FORM_BODY, secrets, AT_FORM) == "AKEXAMPLE"
    with pytest.raises(SignatureError, match="X-Sdk-Content-Sha256 does not match the body"):
        verify_request("POST", FORM_URL, headers, FORM_BODY + b"&x=1", secrets, AT_FORM)


def test_json_bodies_keep_the_body_hash():
    headers = sign_request("POST", PUSH_URL, PUSH_HEADERS, PUSH_BODY, CREDS, AT_FORM)
    assert "X-Sdk-Content-Sha256" not in headers


def test_a_declared_body_hash_that_is_not_ascii_is_a_bad_signature_not_a_crash():
    with pytest.raises(SignatureError, match="does not match the body"):
        payload_hash({"x-sdk-content-sha256": "é" * 64}, b"body")
