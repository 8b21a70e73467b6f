"""The status-report receiver: Huawei's single and batch pushes, and send registrations.

Parsing is pure (bytes in, reports or a :class:`PushRejected` with a bounded reason out);
:class:`Receiver` adds the signature check, the store and the counting, and
:class:`PushCollector` turns the counts into ``msgsms_push_*`` metric families.

A batch with some invalid items keeps its valid items: Huawei pushes at most once and
ignores the answer, so rejecting 49 good reports for one bad one would only lose data.
The answer is then 400 and says exactly which items were stored and which were not.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from exporter.config import ACCOUNT_PLACEHOLDER, ReceiverConfig
from exporter.contract import (
    DETAILS_PATH,
    BadParameter,
    QueryLimits,
    error_to_wire,
    page_to_wire,
    parse_details_query,
)
from exporter.errors import PushRejected, SignatureError, StoreUnavailable, UpstreamError
from exporter.pushstore import ReportStore, SendRegistration, StatusReport, WriteResult
from exporter.signing import verify_request
from exporter.timestamps import parse_rfc3339
from exporter.web import Request, Response, Route, Router

MAX_BATCH_ITEMS = 50
MAX_SENDS = 10_000
ACK_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_TEMPLATE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json"
_SUCCESS_CODES = ("000000",)


@dataclass(frozen=True, slots=True)
class ItemProblem:
    """One rejected item of a batch: its index, reason label and message."""

    index: int
    reason: str
    message: str

    def to_wire(self) -> dict[str, Any]:
        """The item as the 400 answer lists it."""
        return {"index": self.index, "reason": self.reason, "message": self.message}


# -- parsing (pure) ---------------------------------------------------------------


def _field(fields: Mapping[str, object], name: str, *, limit: int, required: bool) -> str:
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
    return text


def _count(fields: Mapping[str, object], name: str) -> int:
    text = _field(fields, name, limit=3, required=False)
    if not text:
        return 1
    if not text.isdigit() or not 1 <= int(text) <= 255:
        raise PushRejected("bad_field", f"{name} must be an integer from 1 to 255")
    return int(text)


def _time(text: str, name: str) -> float:
    try:
        return parse_rfc3339(text if text[-1:] in "Zz" or "+" in text[10:] else text + "Z")
    except ValueError as exc:
        raise PushRejected("bad_field", f"{name} is not a UTC timestamp: {exc}") from exc


def report_from_fields(fields: Mapping[str, object]) -> StatusReport:
    """Validate one report's fields (form or JSON); PushRejected names the problem."""
    message_id = _field(fields, "smsMsgId", limit=64, required=True)
    status = _field(fields, "status", limit=32, required=True).strip().upper()
    total, sequence = _count(fields, "total"), _count(fields, "sequence")
    if sequence > total:
        raise PushRejected("bad_field", "sequence is greater than total")
    update = _field(fields, "updateTime", limit=40, required=False)
    return StatusReport(
        message_id=message_id,
        status=status,
        sequence=sequence,
        total=total,
        status_desc=_field(fields, "statusDesc", limit=256, required=False),
        update_time=_time(update, "updateTime") if update else None,
        source=_field(fields, "source", limit=8, required=False),
        extend=_field(fields, "extend", limit=256, required=False),
    )


def parse_single(body: bytes) -> StatusReport:
    """A form-encoded single report."""
    try:
        text = body.decode("ascii")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise PushRejected("bad_encoding", "body is not application/x-www-form-urlencoded") from exc
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise PushRejected("bad_field", f"{name} is given more than once")
        fields[name] = value
    return report_from_fields(fields)


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PushRejected("bad_encoding", "body is not UTF-8") from exc
    except ValueError as exc:
        raise PushRejected("bad_json", f"body is not JSON: {exc}") from exc


def parse_batch(body: bytes) -> tuple[list[tuple[int, StatusReport]], list[ItemProblem]]:
    """A JSON batch: the valid reports (with their index) and the problems of the rest."""
    doc = _json_body(body)
    items = doc.get("statusReportList") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise PushRejected("bad_shape", 'expected {"statusReportList": [...]}')
    if not items:
        raise PushRejected("empty_batch", "statusReportList is empty")
    if len(items) > MAX_BATCH_ITEMS:
        raise PushRejected(
            "too_many_items", f"{len(items)} reports; at most {MAX_BATCH_ITEMS} per batch"
        )
    good: list[tuple[int, StatusReport]] = []
    bad: list[ItemProblem] = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise PushRejected("bad_shape", "a report must be a JSON object")
            good.append((index, report_from_fields(item)))
        except PushRejected as exc:
            bad.append(ItemProblem(index, exc.reason, str(exc)))
    return good, bad


