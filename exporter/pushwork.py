"""What each push path does: check, parse, attribute, write, and answer once written.

A single report, a batch of reports, or the operator's send registrations. Each step
returns the answer, or the :class:`Write` whose committed result builds it; a refusal
raises PushRejected. :class:`exporter.receiver.Receiver` runs every step in its one route
wrapper, which answers and counts what they raise.

A batch with some invalid items keeps its valid items: Huawei pushes at most once and
ignores the answer, so rejecting 49 good reports for one bad one would only lose data.
The answer is then 400 and says exactly which items were stored and which were not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

from exporter.config import ReceiverConfig
from exporter.errors import PushRejected
from exporter.pushattribution import Attributor
from exporter.pushauth import BasicCheck, PushGate
from exporter.pushbody import charset_of, decoded_body
from exporter.pushparse import (
    ItemProblem,
    Parsed,
    parse_batch,
    parse_sends,
    parse_single,
    template_param,
)
from exporter.pushstats import ReceiverStats
from exporter.pushstore import ReportStore, StatusReport, WriteDone, WriteResult
from exporter.pushtemplates import TemplateLimit
from exporter.routing import Request, Response, json_response

_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json"
_STORED = Response(200, b"", "text/plain")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Write:
    """A route's write to the store, and how its result becomes the answer."""

    operation: str
    """``reports`` or ``registrations``."""
    account: str
    start: Callable[[WriteDone], None]
    then: Callable[[WriteResult], Response]
    """May raise PushRejected."""


Step = Response | Write
Work = Callable[[Request, str | None], Step]
"""A route's work for a push account (None: the path names none): the answer, or the
write that decides it; may raise PushRejected."""


def problem(exc: PushRejected, **extra: Any) -> Response:
    """A push refusal: JSON with its reason and message (and any ``extra`` members)."""
    return json_response(exc.status, {"reason": exc.reason, "message": str(exc), **extra})


def _settle(parsed: Parsed[T], result: WriteResult) -> tuple[list[int], list[ItemProblem]]:
    """Indexes stored, and every problem: the parser's and the items the store refused."""
    unstorable = {parsed.items[i][0] for i in result.rejected}
    problems = [
        *parsed.problems,
        *(ItemProblem(i, "unstorable", "the item cannot be stored") for i in unstorable),
    ]
    stored = [i for i, _ in parsed.items if i not in unstorable]
    return stored, sorted(problems, key=lambda p: p.index)


class PushWork:
    """The work of the single, batch and registration routes."""

    def __init__(
        self,
        config: ReceiverConfig,
        store: ReportStore,
        stats: ReceiverStats,
        *,
        accounts: tuple[str, ...],
        templates: TemplateLimit,
        basic_auth: BasicCheck | None,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.stats = stats
        self._accounts = accounts
        self._templates = templates
        self._basic_auth = basic_auth
        self._clock = clock
        self.rekey(config)

    def rekey(self, config: ReceiverConfig) -> None:
        """Check and attribute with ``config``'s push credentials (signing keys, their
        accounts, the token) from the next request on."""
        self.gate = PushGate(config, clock=self._clock, basic_auth=self._basic_auth)
        self.attribution = Attributor(config, self._accounts, self._templates, self.stats)
        self.config = config

    def single(self, request: Request, account: str | None) -> Step:
        """One form-encoded report: 200 with an empty body once it is committed."""
        charset = charset_of(request, _FORM, {_JSON: self.config.batch_path})
        name = self.attribution.account(account, self.gate.report(request))
        report = parse_single(decoded_body(request), self._clock(), charset)

        def then(result: WriteResult) -> Response:
            self._count_reports(name, "single", result)
            if result.rejected:
                raise PushRejected("unstorable", "the report cannot be stored")
            return _STORED

        return self._reports_write([report], name, then)

    def batch(self, request: Request, account: str | None) -> Step:
        """A JSON batch of at most 50: valid items are stored; 400 lists any rejected ones."""
        charset = charset_of(request, _JSON, {_FORM: self.config.single_path})
        name = self.attribution.account(account, self.gate.report(request))
        parsed = parse_batch(decoded_body(request), self._clock(), charset)
        reports = [r for _, r in parsed.items]

        def then(result: WriteResult) -> Response:
            self._count_reports(name, "batch", result)
            stored, problems = _settle(parsed, result)
            if not problems:
                return _STORED
            self.stats.reject(p.reason for p in problems)
            total = len(stored) + len(problems)
            summary = PushRejected(
                "invalid_items",
                f"{len(problems)} of {total} reports rejected; the other {len(stored)} are stored",
            )
            return problem(
                summary,
                stored=stored,
                duplicates=result.duplicates,
                rejected=[p.to_wire() for p in problems],
            )

        return self._reports_write(reports, name, then) if reports else then(WriteResult())

    def sends(self, request: Request, account: str | None) -> Step:
        """Register sends: a ``batchSendSms`` response or a list; valid ones are stored."""
        charset = charset_of(request, _JSON)
        name = self.attribution.account(account, self.gate.registration(request))
        template = template_param(request.query)
        parsed = parse_sends(decoded_body(request), template, self._clock(), charset)
        sends = [self.attribution.admit(replace(s, account=name)) for _, s in parsed.items]

        def then(result: WriteResult) -> Response:
            with self.stats.lock:
                self.stats.registrations[name] += result.stored
                self.stats.duplicates["registration"] += result.duplicates
            stored, problems = _settle(parsed, result)
            body: dict[str, Any] = {"registered": result.stored, "duplicates": result.duplicates}
            if not problems:
                return json_response(200, body)
            self.stats.reject(p.reason for p in problems)
            return json_response(
                400,
                {
                    "reason": "invalid_items",
                    "message": (
                        f"{len(problems)} sends rejected; the other {len(stored)} are stored"
                    ),
                    "stored": stored,
                    "rejected": [p.to_wire() for p in problems],
                    **body,
                },
            )

        if not sends:
            return then(WriteResult())
        return Write("registrations", name, partial(self.store.register_then, sends), then)

    def _reports_write(
        self, reports: list[StatusReport], account: str, then: Callable[[WriteResult], Response]
    ) -> Write:
        attribute = self.attribution.attribute
        attributed = [attribute(r, account) for r in reports]
        return Write("reports", account, partial(self.store.add_reports_then, attributed), then)

    def _count_reports(self, account: str, kind: str, result: WriteResult) -> None:
        with self.stats.lock:
            self.stats.reports[(account, kind)] += result.stored
            self.stats.duplicates["report"] += result.duplicates
            self.stats.unattributed += result.unattributed
