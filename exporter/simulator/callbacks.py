"""Status reports of API sends that named a ``statusCallback``, POSTed to that URL.

Huawei pushes such a message's reports to the send request's ``statusCallback`` instead
of the application's batch URL: one ``application/x-www-form-urlencoded`` POST per
segment, when the report is due, at most once (a failed POST is counted, not retried).
With push signing keys they are signed as Huawei's signer signs form bodies, dated by
the wall clock (the report's own times are simulated).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlencode

import httpx
import structlog

from exporter.signing import Credentials, sign_request
from exporter.simulator.clock import Clock
from exporter.simulator.push import Due, due_reports, report_items
from exporter.simulator.sent_blocks import Sent
from exporter.simulator.store import MessageStore
from exporter.simulator.traffic import CODES, format_message_id

log = structlog.get_logger("msgsms-simulator.callbacks")


def sent_dues(store: MessageStore, sent: Sent, mobiles: list[str], extend: str | None) -> list[Due]:
    """The reports of messages just sent, ACCEPTD first where the carrier reports late."""
    spec = store.scenario.templates[sent.template]
    with store.lock:
        block = store.sent_block(sent.template, sent.chunk)
        assert block is not None  # send() just filled it
        out: list[Due] = []
        for k, mobile in enumerate(mobiles):
            i = sent.first + k
            due = Due(
                block.report_ms[i],
                format_message_id(block.id_hi[i], block.id_lo[i]),
                spec.template_id,
                CODES.codes[block.codes[i]],
                block.segments[i],
                mobile,
                block.send_ms[i],
                spec.region == "intl",
                extend,
            )
            out.extend(due_reports(due))
        return out


class Callbacks:
    """Reports due to ``statusCallback`` URLs; ``catch_up`` POSTs those due now."""

    def __init__(
        self,
        clock: Clock,
        http: httpx.Client,
        credentials: Credentials | None = None,
        interval: float = 0.25,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """``clock`` says when reports are due; ``wall`` dates their signatures."""
        self.clock = clock
        self.credentials = credentials
        """Huawei's push signing keys; None: unsigned."""
        self.interval = interval
        self.stats: Counter[str] = Counter()
        """POSTs by HTTP status (``200``...) or ``error`` when none came."""
        self._http = http
        self._wall = wall
        self._lock = threading.Lock()
        self._order = itertools.count()
        self._due: list[tuple[int, int, Due, str]] = []

    def add(self, dues: list[Due], url: str) -> None:
        """Queue reports for ``url``."""
        with self._lock:
            for due in dues:
                heapq.heappush(self._due, (due.report_ms, next(self._order), due, url))

    @property
    def pending(self) -> int:
        """Reports not yet due."""
        with self._lock:
            return len(self._due)

    def posted(self) -> dict[str, int]:
        """POSTs made so far by HTTP status (``error``: no answer), a copy."""
        with self._lock:
            return dict(sorted(self.stats.items()))

    def catch_up(self, now: float | None = None) -> None:
        """POST every report due at ``now`` (default: the clock's now)."""
        now_ms = round((self.clock.now() if now is None else now) * 1000)
        with self._lock:
            ready = []
            while self._due and self._due[0][0] <= now_ms:
                ready.append(heapq.heappop(self._due))
        for _, _, due, url in ready:
            for report in report_items(due):
                self._post(url, urlencode(report).encode())

    def _post(self, url: str, body: bytes) -> None:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self.credentials is not None:
            now = datetime.fromtimestamp(self._wall(), UTC)
            headers = sign_request("POST", url, headers, body, self.credentials, now)
        try:
            status: int | str = self._http.post(url, content=body, headers=headers).status_code
        except httpx.HTTPError as exc:
            log.warning("status callback failed", error=type(exc).__name__)
            status = "error"
        else:
            if status != 200:
                log.warning("status callback refused", status=status)
        with self._lock:
            self.stats[str(status)] += 1

    def run(self, stop: threading.Event) -> None:
        """Catch up every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.catch_up()
            except Exception:  # a bug here must not stop the simulator
                log.exception("status callback step failed")
            stop.wait(self.interval)