def _registration(item: object, template: str | None) -> SendRegistration:
    if not isinstance(item, dict):
        raise PushRejected("bad_shape", "a send must be a JSON object")
    if "smsMsgId" in item:  # a batchSendSms result entry
        template_id = template or _field(item, "templateId", limit=64, required=False)
        if not template_id:
            raise PushRejected("missing_field", "templateId is required (query or body)")
        message_id = _field(item, "smsMsgId", limit=64, required=True)
        sent = _field(item, "createTime", limit=40, required=True)
        mobile = _field(item, "originTo", limit=32, required=False)
        segments = _count(item, "total")
    else:
        template_id = _field(item, "template_id", limit=64, required=True)
        message_id = _field(item, "message_id", limit=64, required=True)
        sent = _field(item, "send_time", limit=40, required=True)
        mobile = _field(item, "mobile", limit=32, required=False)
        segments = _count(item, "segments")
    if not _TEMPLATE_ID.match(template_id):
        raise PushRejected("bad_field", "template id: letters, digits, '_.:-', at most 64")
    return SendRegistration(message_id, template_id, _time(sent, "send time"), mobile, segments)


def parse_sends(
    body: bytes, template: str | None
) -> tuple[list[tuple[int, SendRegistration]], list[ItemProblem]]:
    """A ``batchSendSms`` response (plus templateId) or a JSON list of sends."""
    doc = _json_body(body)
    if isinstance(doc, dict) and "result" in doc:
        code = doc.get("code")
        items = doc["result"]
        template = template or (
            doc.get("templateId") if isinstance(doc.get("templateId"), str) else None
        )
        if not isinstance(items, list):
            raise PushRejected("bad_shape", "result must be a list")
        if code not in (*_SUCCESS_CODES, "E000510"):
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
    good: list[tuple[int, SendRegistration]] = []
    bad: list[ItemProblem] = []
    for index, item in enumerate(items):
        try:
            good.append((index, _registration(item, template)))
        except PushRejected as exc:
            bad.append(ItemProblem(index, exc.reason, str(exc)))
    return good, bad


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
    if isinstance(value, str) and _TEMPLATE_ID.match(value):
        return value
    return None


def _media_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


# -- counting ---------------------------------------------------------------------


def _observe(
    buckets: dict[str, list[int]], sums: dict[str, float], key: str, seconds: float
) -> None:
    counts = buckets.setdefault(key, [0] * (len(ACK_BUCKETS) + 1))
    counts[next((i for i, b in enumerate(ACK_BUCKETS) if seconds <= b), len(ACK_BUCKETS))] += 1
    sums[key] = sums.get(key, 0.0) + seconds


def _histogram(
    family: HistogramMetricFamily, buckets: dict[str, list[int]], sums: dict[str, float]
) -> None:
    for key, counts in sorted(buckets.items()):
        running, cumulative = 0, []
        for bound, count in zip([*ACK_BUCKETS, float("inf")], counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else str(bound), running))
        family.add_metric([key], cumulative, sums[key])


