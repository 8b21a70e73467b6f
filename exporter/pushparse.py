"""Huawei's status-report pushes and the operator's send registrations, parsed: pure.

Bytes and the time now in; reports or registrations out, or :class:`PushRejected` with a
bounded reason. Every field the store keeps is checked here, against the lengths Huawei
documents (``smsMsgId`` String(1-50), ``statusDesc`` String(1-500), ``extend``
String(1-128), ``total``/``sequence`` String(1-2); ``status`` up to 16, not the 7 Huawei
documents: its own status-code list has longer carrier codes, ``SMGPERR:`` and its
number, and a report refused for its length is lost), for ASCII
digits where a number is expected, for text that UTF-8 can encode (JSON may carry a lone
surrogate such as ``"\\ud800"``) and that holds no NUL, and for a plausible time: so that
whatever passes can be stored, and a bad item is refused alone, never with its neighbours.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import unquote_plus

from exporter.errors import PushRejected
from exporter.pushitems import SendRegistration, StatusReport
from exporter.timestamps import parse_rfc3339

MAX_BATCH_ITEMS = 50
MAX_SENDS = 10_000
DAY_SECONDS = 86400.0
REPORT_MAX_AGE_SECONDS = 72 * 3600.0 + DAY_SECONDS
"""Reports arrive up to 72 h after sending; a day more allows for clocks and the retry hour."""
FUTURE_SECONDS = DAY_SECONDS
SEND_MAX_AGE_SECONDS = DAY_SECONDS
TIME_LENGTH = len("2026-11-26T10:00:00.123456789+08:00") + 4  # the longest RFC 3339, some spaces
# \Z, not $: a $ also matches before a final newline, and "m1\n" is not the id "m1".
TEMPLATE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")
_MESSAGE_ID = re.compile(r"^[\x21-\x7e]{1,50}\Z")  # printable ASCII, as Huawei's ids are
_STATUS = re.compile(r"^[\x21-\x7e]{1,16}\Z")
_ZONE = re.compile(r"(?:[Zz]|[+ -]\d{2}:\d{2})\Z")  # a zone (" 08:00": a decoded "+")
_BASIC_ZONE = re.compile(r"([+ -]\d{2})(\d{2})\Z")  # ISO 8601's +0800 (Java's default)
_SOURCE = re.compile(r"^[0-9]{1,2}\Z")
_MOBILE = re.compile(r"^\+?[0-9]{1,20}\Z")
_ID_RULE = "1 to 50 printable ASCII characters"
_READ = "smsMsgId status total sequence updateTime statusDesc source extend"
REPORT_FIELDS = {name.lower(): name for name in _READ.split()}
"""The report fields the receiver reads, by their name in lower case."""
_SUCCESS_CODES = ("000000", "E000510")  # E000510: per-recipient status, see parse_sends
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ItemProblem:
    """One rejected item of a batch: its index, reason label and message."""

    index: int
    reason: str
    message: str

    def to_wire(self) -> dict[str, Any]:
        """The item as the 400 answer lists it."""
        return {"index": self.index, "reason": self.reason, "message": self.message}


@dataclass(frozen=True, slots=True)
class Parsed(Generic[T]):
    """The valid items of a push, each with its index, and the problems of the others."""

    items: list[tuple[int, T]]
    problems: list[ItemProblem]


def _text(fields: Mapping[str, object], name: str, limit: int, *, required: bool = False) -> str:
    value = fields.get(name)
    if value is None or value == "":
        if required:
            raise PushRejected("missing_field", f"{name} is required")
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PushRejected("bad_field", f"{name} must be a string")
    text = str(value)
    if len(text) > limit:
        raise PushRejected("bad_field", f"{name} is longer than {limit} characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PushRejected("bad_encoding", f"{name} is not valid Unicode text") from exc
    if "\x00" in text:  # PostgreSQL's text cannot hold it
        raise PushRejected("bad_encoding", f"{name} contains a NUL character")
    return text


def _matching(
    fields: Mapping[str, object],
    name: str,
    pattern: re.Pattern[str],
    rule: str,
    limit: int = 64,
    **kw: bool,
) -> str:
    text = _text(fields, name, limit, **kw)
    if text and not pattern.match(text):
        raise PushRejected("bad_field", f"{name} must be {rule}")
    return text


def _count(fields: Mapping[str, object], name: str) -> int:
    text = _text(fields, name, 2)
    if not text:
        return 1
    # str.isdigit() admits "²" and "٢": only ASCII digits are numbers here.
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise PushRejected("bad_field", f"{name} must be an integer from 1 to 99")
    return int(text)


def parse_time(text: str, name: str) -> float:
    """A timestamp, ``2026-11-26T10:00:00Z``, with milliseconds or an offset (``+08:00``,
    ``-05:00``, ``+0800``); no zone means UTC."""
    text = text.strip()
    basic = _BASIC_ZONE.search(text, 19)
    if basic:
        text = f"{text[: basic.start()]}{basic[1]}:{basic[2]}"
    try:
        return parse_rfc3339(text if _ZONE.search(text, 19) else text + "Z")
    except ValueError as exc:
        raise PushRejected(
            "bad_field", f"{name} {text[:40]!r} is not a timestamp like 2026-11-26T10:00:00Z"
        ) from exc


def _plausible(seconds: float, name: str, now: float, max_age: float) -> float:
    if not now - max_age <= seconds <= now + FUTURE_SECONDS:
        raise PushRejected(
            "implausible_time",
            f"{name} is more than {max_age / 3600:g} h before or {FUTURE_SECONDS / 3600:g} h"
            " after the receiver's clock",
        )
    return seconds


def report_from_fields(fields: Mapping[str, object], now: float) -> StatusReport:
    """Validate one report's fields (form or JSON); PushRejected names the problem."""
    message_id = _matching(fields, "smsMsgId", _MESSAGE_ID, _ID_RULE, 50, required=True)
    status = _text(fields, "status", 16, required=True).strip().upper()
    if not _STATUS.match(status):
        raise PushRejected("bad_field", "status must be 1 to 16 printable ASCII characters")
    total, sequence = _count(fields, "total"), _count(fields, "sequence")
    if sequence > total:
        raise PushRejected("bad_field", "sequence is greater than total")
    update = _text(fields, "updateTime", TIME_LENGTH)
    return StatusReport(
        message_id=message_id,
        status=status,
        sequence=sequence,
        total=total,
        status_desc=_text(fields, "statusDesc", 500),
        update_time=(
            _plausible(parse_time(update, "updateTime"), "updateTime", now, REPORT_MAX_AGE_SECONDS)
            if update
            else None
        ),
        source=_matching(fields, "source", _SOURCE, "1 or 2 ASCII digits", 2),
        extend=_text(fields, "extend", 128),
    )


