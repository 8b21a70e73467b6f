"""The sending-details contract's data: queries, records and pages, and their wire form.

Pure: used by the client (parse), the simulator and the push store (serialize).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from exporter.errors import RecordError, UpstreamMalformed
from exporter.timestamps import format_rfc3339, parse_rfc3339

DETAILS_PATH = "/api/v1/send-details"
REJECT_REASONS = (
    "bad_timestamp",
    "inconsistent",
    "missing_field",
    "unknown_send_result",
    "wrong_type",
)
"""Every ``reason`` a skipped record is counted under."""
MOBILE_PATTERN = re.compile(r"^[1-9][0-9]{6,14}$")  # ASCII digits only, unlike \d


class SendResult(StrEnum):
    """The console's send result."""

    SUCCESS = "success"
    FAILED = "failed"
    SENDING = "sending"


@dataclass(frozen=True, slots=True)
class DetailsQuery:
    """One sending-details query: the console's filters plus paging."""

    start_time: float
    end_time: float
    template_id: str | None = None
    _: KW_ONLY
    mobile: str | None = None
    send_result: SendResult | None = None
    offset: int = 0
    limit: int = 10

    def params(self) -> dict[str, str]:
        """Query-string parameters in the contract's names."""
        out = {
            "start_time": format_rfc3339(self.start_time),
            "end_time": format_rfc3339(self.end_time),
            "offset": str(self.offset),
            "limit": str(self.limit),
        }
        if self.template_id is not None:
            out["template_id"] = self.template_id
        if self.mobile is not None:
            out["mobile"] = self.mobile
        if self.send_result is not None:
            out["send_result"] = self.send_result.value
        return out


class SendRecord(NamedTuple):
    """One message as the sending-details query reports it.

    A NamedTuple rather than a frozen dataclass: records are built by the tens of
    thousands per poll, and a tuple is built several times faster.
    """

    message_id: str
    template_id: str
    mobile: str
    send_time: float
    send_result: SendResult
    status_code: str
    status_desc: str
    receive_time: float | None
    segments: int

    @property
    def delivery_delay_ms(self) -> int | None:
        """Whole milliseconds from sending to the final report, for delivered messages.

        Integer milliseconds (the contract's resolution) keep sums exact.
        """
        if self.send_result is SendResult.SUCCESS and self.receive_time is not None:
            return max(0, round(self.receive_time * 1000) - round(self.send_time * 1000))
        return None


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """A record that failed validation: its position and the reason label."""

    index: int
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class DetailsPage:
    """One page of a sending-details answer."""

    total: int
    records: list[SendRecord]
    rejected: list[RejectedRecord] = field(default_factory=list)


def mask_mobile(mobile: str) -> str:
    """Hide the middle of a number: ``4402000000`` → ``4402****00``."""
    digits = mobile.lstrip("+")
    if len(digits) <= 6:
        return "*" * len(digits)
    return digits[:4] + "*" * (len(digits) - 6) + digits[-2:]


def record_to_wire(record: SendRecord) -> dict[str, Any]:
    """The contract's JSON object for a record."""
    return {
        "message_id": record.message_id,
        "template_id": record.template_id,
        "mobile": record.mobile,
        "send_time": format_rfc3339(record.send_time),
        "send_result": record.send_result.value,
        "status_code": record.status_code,
        "status_desc": record.status_desc,
        "receive_time": (
            None if record.receive_time is None else format_rfc3339(record.receive_time)
        ),
        "segments": record.segments,
    }


def _text(obj: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        reason = "missing_field" if value is None else "wrong_type"
        raise RecordError(reason, f"field {key!r} must be a string")
    return value


def _time(obj: Mapping[str, Any], key: str, *, required: bool = True) -> float | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        reason = "missing_field" if value is None else "wrong_type"
        raise RecordError(reason, f"field {key!r} must be an RFC 3339 string")
    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        raise RecordError("bad_timestamp", f"field {key!r}: {exc}") from exc


def parse_record(obj: object) -> SendRecord:
    """Validate one wire record; RecordError with a bounded reason when it is malformed."""
    if not isinstance(obj, Mapping):
        raise RecordError("wrong_type", "record is not an object")
    try:
        result = SendResult(_text(obj, "send_result"))
    except ValueError as exc:
        raise RecordError("unknown_send_result", "unknown send_result") from exc
    send_time = _time(obj, "send_time")
    assert send_time is not None
    segments = obj.get("segments", 1)
    if not isinstance(segments, int) or isinstance(segments, bool) or segments < 1:
        raise RecordError("wrong_type", "field 'segments' must be a positive integer")
    code = _text(obj, "status_code", required=False).strip().upper()
    if result is not SendResult.SENDING and not code:
        raise RecordError("missing_field", "a final record needs a status_code")
    if result is SendResult.SUCCESS and code != "DELIVRD":
        raise RecordError("inconsistent", "a successful record must have status DELIVRD")
    if result is SendResult.FAILED and code == "DELIVRD":
        raise RecordError("inconsistent", "a failed record cannot have status DELIVRD")
    message_id = _text(obj, "message_id")
    template_id = _text(obj, "template_id")
    if not message_id or not template_id:
        raise RecordError("missing_field", "message_id and template_id must not be empty")
    return SendRecord(
        message_id=message_id,
        template_id=template_id,
        mobile=_text(obj, "mobile", required=False),
        send_time=send_time,
        send_result=result,
        status_code=code if result is not SendResult.SENDING else "",
        status_desc=_text(obj, "status_desc", required=False),
        receive_time=_time(obj, "receive_time", required=False),
        segments=segments,
    )


def page_frame(body: object, what: str, items: str) -> tuple[int, list[Any]]:
    """The ``total`` and the ``items`` list of an upstream page (both of Huawei's lists
    are framed so); UpstreamMalformed, naming ``what``, when the body is not that shape."""
    if not isinstance(body, Mapping):
        raise UpstreamMalformed(f"{what} body is not a JSON object")
    total = body.get("total")
    listed = body.get(items)
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise UpstreamMalformed(f"{what} 'total' is not a non-negative integer")
    if not isinstance(listed, list):
        raise UpstreamMalformed(f"{what} '{items}' is not a list")
    return total, listed


def parse_page(body: object) -> DetailsPage:
    """Validate a page; bad records are returned as rejected, never raised.

    Raises UpstreamMalformed only when the page itself is not the contract's shape.
    """
    total, records = page_frame(body, "send-details", "records")
    good: list[SendRecord] = []
    rejected: list[RejectedRecord] = []
    for index, raw in enumerate(records):
        try:
            good.append(parse_record(raw))
        except RecordError as exc:
            rejected.append(RejectedRecord(index, exc.reason, str(exc)))
    return DetailsPage(total=total, records=good, rejected=rejected)
