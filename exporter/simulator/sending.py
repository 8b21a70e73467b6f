"""Huawei's sending API, ``POST /sms/batchSendSms/v1``: the form, its checks, the answer.

Pure functions. :func:`parse_send_form` reads the form body into a :class:`SendRequest`
or raises BadParameter carrying Huawei's code (``E000503`` a bad parameter, ``E200015``
over 500 numbers, ``E200028`` template variables that do not fit, ``E200030`` a template
the platform cannot send); a malformed or repeated number is refused alone, with its own
``status`` in the answer and ``E000510`` overall. :func:`count_segments` counts the SMS
parts of the rendered text (GSM 7-bit: 160, or 153 a part; otherwise UCS-2: 70, or 67).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from exporter.errors import BadParameter
from exporter.simulator.catalog import template_content
from exporter.simulator.scenario import Scenario
from exporter.simulator.template_specs import TemplateSpec

SEND_PATH = "/sms/batchSendSms/v1"
MAX_RECIPIENTS = 500
SUCCESS = "000000"
SOME_FAILED = "E000510"
BAD_PARAMETER = "E000503"
TOO_MANY_NUMBERS = "E200015"
BAD_VARIABLES = "E200028"
TEMPLATE_INACTIVE = "E200030"
DUPLICATE_NUMBER = "E200041"
DESCRIPTIONS = {
    SUCCESS: "Success",
    SOME_FAILED: "The SMS fails to be sent. Check the status of each number.",
    BAD_PARAMETER: "The parameter format is incorrect.",
    TOO_MANY_NUMBERS: "The number of SMS messages to be sent exceeds the upper limit.",
    BAD_VARIABLES: "Template variable verification failed.",
    TEMPLATE_INACTIVE: "The template is not activated.",
}
FORM = "application/x-www-form-urlencoded"
_NUMBER = re.compile(r"^\+[1-9][0-9]{6,14}$")
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_SIZED = re.compile(r"^(NUM|TXT)_([0-9]{1,3})$")
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = set("^{}\\[~]|€\f")
_LIMITS = {"from": 32, "statusCallback": 255, "extend": 128, "signature": 64}


@dataclass(frozen=True, slots=True)
class Recipient:
    """One number of ``to``: as given, its digits, and its status (``000000``: accepted)."""

    origin_to: str
    mobile: int
    status: str


@dataclass(frozen=True, slots=True)
class SendRequest:
    """A checked ``batchSendSms`` form."""

    sender: str
    template: int
    """The template's index in the scenario."""
    recipients: tuple[Recipient, ...]
    segments: int
    status_callback: str | None
    extend: str | None
    signature: str | None

    @property
    def accepted(self) -> list[Recipient]:
        """The recipients a message is sent to."""
        return [r for r in self.recipients if r.status == SUCCESS]


def _refuse(code: str, detail: str) -> BadParameter:
    return BadParameter(f"{DESCRIPTIONS[code]} {detail}", code)


def _field(params: Mapping[str, list[str]], name: str) -> str | None:
    """The parameter's one value; None when absent or empty."""
    values = params.get(name)
    if not values or values == [""]:
        return None
    if len(values) != 1:
        raise _refuse(BAD_PARAMETER, f"{name}: give it once")
    value = values[0]
    limit = _LIMITS.get(name)
    if limit is not None and len(value) > limit:
        raise _refuse(BAD_PARAMETER, f"{name}: at most {limit} characters")
    if not value.isprintable():
        raise _refuse(BAD_PARAMETER, f"{name}: control characters are not allowed")
    return value


def _required(params: Mapping[str, list[str]], name: str) -> str:
    value = _field(params, name)
    if value is None:
        raise _refuse(BAD_PARAMETER, f"{name}: required")
    return value


def _recipients(text: str) -> tuple[Recipient, ...]:
    numbers = [n.strip() for n in text.split(",")]
    if len(numbers) > MAX_RECIPIENTS:
        raise _refuse(TOO_MANY_NUMBERS, f"to: {len(numbers)} numbers, at most {MAX_RECIPIENTS}")
    seen: set[int] = set()
    out = []
    for number in numbers:
        if not _NUMBER.match(number):
            out.append(Recipient(number, 0, BAD_PARAMETER))
            continue
        digits = int(number[1:])
        out.append(Recipient(number, digits, DUPLICATE_NUMBER if digits in seen else SUCCESS))
        seen.add(digits)
    return tuple(out)