def _form_pairs(body: bytes, charset: str) -> list[tuple[str, str]]:
    """Form-encoded pairs as the WHATWG URL-encoded parser reads them (empty parts
    skipped, a part without ``=`` is a blank field, ``+`` a space, a ``%`` that starts
    no escape kept), decoded strictly from ``charset``, raw bytes and percent-escapes
    alike. PushRejected says where the text is not ``charset``."""
    try:
        # A final line end (curl --data-binary @file) is no data: a value's is escaped.
        text = body.rstrip(b"\r\n").decode(charset)
    except UnicodeError as exc:  # a UnicodeDecodeError, or a codec's own complaint
        raise PushRejected("bad_encoding", _not_text(_body_at(exc), charset)) from exc
    pairs = []
    for part in text.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        name = _unquote(name, charset, "a field name")
        pairs.append((name, _unquote(value, charset, name[:50])))
    return pairs


def _unquote(text: str, charset: str, what: str) -> str:
    if "%" not in text and "+" not in text:
        return text
    try:
        return unquote_plus(text, encoding=charset, errors="strict")
    except UnicodeError as exc:
        raise PushRejected("bad_encoding", _not_text(f"{what}'s percent-escapes", charset)) from exc


def _body_at(exc: UnicodeError) -> str:
    return f"body byte {exc.start + 1}" if isinstance(exc, UnicodeDecodeError) else "body"


def _not_text(where: str, charset: str) -> str:
    return (
        f"{where}: not {charset} text (a charset other than UTF-8 must be declared:"
        " Content-Type: application/x-www-form-urlencoded; charset=GBK)"
    )


def parse_single(body: bytes, now: float, charset: str = "utf-8") -> StatusReport:
    """A form-encoded single report; ``charset`` from the Content-Type (UTF-8 if none)."""
    pairs = _form_pairs(body, charset)
    try:
        return report_from_fields(_report_fields(pairs), now)
    except PushRejected as exc:
        semicolons = any(_SEMICOLON_FIELD.search(value) for _, value in pairs)
        if exc.reason not in ("missing_field", "bad_field") or not semicolons:
            raise
        # HTML 4 once allowed ";" between fields; the WHATWG parser (and Python's since
        # 3.9.2) does not, and a ";" may be a value's: say why the field is wrong.
        message = f"{exc}: fields are separated by '&', not ';' as in this body"
        raise PushRejected(exc.reason, message) from exc