@dataclass(slots=True)
class ReceiverStats:
    """What the receiver did, by endpoint and reason; read by :class:`PushCollector`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    reports: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    unattributed: int = 0
    registrations: int = 0
    ack_buckets: dict[str, list[int]] = field(default_factory=dict)
    ack_sums: dict[str, float] = field(default_factory=dict)
    write_buckets: dict[str, list[int]] = field(default_factory=dict)
    write_sums: dict[str, float] = field(default_factory=dict)
    store_errors: Counter[str] = field(default_factory=Counter)
    last_push: dict[tuple[str, str], float] = field(default_factory=dict)
    """(account, ``report`` | ``registration``) → when one was last accepted."""

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        with self.lock:
            self.requests[(endpoint, str(status))] += 1
            _observe(self.ack_buckets, self.ack_sums, endpoint, seconds)

    def write(self, operation: str, seconds: float, *, failed: bool) -> None:
        """Count one store write (``reports`` or ``registrations``) and how long it took."""
        with self.lock:
            _observe(self.write_buckets, self.write_sums, operation, seconds)
            if failed:
                self.store_errors[operation] += 1

    def reject(self, reasons: Iterable[str]) -> None:
        """Count rejected requests or items by reason."""
        with self.lock:
            self.rejected.update(reasons)


class PushCollector:
    """The receiver's counters.

    msgsms_push_requests_total{endpoint="batch",code="200"} 12
    msgsms_push_rejected_total{reason="missing_field"} 1
    msgsms_push_reports_total{kind="batch"} 598
    """

    def __init__(self, stats: ReceiverStats, store: ReportStore) -> None:
        self._stats = stats
        self._store = store

    def describe(self) -> list[Metric]:
        """The families, without reading anything."""
        return self._families()

    def collect(self) -> list[Metric]:
        """Fresh families from the counts."""
        return self._families()

    def _families(self) -> list[Metric]:
        s = self._stats
        requests = CounterMetricFamily(
            "msgsms_push_requests",
            "Push and registration requests answered, by endpoint and HTTP code.",
            labels=["endpoint", "code"],
        )
        rejected = CounterMetricFamily(
            "msgsms_push_rejected",
            "Rejected push requests, and rejected items of batches, by reason.",
            labels=["reason"],
        )
        reports = CounterMetricFamily(
            "msgsms_push_reports",
            "Status reports stored (each message segment once), by push kind.",
            labels=["kind"],
        )
        duplicates = CounterMetricFamily(
            "msgsms_push_duplicates",
            "Reports or registrations received again and ignored.",
            labels=["kind"],
        )
        unattributed = CounterMetricFamily(
            "msgsms_push_unattributed_reports",
            'Reports stored under template="unknown": not registered, no template in extend.',
        )
        registrations = CounterMetricFamily(
            "msgsms_push_registrations", "Send registrations stored."
        )
        commits = CounterMetricFamily(
            "msgsms_push_store_commits", "Store transactions committed (group commit)."
        )
        pruned = CounterMetricFamily(
            "msgsms_push_store_pruned_messages", "Messages deleted after the retention."
        )
        ack = HistogramMetricFamily(
            "msgsms_push_ack_duration_seconds",
            "Time from a push request's routing to its answer (includes the commit).",
            labels=["endpoint"],
        )
        writes = HistogramMetricFamily(
            "msgsms_push_store_write_duration_seconds",
            "Time a request waited for its write to be committed (group commit included).",
            labels=["operation"],
        )
        errors = CounterMetricFamily(
            "msgsms_push_store_errors",
            "Store writes that failed (the request was answered 503, nothing stored).",
            labels=["operation"],
        )
        size = GaugeMetricFamily(
            "msgsms_push_store_size_bytes",
            "Size of the push store (the database), measured about once a minute.",
        )
        last_report = GaugeMetricFamily(
            "msgsms_push_last_report_timestamp_seconds",
            "When this process last accepted a status report for the account (start if none).",
            labels=["account"],
        )
        last_registration = GaugeMetricFamily(
            "msgsms_push_last_registration_timestamp_seconds",
            "When this process last accepted a send registration for the account (start if none).",
            labels=["account"],
        )
        with s.lock:
            for (endpoint, code), n in sorted(s.requests.items()):
                requests.add_metric([endpoint, code], n)
            for reason, n in sorted(s.rejected.items()):
                rejected.add_metric([reason], n)
            for kind in ("single", "batch"):
                reports.add_metric([kind], s.reports[kind])
            for kind in ("report", "registration"):
                duplicates.add_metric([kind], s.duplicates[kind])
            unattributed.add_metric([], s.unattributed)
            registrations.add_metric([], s.registrations)
            _histogram(ack, s.ack_buckets, s.ack_sums)
            _histogram(writes, s.write_buckets, s.write_sums)
            for operation in ("reports", "registrations"):
                errors.add_metric([operation], s.store_errors[operation])
            for (account, kind), at in sorted(s.last_push.items()):
                (last_report if kind == "report" else last_registration).add_metric([account], at)
        commits.add_metric([], self._store.commits)
        pruned.add_metric([], self._store.pruned)
        size.add_metric([], self._store.size_bytes)
        return [
            requests,
            rejected,
            reports,
            duplicates,
            unattributed,
            registrations,
            commits,
            pruned,
            ack,
            writes,
            errors,
            size,
            last_report,
            last_registration,
        ]


# -- HTTP -------------------------------------------------------------------------


def _json_response(status: int, body: object) -> Response:
    return Response(status, json.dumps(body).encode() + b"\n", "application/json")


def _problem(exc: PushRejected, **extra: Any) -> Response:
    body = {"reason": exc.reason, "message": str(exc), **extra}
    return _json_response(exc.status, body)


class Receiver:
    """The push routes: check, parse, attribute, store, count; never raises to the server."""

    def __init__(
        self,
        config: ReceiverConfig,
        store: ReportStore,
        *,
        clock: Callable[[], float] = time.time,
        limits: QueryLimits = QueryLimits(),  # noqa: B008 - frozen, never mutated
        accounts: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.store = store
        self.stats = ReceiverStats()
        self._clock = clock
        self._limits = limits
        self._secrets = {k.access_key: k.secret_key for k in config.signing_keys}
        self._accounts = accounts
        self._key_accounts = dict(config.key_accounts)
        started = clock()
        for name in accounts or ("",):
            for kind in ("report", "registration"):
                self.stats.last_push[(name, kind)] = started

    def _push_routes(self) -> list[tuple[str, Route]]:
        """Each push path with its handler; a path with ``{account}`` once per account."""
        routes: list[tuple[str, Route]] = []
        handlers = (
            (self.config.single_path, self.single),
            (self.config.batch_path, self.batch),
            (self.config.sends_path, self.sends),
        )
        for path, handler in handlers:
            if ACCOUNT_PLACEHOLDER not in path:
                routes.append((path, handler))
                continue
            for name in self._accounts:
                routes.append((path.replace(ACCOUNT_PLACEHOLDER, name), _bound(handler, name)))
        return routes

    def push_paths(self) -> tuple[str, ...]:
        """Every path a push or registration is accepted at."""
        return tuple(path for path, _ in self._push_routes())

    def add_routes(self, router: Router) -> None:
        """Serve the single, batch and registration paths (POST), and the stored
        sending details (GET, the project's contract) when ``details_api`` is on."""
        for path, route in self._push_routes():
            router.add(path, route, methods=("POST",))
        if self.config.details_api:
            router.add(DETAILS_PATH, self.details)

    def details(self, request: Request) -> Response:
        """``GET /api/v1/send-details`` answered from the store, as the simulator does."""
        started = time.perf_counter()
        try:
            query = parse_details_query(request.query, self._clock(), self._limits)
            page = self.store.query(query)
        except BadParameter as exc:
            self.stats.reject(["bad_parameter"])
            body = error_to_wire(exc.error_code, str(exc))
            return self._answer("details", started, _json_response(400, body))
        except UpstreamError as exc:
            self.stats.reject(["store_unavailable"])
            body = error_to_wire("MSGSMS.0503", str(exc))
            return self._answer("details", started, _json_response(503, body))
        return self._answer("details", started, _json_response(200, page_to_wire(query, page)))

    def collector(self) -> PushCollector:
        """The collector of this receiver's counters."""
        return PushCollector(self.stats, self.store)

    def _check(self, request: Request, media_type: str, account: str | None) -> str:
        """Content type and signature; the push account the request is for."""
        if _media_type(request.headers) != media_type:
            raise PushRejected("content_type", f"Content-Type must be {media_type}", 415)
        if not self._secrets:
            return self._account(account, None)
        pairs = [(k, v) for k, values in request.query.items() for v in values]
        host = request.headers.get("host", "localhost")
        url = f"http://{host}{request.path}" + (f"?{urlencode(pairs)}" if pairs else "")
        now = datetime.fromtimestamp(self._clock(), UTC)
        try:
            access = verify_request(
                request.method, url, request.headers, request.body, self._secrets, now
            )
        except SignatureError as exc:
            raise PushRejected("signature", f"bad push signature: {exc}", 401) from exc
        return self._account(account, access)

    def _account(self, by_path: str | None, access_key: str | None) -> str:
        """The account named by the path or bound to the signing key ("" with one account)."""
        by_key = self._key_accounts.get(access_key) if access_key is not None else None
        if by_key is not None and by_path is not None and by_key != by_path:
            raise PushRejected(
                "wrong_account", f"the signing key is not account {by_path!r}'s key", 403
            )
        found = by_path or by_key
        if found is not None:
            return found
        if len(self._accounts) <= 1:
            return self._accounts[0] if self._accounts else ""
        raise PushRejected(
            "wrong_account", "the signing key names no account; push to the account's path", 403
        )

    def _attribute(self, report: StatusReport) -> StatusReport:
        template = template_from_extend(
            report.extend, self.config.attribution, self.config.attribution_key
        )
        return replace(report, template_id=template) if template else report

    def _answer(self, endpoint: str, started: float, response: Response) -> Response:
        self.stats.request(endpoint, response.status, time.perf_counter() - started)
        return response

    def _write(self, operation: str, account: str, write: Callable[[], WriteResult]) -> WriteResult:
        """One store write, timed; counted as a store error when it fails."""
        started = time.perf_counter()
        try:
            result = write()
        except StoreUnavailable:
            self.stats.write(operation, time.perf_counter() - started, failed=True)
            raise
        self.stats.write(operation, time.perf_counter() - started, failed=False)
        kind = "report" if operation == "reports" else "registration"
        with self.stats.lock:
            self.stats.last_push[(account, kind)] = self._clock()
        return result

    def _store_reports(self, kind: str, reports: list[StatusReport], account: str) -> WriteResult:
        attributed = [replace(self._attribute(r), account=account) for r in reports]
        result = self._write("reports", account, lambda: self.store.add_reports(attributed))
        with self.stats.lock:
            self.stats.reports[kind] += result.stored
            self.stats.duplicates["report"] += result.duplicates
            self.stats.unattributed += result.unattributed
        return result

    def single(self, request: Request, account: str | None = None) -> Response:
        """One form-encoded report: 200 with an empty body once it is committed."""
        started = time.perf_counter()
        try:
            name = self._check(request, _FORM, account)
            if self._store_reports("single", [parse_single(request.body)], name).rejected:
                raise PushRejected("unstorable", "the report cannot be stored")
        except PushRejected as exc:
            self.stats.reject([exc.reason])
            return self._answer("single", started, _problem(exc))
        except StoreUnavailable as exc:
            self.stats.reject(["store_unavailable"])
            return self._answer("single", started, _problem(_unavailable(exc)))
        return self._answer("single", started, Response(200, b"", "text/plain"))

    def batch(self, request: Request, account: str | None = None) -> Response:
        """A JSON batch of at most 50: valid items are stored; 400 lists any rejected ones."""
        started = time.perf_counter()
        try:
            name = self._check(request, _JSON, account)
            good, bad = parse_batch(request.body)
            result = self._store_reports("batch", [r for _, r in good], name) if good else None
            if result is not None and result.rejected:
                unstorable = {good[i][0] for i in result.rejected}
                bad = sorted([*bad, *(_unstorable(i) for i in unstorable)], key=lambda p: p.index)
                good = [g for g in good if g[0] not in unstorable]
        except PushRejected as exc:
            self.stats.reject([exc.reason])
            return self._answer("batch", started, _problem(exc))
        except StoreUnavailable as exc:
            self.stats.reject(["store_unavailable"])
            return self._answer("batch", started, _problem(_unavailable(exc)))
        if not bad:
            return self._answer("batch", started, Response(200, b"", "text/plain"))
        self.stats.reject(p.reason for p in bad)
        problem = PushRejected(
            "invalid_items",
            f"{len(bad)} of {len(good) + len(bad)} reports rejected; the other {len(good)}"
            " are stored",
        )
        stored = [i for i, _ in good]
        response = _problem(
            problem,
            stored=stored,
            duplicates=result.duplicates if result else 0,
            rejected=[p.to_wire() for p in bad],
        )
        return self._answer("batch", started, response)

    def sends(self, request: Request, account: str | None = None) -> Response:
        """Register sends: a ``batchSendSms`` response or a list; valid ones are stored."""
        started = time.perf_counter()
        try:
            name = self._check(request, _JSON, account)
            template = request.param("templateId") or request.param("template_id") or None
            good, bad = parse_sends(request.body, template)
            sends = [replace(s, account=name) for _, s in good]
            result = (
                self._write("registrations", name, lambda: self.store.register(sends))
                if good
                else WriteResult()
            )
            if result.rejected:
                unstorable = {good[i][0] for i in result.rejected}
                bad = sorted([*bad, *(_unstorable(i) for i in unstorable)], key=lambda p: p.index)
                good = [g for g in good if g[0] not in unstorable]
        except PushRejected as exc:
            self.stats.reject([exc.reason])
            return self._answer("sends", started, _problem(exc))
        except StoreUnavailable as exc:
            self.stats.reject(["store_unavailable"])
            return self._answer("sends", started, _problem(_unavailable(exc)))
        with self.stats.lock:
            self.stats.registrations += result.stored
            self.stats.duplicates["registration"] += result.duplicates
        body: dict[str, Any] = {"registered": result.stored, "duplicates": result.duplicates}
        status = 200
        if bad:
            self.stats.reject(p.reason for p in bad)
            status = 400
            body = {
                "reason": "invalid_items",
                "message": f"{len(bad)} sends rejected; the other {len(good)} are stored",
                "stored": [i for i, _ in good],
                "rejected": [p.to_wire() for p in bad],
                **body,
            }
        return self._answer("sends", started, _json_response(status, body))


def _bound(handler: Callable[[Request, str | None], Response], account: str) -> Route:
    """A push handler for one account's path."""
    return lambda request: handler(request, account)


def _unavailable(exc: StoreUnavailable) -> PushRejected:
    return PushRejected("store_unavailable", f"not stored, try again: {exc}", 503)


def _unstorable(index: int) -> ItemProblem:
    return ItemProblem(index, "unstorable", "the item cannot be stored")
