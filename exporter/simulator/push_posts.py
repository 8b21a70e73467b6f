"""The simulator's POSTs to a receiver: signed as Huawei signs, ``connections`` at a time.

A push step queues its POSTs (registrations, then reports, each group waited for before
the next, so a registration never trails its message's reports); ``flush`` makes them on
a pool of ``connections`` threads sharing the client's keep-alive connections, and
tallies every answer: ``stats`` by kind and status, the reports acknowledged.

A signed POST's ``X-Sdk-Date`` is the wall clock's, as Huawei's is: a receiver refuses a
date more than 15 minutes from its own clock, and a manual simulated clock may be hours
ahead. The reports' own times (``updateTime``, ``createTime``) stay simulated.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

import httpx
import structlog

from exporter.signing import Credentials, sign_request

BATCH_LIMIT = 50
SENDS_LIMIT = 500
"""batchSendSms takes at most 500 numbers: a registration carries at most that many."""

log = structlog.get_logger("msgsms-simulator.push")


@dataclass(frozen=True, slots=True)
class PushConfig:
    """Where and how to push."""

    url: str
    mode: str = "batch"
    single_path: str = "/push/status-report"
    batch_path: str = "/push/status-reports"
    sends_path: str = "/push/sends"
    credentials: Credentials | None = None
    register: bool = True
    extend_key: str | None = None
    """When set, reports carry ``extend=<key>=<template id>`` (attribution by extend)."""
    duplicate: bool = False
    """Send every report push twice (a forwarder retrying at least once)."""
    interval: float = 1.0
    timeout: float = 10.0
    keep_acknowledged: bool = False
    """Remember each report (smsMsgId, sequence) answered 200, in ``Pusher.acknowledged``."""
    connections: int = 1
    """POSTs in flight at once (keep-alive connections of the client's pool)."""

    def __post_init__(self) -> None:
        if self.mode not in ("single", "batch"):
            raise ValueError("push mode must be 'single' or 'batch'")
        if self.connections < 1:
            raise ValueError("push connections must be >= 1")


Reports = list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class _Post:
    kind: str
    path: str
    body: bytes
    content_type: str
    reports: Reports | None
    """The status reports it carries (None: registrations)."""


class Poster:
    """Queues a step's POSTs, makes them concurrently, and counts their answers."""

    def __init__(
        self,
        config: PushConfig,
        http: httpx.Client,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.stats: Counter[str] = Counter()
        self.acknowledged: Counter[tuple[str, int]] = Counter()
        self.reports_acknowledged = 0
        """Report items answered 200, duplicates included (for rates)."""
        self._wall = wall
        self._http = http
        self._tally = threading.Lock()
        self._queued: list[Callable[[], None]] = []
        connections = config.connections
        self._pool = ThreadPoolExecutor(connections, "push-post") if connections > 1 else None

    def sends(self, template_id: str, result: list[dict[str, object]]) -> None:
        """Queue the registrations of one template's sends."""
        path = f"{self.config.sends_path}?{urlencode({'templateId': template_id})}"
        for start in range(0, len(result), SENDS_LIMIT):
            body = {
                "code": "000000",
                "description": "Success",
                "result": result[start : start + SENDS_LIMIT],
            }
            self._queue("sends", path, json.dumps(body).encode(), "application/json", None)

    def reports(self, reports: list[dict[str, str]]) -> None:
        """Queue status reports: one form POST each, or JSON batches of at most 50."""
        config = self.config
        if config.mode == "single":
            form = "application/x-www-form-urlencoded"
            for report in reports:
                self._queue(
                    "single", config.single_path, urlencode(report).encode(), form, [report]
                )
            return
        for start in range(0, len(reports), BATCH_LIMIT):
            items = reports[start : start + BATCH_LIMIT]
            body = json.dumps({"statusReportList": items}).encode()
            self._queue("batch", config.batch_path, body, "application/json", items)

    def flush(self) -> None:
        """Make every queued POST, ``connections`` at a time; return when all are answered."""
        queued, self._queued = self._queued, []
        if self._pool is None:
            for post in queued:
                post()
            return
        for future in [self._pool.submit(post) for post in queued]:
            future.result()

    def close(self) -> None:
        """Stop the POSTing threads (the HTTP client is the caller's)."""
        if self._pool is not None:
            self._pool.shutdown()

    @property
    def failed(self) -> int:
        """Pushes not answered 200: refused, or no answer at all."""
        with self._tally:
            return sum(n for key, n in self.stats.items() if not key.endswith(":200"))

    def _queue(
        self, kind: str, path: str, body: bytes, content_type: str, reports: Reports | None
    ) -> None:
        post = _Post(kind, path, body, content_type, reports)
        self._queued.append(lambda: self._post(post))

    def _post(self, post: _Post) -> None:
        kind, reports = post.kind, post.reports
        for _ in range(2 if self.config.duplicate and kind != "sends" else 1):
            status = self._post_once(kind, post.path, post.body, post.content_type)
            with self._tally:
                self.stats[f"{kind}:{status}"] += 1
                if status == 200 and reports:
                    self.reports_acknowledged += len(reports)
                    if self.config.keep_acknowledged:
                        keys = ((r["smsMsgId"], int(r["sequence"])) for r in reports)
                        self.acknowledged.update(keys)

    def _post_once(self, kind: str, path: str, body: bytes, content_type: str) -> int | str:
        """One POST; its HTTP status (200: acknowledged), or ``error`` when none came."""
        url = f"{self.config.url}{path}"
        headers = {"Content-Type": content_type}
        if self.config.credentials is not None:
            # sign_request signs a form body as Huawei's signer does: UNSIGNED-PAYLOAD.
            now = datetime.fromtimestamp(self._wall(), UTC)
            headers = sign_request("POST", url, headers, body, self.config.credentials, now)
        try:
            response = self._http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("push failed", kind=kind, error=type(exc).__name__)
            return "error"
        if response.status_code != 200:
            log.warning("push refused", kind=kind, status=response.status_code)
        return response.status_code