_SEMICOLON_FIELD = re.compile(
    ";(" + "|".join(re.escape(name) for name in REPORT_FIELDS) + ")=", re.IGNORECASE
)
"""A report field's name after a ``;`` in a value: a body separated by ``;``."""


def _report_fields(pairs: Iterable[tuple[str, object]]) -> dict[str, object]:
    """A report's fields by their documented names, whatever the case they came in.

    Fields the receiver does not read are dropped, repeated or not (``orgCode``, ``to``
    and whatever Huawei adds). A field it reads may repeat with the same value; with
    two values it is refused: which one Huawei meant cannot be known.
    """
    fields: dict[str, object] = {}
    for given, value in pairs:
        name = REPORT_FIELDS.get(given.lower())
        if name is None:
            continue
        if _differs(fields.setdefault(name, value), value):
            raise PushRejected("bad_field", f"{name} is given more than once, differently")
    return fields


def _differs(kept: object, value: object) -> bool:
    """Two values of one field are different ("is" first: a NaN is not equal to itself)."""
    return kept is not value and kept != value


class _Repeated(dict[str, Any]):
    """A JSON object that names a member more than once: the last value of each, as
    ``json`` keeps it, and every pair as given (which one was meant cannot be known)."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    return members if len(members) == len(pairs) else _Repeated(pairs)


_JSON = json.JSONDecoder(object_pairs_hook=_object)


def _members(item: dict[str, Any]) -> Iterable[tuple[str, Any]]:
    """A JSON object's members, repeated ones included."""
    return item.pairs if isinstance(item, _Repeated) else item.items()


def _unrepeated(item: dict[str, Any], names: tuple[str, ...], reason: str = "bad_field") -> None:
    """PushRejected when one of ``names`` is given twice with different values."""
    if not isinstance(item, _Repeated):
        return
    given: dict[str, object] = {}
    for name, value in item.pairs:
        if name not in names:
            continue
        if _differs(given.setdefault(name, value), value):
            raise PushRejected(reason, f"{name} is given more than once, differently")


def _json_body(body: bytes, charset: str) -> Any:
    if not body.strip():
        raise PushRejected("bad_json", "the body is empty: expected JSON")
    # A leading byte order mark is allowed (RFC 8259 lets a parser ignore it).
    try:
        return _JSON.decode(body.decode("utf-8-sig" if charset == "utf-8" else charset))
    except UnicodeError as exc:
        raise PushRejected("bad_encoding", f"{_body_at(exc)}: not {charset} text") from exc
    except ValueError as exc:
        raise PushRejected("bad_json", f"body is not JSON: {exc}") from exc
    except RecursionError:  # [[[[... a thousand deep: the parser's stack, not a bug
        raise PushRejected("bad_json", "body is JSON nested too deeply") from None


def _each(items: list[object], parse: Callable[[object], T]) -> Parsed[T]:
    good: list[tuple[int, T]] = []
    bad: list[ItemProblem] = []
    for index, item in enumerate(items):
        try:
            good.append((index, parse(item)))
        except PushRejected as exc:
            bad.append(ItemProblem(index, exc.reason, str(exc)))
    return Parsed(good, bad)


def parse_batch(body: bytes, now: float, charset: str = "utf-8") -> Parsed[StatusReport]:
    """A JSON batch: the valid reports (with their index) and the problems of the rest."""
    doc = _json_body(body, charset)
    if isinstance(doc, dict):
        _unrepeated(doc, ("statusReportList",), "bad_shape")
    items = doc.get("statusReportList") if isinstance(doc, dict) else None
    if items is None and isinstance(doc, dict):  # its name in any case, as the fields'
        items = next((v for k, v in doc.items() if k.lower() == "statusreportlist"), None)
    if not isinstance(items, list):
        raise PushRejected("bad_shape", 'expected {"statusReportList": [...]}')
    if not items:
        raise PushRejected("empty_batch", "statusReportList is empty")
    if len(items) > MAX_BATCH_ITEMS:
        raise PushRejected(
            "too_many_items", f"{len(items)} reports; at most {MAX_BATCH_ITEMS} per batch"
        )

    def report(item: object) -> StatusReport:
        if not isinstance(item, dict):
            raise PushRejected("bad_shape", "a report must be a JSON object")
        return report_from_fields(_report_fields(_members(item)), now)

    return _each(items, report)


