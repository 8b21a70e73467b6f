"""Push parsing: every field checked against Huawei's documented lengths, digits, text, time."""

from __future__ import annotations

import json

import pytest

from exporter.errors import PushRejected
from exporter.pushparse import (
    parse_batch,
    parse_sends,
    parse_single,
    parse_time,
    report_from_fields,
)
from exporter.timestamps import parse_rfc3339

NOW = parse_rfc3339("2026-11-26T11:05:00Z")
OK = {"smsMsgId": "m1", "status": "DELIVRD"}


@pytest.mark.parametrize(
    ("fields", "reason", "message"),
    [
        ({"total": "²"}, "bad_field", "total must be an integer from 1 to 99"),
        ({"total": "٢"}, "bad_field", "total must be an integer from 1 to 99"),
        ({"sequence": "0"}, "bad_field", "sequence must be an integer from 1 to 99"),
        ({"total": "100"}, "bad_field", "total is longer than 2 characters"),
        ({"smsMsgId": "x" * 51}, "bad_field", "smsMsgId is longer than 50 characters"),
        ({"smsMsgId": "a b"}, "bad_field", "smsMsgId must be 1 to 50 printable ASCII characters"),
        ({"status": "SMGP ERR"}, "bad_field", "status must be 1 to 16 printable ASCII characters"),
        ({"status": "S" * 17}, "bad_field", "status is longer than 16 characters"),
        ({"statusDesc": "d" * 501}, "bad_field", "statusDesc is longer than 500 characters"),
        ({"statusDesc": "\ud800"}, "bad_encoding", "statusDesc is not valid Unicode text"),
        ({"extend": "a\x00b"}, "bad_encoding", "extend contains a NUL character"),
        ({"extend": "e" * 129}, "bad_field", "extend is longer than 128 characters"),
        ({"source": "²"}, "bad_field", "source must be 1 or 2 ASCII digits"),
        ({"source": "123"}, "bad_field", "source is longer than 2 characters"),
        ({"updateTime": "9999-12-31T23:59:59Z"}, "implausible_time", None),
        ({"updateTime": "2026-11-22T10:59:59Z"}, "implausible_time", None),
        ({"updateTime": "2026-11-27T11:05:01Z"}, "implausible_time", None),
        ({"status": ["DELIVRD"]}, "bad_field", "status must be a string"),
    ],
)
def test_each_bad_field_is_named(fields, reason, message):
    with pytest.raises(PushRejected) as info:
        report_from_fields({**OK, **fields}, NOW)
    assert info.value.reason == reason
    if message is not None:
        assert str(info.value) == message


def test_implausible_times_name_the_window():
    with pytest.raises(PushRejected, match="more than 96 h before or 24 h after"):
        report_from_fields({**OK, "updateTime": "9999-12-31T23:59:59Z"}, NOW)


@pytest.mark.parametrize(
    "stamp",
    ["2026-11-26T11:04:46Z", "2026-11-26T11:04:46.250Z", "2026-11-26T11:04:46", ""],
)
def test_both_timestamp_forms_are_accepted(stamp):
    report = report_from_fields({**OK, "updateTime": stamp}, NOW)
    expected = {"": None, "2026-11-26T11:04:46.250Z": NOW - 13.75}.get(stamp, NOW - 14)
    assert report.update_time == expected


def test_the_longest_documented_values_pass():
    fields = {
        "smsMsgId": "m" * 50,
        "status": "SC:0016",
        "statusDesc": "é" * 500,
        "extend": "e" * 128,
        "total": "99",
        "sequence": "99",
        "source": 2,
        "updateTime": "2026-11-22T11:05:00Z",
    }
    report = report_from_fields(fields, NOW)
    assert (report.total, report.sequence, report.source) == (99, 99, "2")


def test_a_lone_surrogate_costs_only_its_own_item():
    items = [dict(OK, smsMsgId=f"m{i}") for i in range(50)]
    items[7]["statusDesc"] = "\ud800"
    parsed = parse_batch(json.dumps({"statusReportList": items}).encode(), NOW)
    assert [p.to_wire() for p in parsed.problems] == [
        {"index": 7, "reason": "bad_encoding", "message": "statusDesc is not valid Unicode text"}
    ]
    assert len(parsed.items) == 49


@pytest.mark.parametrize(
    "body",
    [
        "smsMsgId=m1&status=DELIVRD&statusDesc=a+b%2Bc%3D%26",  # + is a space, %xx decoded
        "status=DELIVRD&smsMsgId=m%31&extend=x%3Dy&total=",  # any order, blank kept
        "smsMsgId=m1&status=DELIVRD&statusDesc=1=2;3",  # = and ; inside a value
        "smsMsgId=m1&status=DELIVRD&&total=1",  # an empty part: skipped
        "smsMsgId=m1&status=DELIVRD&total",  # a field without =: blank
        "smsMsgId=m1&status=DELIVRD&",  # a trailing &
        "smsMsgId=m1&status=DELIVRD&statusDesc=%FF",  # not UTF-8
        "smsMsgId=m1&status=DELIVRD&statusDesc=%zz",  # not an escape: kept as it is
    ],
)
def test_form_bodies_decode_as_the_standard_librarys_parser_does(body: str):
    """As ``parse_qsl`` (and the WHATWG parser browsers use): lenient about empty parts,
    which lose nothing, strict about text that is not UTF-8."""
    from urllib.parse import parse_qsl

    try:
        fields = dict(parse_qsl(body, keep_blank_values=True, errors="strict"))
        expected: object = report_from_fields(fields, NOW)
    except (ValueError, UnicodeDecodeError):
        expected = "bad_encoding"
    try:
        got: object = parse_single(body.encode(), NOW)
    except PushRejected as exc:
        got = exc.reason
    assert got == expected


def test_form_values_decode_strictly():
    with pytest.raises(PushRejected) as info:
        parse_single(b"smsMsgId=m1&status=DELIVRD&statusDesc=%ED%A0%80", NOW)
    assert info.value.reason == "bad_encoding"


@pytest.mark.parametrize(
    ("send_time", "reason"),
    [
        ("2026-11-26T11:00:00Z", None),
        ("2026-11-26T11:00:00.250Z", None),
        ("2026-11-25T11:04:59Z", "implausible_time"),
        ("2026-11-27T11:05:01Z", "implausible_time"),
        ("2026-11-26T11:00:00+08:00", None),
        ("2026-11-26T05:00:00-05:00", None),  # 10:00 UTC: a negative offset is read too
    ],
)
def test_registrations_are_plausible_within_a_day(send_time, reason):
    body = json.dumps([{"message_id": "m1", "template_id": "t", "send_time": send_time}])
    parsed = parse_sends(body.encode(), None, NOW)
    assert [p.reason for p in parsed.problems] == ([reason] if reason else [])


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({"mobile": "+44 20"}, "bad_field"),
        ({"segments": "³"}, "bad_field"),
        ({"message_id": "\udfff"}, "bad_encoding"),
        ({"template_id": "t" * 65}, "bad_field"),
    ],
)
def test_registration_fields_are_checked(item, reason):
    base = {"message_id": "m1", "template_id": "t", "send_time": "2026-11-26T11:00:00Z"}
    parsed = parse_sends(json.dumps([{**base, **item}]).encode(), None, NOW)
    assert [p.reason for p in parsed.problems] == [reason]


def test_a_negative_utc_offset_is_read_as_one():
    assert parse_time("2026-11-26T05:00:00-05:00", "t") == parse_time("2026-11-26T10:00:00Z", "t")