def _template(scenario: Scenario, template_id: str, hidden: frozenset[str]) -> int:
    for index, spec in enumerate(scenario.templates):
        if spec.template_id == template_id and template_id not in hidden:
            if spec.flow_status != "Adopted":
                raise _refuse(
                    TEMPLATE_INACTIVE,
                    f"templateId: the template is {spec.flow_status}, not Adopted",
                )
            return index
    raise _refuse(TEMPLATE_INACTIVE, "templateId: no such template")


def _parameters(text: str | None) -> list[str]:
    if text is None:
        return []
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _refuse(BAD_PARAMETER, 'templateParas: expected a JSON array of strings, e.g. ["1"]')
    return value


def render(content: str, values: list[str]) -> str:
    """The template's text with its variables filled; E200028 when they do not fit."""
    names = _VARIABLE.findall(content)
    if len(values) != len(names):
        raise _refuse(
            BAD_VARIABLES,
            f"templateParas: the template has {len(names)} variables, {len(values)} given",
        )
    for i, (name, value) in enumerate(zip(names, values, strict=True)):
        sized = _SIZED.match(name)
        if not value:
            raise _refuse(BAD_VARIABLES, f"templateParas[{i}]: empty")
        if sized is not None:
            kind, size = sized.group(1), int(sized.group(2))
            if len(value) > size:
                raise _refuse(BAD_VARIABLES, f"templateParas[{i}]: at most {size} characters")
            if kind == "NUM" and not (value.isascii() and value.isdigit()):
                raise _refuse(BAD_VARIABLES, f"templateParas[{i}]: expected digits")
    filled = iter(values)
    return _VARIABLE.sub(lambda _: next(filled), content)


def count_segments(text: str) -> int:
    """SMS parts of ``text``: GSM 7-bit 160 (153 a part of a long one), else UCS-2 70 (67)."""
    if all(c in _GSM_BASIC or c in _GSM_EXTENDED for c in text):
        units = len(text) + sum(1 for c in text if c in _GSM_EXTENDED)
        single, part = 160, 153
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, part = 70, 67
    return 1 if units <= single else min(255, math.ceil(units / part))


def message_text(spec: TemplateSpec, values: list[str], signature: str | None) -> str:
    """What the recipient reads: a mainland message starts with its 【signature】."""
    body = render(template_content(spec), values)
    return f"【{signature or spec.sign_name}】{body}" if spec.region == "cn" else body


def parse_send_form(
    body: bytes, content_type: str, scenario: Scenario, hidden: frozenset[str] = frozenset()
) -> SendRequest:
    """Check a ``batchSendSms`` form; BadParameter names the parameter, with Huawei's code."""
    if content_type.split(";")[0].strip().lower() != FORM:
        raise _refuse(BAD_PARAMETER, f"Content-Type: expected {FORM}")
    try:
        params = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise _refuse(BAD_PARAMETER, "body: expected a UTF-8 form") from None
    sender = _required(params, "from")
    to = _required(params, "to")
    template = _template(scenario, _required(params, "templateId"), hidden)
    values = _parameters(_field(params, "templateParas"))
    callback = _field(params, "statusCallback")
    if callback is not None:
        parts = urlsplit(callback)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _refuse(BAD_PARAMETER, "statusCallback: expected an http or https URL")
    extend = _field(params, "extend")
    signature = _field(params, "signature")
    recipients = _recipients(to)
    spec = scenario.templates[template]
    return SendRequest(
        sender=sender,
        template=template,
        recipients=recipients,
        segments=count_segments(message_text(spec, values, signature)),
        status_callback=callback,
        extend=extend,
        signature=signature,
    )


def send_answer(request: SendRequest, created: str, message_ids: list[str]) -> dict[str, Any]:
    """Huawei's answer: one result per number given; ``message_ids`` for the accepted ones."""
    ids = iter(message_ids)
    result: list[dict[str, Any]] = []
    for recipient in request.recipients:
        item: dict[str, Any] = {
            "originTo": recipient.origin_to,
            "createTime": created,
            "from": request.sender,
            "smsMsgId": next(ids) if recipient.status == SUCCESS else "",
            "status": recipient.status,
        }
        if recipient.status == SUCCESS:
            item["total"] = request.segments
        result.append(item)
    code = SUCCESS if all(r.status == SUCCESS for r in request.recipients) else SOME_FAILED
    return {"code": code, "description": DESCRIPTIONS[code], "result": result}