def _registration(item: object, template: str | None, now: float) -> SendRegistration:
    if not isinstance(item, dict):
        raise PushRejected("bad_shape", "a send must be a JSON object")
    batch_send = "smsMsgId" in item  # a batchSendSms result entry, else our own list form
    names = (
        ("templateId", "smsMsgId", "createTime", "originTo", "total")
        if batch_send
        else ("template_id", "message_id", "send_time", "mobile", "segments")
    )
    _unrepeated(item, names)
    template_id = (template if batch_send else None) or _text(item, names[0], 64)
    if not template_id:
        what = "templateId is required (query or body)" if batch_send else "template_id is required"
        raise PushRejected("missing_field", what)
    if not TEMPLATE_ID.match(template_id):
        raise PushRejected("bad_field", "template id: letters, digits, '_.:-', at most 64")
    message_id = _matching(item, names[1], _MESSAGE_ID, _ID_RULE, 50, required=True)
    sent = parse_time(_text(item, names[2], TIME_LENGTH, required=True), names[2])
    return SendRegistration(
        message_id,
        template_id,
        _plausible(sent, names[2], now, SEND_MAX_AGE_SECONDS),
        _matching(item, names[3], _MOBILE, "digits with an optional leading +", 21),
        _count(item, names[4]),
    )


def template_param(query: Mapping[str, Sequence[str]]) -> str | None:
    """The registration's template from the query (``templateId`` or ``template_id``, in
    any case), or None; PushRejected when it is given twice with different values."""
    given = {
        value
        for name, values in query.items()
        if name.lower() in ("templateid", "template_id")
        for value in values
        if value
    }
    if len(given) > 1:
        raise PushRejected(
            "bad_field", f"templateId is given more than once, differently: {_listed(given)}"
        )
    return given.pop() if given else None


def _listed(values: Iterable[str]) -> str:
    return ", ".join(repr(v[:64]) for v in sorted(values))


def parse_sends(
    body: bytes, template: str | None, now: float, charset: str = "utf-8"
) -> Parsed[SendRegistration]:
    """A ``batchSendSms`` response (plus templateId) or a JSON list of sends."""
    doc = _json_body(body, charset)
    if isinstance(doc, dict):
        _unrepeated(doc, ("result", "code", "templateId"), "bad_shape")
    if isinstance(doc, dict) and "result" in doc:
        items = doc["result"]
        given = doc.get("templateId")
        if template and isinstance(given, str) and given and given != template:
            raise PushRejected(
                "bad_field",
                f"templateId differs between the query and the body: {_listed((template, given))}",
            )
        template = template or (given if isinstance(given, str) else None)
        if not isinstance(items, list):
            raise PushRejected("bad_shape", "result must be a list")
        if doc.get("code") not in _SUCCESS_CODES:
            items = []  # the whole send failed: nothing was sent, nothing to register
        # With E000510 each recipient has its own status; only accepted ones were sent.
        items = [
            i for i in items if not isinstance(i, dict) or i.get("status", "000000") == "000000"
        ]
    elif isinstance(doc, list):
        items = doc
    else:
        raise PushRejected("bad_shape", "expected a batchSendSms response or a list of sends")
    if len(items) > MAX_SENDS:
        raise PushRejected("too_many_items", f"{len(items)} sends; at most {MAX_SENDS}")
    return _each(items, lambda item: _registration(item, template, now))


def template_from_extend(extend: str, mode: str, key: str) -> str | None:
    """The template named by a report's ``extend``, or None.

    Modes: ``extend`` (the whole value), ``extend_pair`` (``key=value`` among ``&;,``
    separated pairs), ``extend_json`` (a JSON object's field), ``none``.
    """
    value: object = None
    if not extend or mode == "none":
        return None
    if mode == "extend":
        value = extend
    elif mode == "extend_pair":
        for part in re.split(r"[&;,]", extend):
            name, sep, found = part.partition("=")
            if sep and name.strip() == key:
                value = found.strip()
                break
    elif mode == "extend_json":
        try:
            doc = json.loads(extend)
        except ValueError:
            return None
        value = doc.get(key) if isinstance(doc, dict) else None
    if isinstance(value, str) and TEMPLATE_ID.match(value):
        return value
    return None
