"""The sending-details view: the console's "Viewing Sending Details" inside the exporter.

The form is parsed and validated by pure functions (time is a parameter); the query runs
through the account's own upstream source, one at a time per account. The HTML and text
renderings live in :mod:`exporter.details_page`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from exporter.contract import whole_number
from exporter.details_fetch import Scan, fetch_query, scan_status_code
from exporter.errors import BadParameter, DetailsBusy, FormError, UpstreamError
from exporter.fetch import DetailsSource, snapshot_of
from exporter.moves import MovedMinutes, MovingSource
from exporter.records import MOBILE_PATTERN, DetailsPage, DetailsQuery, SendResult
from exporter.stats import RequestStats
from exporter.templates import SmsTemplate
from exporter.timestamps import format_rfc3339, parse_duration, parse_rfc3339

LOOKBACK_SECONDS = 60 * 86400.0
"""How far back a query may start: the console keeps sending details 60 days (EU page)."""
PAGE_SIZE = 10
MAX_PAGE = 100_000
QUICK_RANGES: tuple[tuple[str, str], ...] = (("1h", "last 1 hour"), ("24h", "last 24 hours"))
RESULTS = ("all", "success", "failed", "sending")
FORM_FIELDS = (
    *("account", "template", "mobile", "result", "status_code"),
    *("last", "start", "end", "page"),
)
TEMPLATE_CACHE_SECONDS = 600.0
_LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?$")
_STATUS_CODE = re.compile(r"^[A-Za-z0-9:_.-]{1,32}$")


def _span_text(seconds: float) -> str:
    if seconds >= 2 * 86400 and seconds % 86400 == 0:
        return f"{seconds / 86400:g} days"
    return f"{seconds / 3600:.4g} h"


@dataclass(frozen=True, slots=True)
class DetailsFilter:
    """A validated query of the view: the console's filters, resolved times, a page."""

    account: str
    start: float
    end: float
    template_id: str | None = None
    mobile: str | None = None
    result: SendResult | None = None
    page: int = 1
    last: str = ""
    status_code: str | None = None
    """Kept from the records read (the platform cannot filter by it): see details_fetch."""

    def query(self) -> DetailsQuery:
        """The contract query for this page."""
        return DetailsQuery(
            start_time=self.start,
            end_time=self.end,
            template_id=self.template_id,
            mobile=self.mobile,
            send_result=self.result,
            offset=(self.page - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
        )

    def link_params(self, page: int) -> dict[str, str]:
        """Form parameters of ``page`` of the same query, times fixed so pages agree."""
        params = {"account": self.account}
        if self.template_id is not None:
            params["template"] = self.template_id
        if self.mobile is not None:
            params["mobile"] = self.mobile
        params["result"] = self.result.value if self.result is not None else "all"
        if self.status_code is not None:
            params["status_code"] = self.status_code
        params["start"] = format_rfc3339(self.start)
        params["end"] = format_rfc3339(self.end)
        params["page"] = str(page)
        return params


def parse_time(text: str, label: str) -> float:
    """RFC 3339, or ``2026-11-26 10:00:00`` (the view's own format) read as UTC; else FormError."""
    value = text.strip()
    if _LOCAL_TIME.match(value):
        value = value.replace(" ", "T") + ("" if value.count(":") == 2 else ":00") + "Z"
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise FormError(
            f"{label}: not a time; use 2026-11-26 10:00:00 (UTC)"
            " or RFC 3339 (2026-11-26T10:00:00Z)."
        ) from None


def _resolve_times(
    form: Mapping[str, str], now: float, max_span: float, lookback: float
) -> tuple[float, float, str]:
    last, start_text, end_text = (form.get(k, "").strip() for k in ("last", "start", "end"))
    if last:
        try:
            span = parse_duration(last)
        except ValueError:
            raise FormError("Quick range: use a duration such as 1h or 24h.") from None
        if span <= 0:
            raise FormError("Quick range: use a duration such as 1h or 24h.")
        end = float(int(now))
        start = end - span
    elif start_text or end_text:
        if not (start_text and end_text):
            raise FormError("Sending time: give both a start and an end, or choose a quick range.")
        start, end = parse_time(start_text, "Start"), parse_time(end_text, "End")
    else:
        end = float(int(now))
        start, last = end - 3600, "1h"
    if end <= start:
        raise FormError("Sending time: the end must be after the start.")
    if end - start > max_span:
        raise FormError(
            f"Sending time: the range spans {_span_text(end - start)}; "
            f"a query may span at most {_span_text(max_span)}."
        )
    if start < now - lookback:
        raise FormError(
            f"Sending time: the start is older than {_span_text(lookback)}; "
            f"sending details are kept {_span_text(lookback)}."
        )
    return start, end, last


def _quoted(text: str) -> str:
    """What the visitor typed, quoted and cut at 60 characters (a URL may carry 64 KiB)."""
    return repr(text) if len(text) <= 60 else f"{text[:60]!r}..."


def _resolve_template(text: str, account: str, templates: Sequence[SmsTemplate]) -> str | None:
    if not text:
        return None
    for template in templates:
        if text == template.template_id:
            return template.template_id
    named = [t for t in templates if t.template_name == text]
    if len(named) == 1:
        return named[0].template_id
    raise FormError(f"Template: account {account} has no template {_quoted(text)}.")


def _resolve_account(
    text: str, template: str, accounts: Sequence[str], templates: Callable[[str], list[SmsTemplate]]
) -> str:
    if text:
        if text not in accounts:
            raise FormError(
                f"Account: no account {_quoted(text)}; choose one of {', '.join(accounts)}."
            )
        return text
    if template and len(accounts) > 1:
        for account in accounts:
            if any(template in (t.template_id, t.template_name) for t in templates(account)):
                return account
    return accounts[0]


def parse_filter(
    form: Mapping[str, str],
    *,
    now: float,
    accounts: Sequence[str],
    templates: Callable[[str], list[SmsTemplate]],
    max_span: float,
    lookback: float = LOOKBACK_SECONDS,
) -> DetailsFilter:
    """Validate the form's fields into a filter; FormError with a message for people."""
    template_text = form.get("template", "").strip()
    account = _resolve_account(form.get("account", "").strip(), template_text, accounts, templates)
    mobile = form.get("mobile", "").strip().replace(" ", "") or None
    if mobile is not None and not MOBILE_PATTERN.fullmatch(mobile):
        raise FormError(
            "Mobile number: use 7 to 15 digits with the country code and no '+', e.g. 4402000000."
        )
    result_text = form.get("result", "").strip().lower() or "all"
    if result_text not in RESULTS:
        raise FormError("Send result: choose all, success, failed or sending.")
    status_code = form.get("status_code", "").strip() or None
    if status_code is not None and not _STATUS_CODE.match(status_code):
        raise FormError("Status code: up to 32 letters, digits and : _ . - (e.g. MK:0001).")
    page = whole_number(form.get("page", "").strip() or "1", MAX_PAGE)
    if page is None or page < 1:
        raise FormError(f"Page: expected a whole number from 1 to {MAX_PAGE}.")
    start, end, last = _resolve_times(form, now, max_span, lookback)
    return DetailsFilter(
        account=account,
        start=start,
        end=end,
        template_id=_resolve_template(template_text, account, templates(account)),
        mobile=mobile,
        result=None if result_text == "all" else SendResult(result_text),
        page=page,
        last=last,
        status_code=status_code,
    )


def fetch_page(
    source: DetailsSource,
    details: DetailsFilter,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[DetailsPage, Scan | None]:
    """The filter's page, and how far a status-code filter read (None without one)."""
    if details.status_code is not None:
        return scan_status_code(source, details.query(), details.status_code, sleep=sleep)
    return fetch_query(source, details.query(), sleep=sleep), None


class OneQueryAtATime:
    """A source whose sending-details queries run one at a time (the console's rule).

    The poller and the details view of one account share it, so neither trips the
    platform's "a query is already running" refusal.
    """

    def __init__(self, source: DetailsSource) -> None:
        self.source = source
        self.lock = threading.Lock()

    @property
    def stats(self) -> RequestStats:
        """The wrapped source's request accounting."""
        return self.source.stats

    def query(self, query: DetailsQuery) -> DetailsPage:
        """One page, after any running query of this account has finished."""
        with self.lock:
            return self.source.query(query)

    def list_templates(self) -> list[SmsTemplate]:
        """The account's templates (not a sending-details query: no lock)."""
        return self.source.list_templates()

    def snapshot(self) -> AbstractContextManager[object]:
        """The source's snapshot, if it has them (a store's reads)."""
        return snapshot_of(self.source)

    def moved_since(self, cursor: object) -> MovedMinutes:
        """The source's moved minutes, if its records move (a store's); none otherwise."""
        if isinstance(self.source, MovingSource):
            return self.source.moved_since(cursor)
        return MovedMinutes(set(), None)


@dataclass(slots=True)
class TemplateCatalog:
    """Each account's template list, refreshed at most every ``ttl`` seconds."""

    sources: Mapping[str, DetailsSource]
    monotonic: Callable[[], float] = time.monotonic
    ttl: float = TEMPLATE_CACHE_SECONDS
    _cache: dict[str, tuple[float, list[SmsTemplate]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, account: str) -> list[SmsTemplate]:
        """The account's templates, sorted by name; UpstreamError when unlisted."""
        now = self.monotonic()
        with self._lock:
            cached = self._cache.get(account)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        listed = sorted(self.sources[account].list_templates(), key=lambda t: t.template_name)
        with self._lock:
            self._cache[account] = (now, listed)
        return listed


@dataclass(frozen=True, slots=True)
class DetailsOutcome:
    """What one visit of the view produced, for rendering."""

    status: int
    form: Mapping[str, str]
    accounts: Sequence[str]
    templates: Sequence[SmsTemplate] = ()
    details: DetailsFilter | None = None
    page: DetailsPage | None = None
    message: str = ""
    scan: Scan | None = None


class DetailsQueries:
    """Runs validated detail queries per account, refusing a second concurrent one."""

    def __init__(
        self,
        sources: Mapping[str, DetailsSource],
        *,
        max_span: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sources = sources
        self.accounts = list(sources)
        self.max_span = max_span
        self.catalog = TemplateCatalog(sources)
        self._clock = clock
        self._sleep = sleep
        self._running = {name: threading.Lock() for name in sources}

    def run(self, form: Mapping[str, str]) -> DetailsOutcome:
        """Validate ``form`` and, when any filter is given, query one page."""
        form = {k: v for k, v in form.items() if k in FORM_FIELDS}
        first = self.accounts[0]
        try:
            if not form:
                return DetailsOutcome(200, form, self.accounts, self.catalog(first))
            details = parse_filter(
                form,
                now=self._clock(),
                accounts=self.accounts,
                templates=self.catalog,
                max_span=self.max_span,
            )
        except FormError as exc:
            return DetailsOutcome(400, form, self.accounts, self._templates(form), message=str(exc))
        except UpstreamError as exc:
            return DetailsOutcome(502, form, self.accounts, message=_upstream_message(exc))
        templates = self.catalog(details.account)
        try:
            page, scan = self._query(details)
        except DetailsBusy as exc:
            return DetailsOutcome(429, form, self.accounts, templates, details, message=str(exc))
        except BadParameter as exc:  # a filter the store cannot answer (a number, keyless)
            return DetailsOutcome(400, form, self.accounts, templates, details, message=str(exc))
        except UpstreamError as exc:
            message = _upstream_message(exc)
            return DetailsOutcome(502, form, self.accounts, templates, details, message=message)
        return DetailsOutcome(200, form, self.accounts, templates, details, page, scan=scan)

    def _templates(self, form: Mapping[str, str]) -> list[SmsTemplate]:
        account = form.get("account", "")
        try:
            return self.catalog(account if account in self.sources else self.accounts[0])
        except UpstreamError:
            return []

    def _query(self, details: DetailsFilter) -> tuple[DetailsPage, Scan | None]:
        running = self._running[details.account]
        if not running.acquire(blocking=False):
            raise DetailsBusy(
                f"Another sending-details query for account {details.account} is still "
                "running; the platform answers one query at a time. Try again when it "
                "has finished."
            )
        try:
            return fetch_page(self.sources[details.account], details, sleep=self._sleep)
        finally:
            running.release()


SERVING_HINT = "The exporter keeps serving; try again in a moment."
"""What the page adds to a platform failure; the terminal, with no exporter, says less."""


def _upstream_message(exc: UpstreamError) -> str:
    return (
        f"The Message & SMS platform did not answer the query ({exc.reason}: {exc}). "
        + SERVING_HINT
    )
