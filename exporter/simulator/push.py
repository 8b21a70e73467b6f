"""Push mode: the simulator sends registrations and status reports to a receiver.

Each message is registered (a ``batchSendSms`` response, per template) when it is sent,
as an application records the send API's answer (which comes at once, also for a
message then held for manual review), and reported (one report per segment, single or
batched, optionally signed) when its result becomes final, so a receiver fed only by
these pushes sees what ``/-/truth?view=sender`` sees: the console's truth, plus the
messages still held for review as sending. Pushes are in Huawei's format: times
``yyyy-MM-ddTHH:mm:ssZ`` (the simulator's times are whole seconds, so delivery delays
still match the truth exactly), ``source=3`` for codes the Huawei platform produced
(``E...``, ``SC:...``), ``orgCode`` on international reports, an ``ACCEPTD`` report
before a carrier's final report that comes more than 10 minutes late (the receiver must
keep such a message pending), a long SMS's segments reported each at its own time (a
delivered message's last segment at its report time, a failed one's first), and single
(form) pushes
signed as Huawei's signer signs them, ``X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD``, at the
wall clock's time (:mod:`push_posts`). Like
Huawei, a push that fails is not retried. With ``connections`` above 1 a step's POSTs go
out that many at a time (Huawei's platform pushes concurrently too), registrations
before the reports of the same step.
"""

from __future__ import annotations

import hashlib
import heapq
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import httpx
import structlog

from exporter.simulator.clock import Clock
from exporter.simulator.push_posts import Poster, PushConfig
from exporter.simulator.store import MessageStore
from exporter.simulator.traffic import CHUNK_MS, CODES, EXPIRED, EXPIRY_MS, format_message_id
from exporter.status_codes import DELIVERED_CODE, describe, is_platform_code

__all__ = [
    "Due",
    "PushConfig",
    "Pusher",
    "accepted_first",
    "due_reports",
    "huawei_time",
    "org_code",
    "report_items",
    "segment_offsets",
]

log = structlog.get_logger("msgsms-simulator.push")


def huawei_time(ms: int) -> str:
    """``yyyy-MM-ddTHH:mm:ssZ``, as Huawei's reports and registrations carry times."""
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def org_code(code: str) -> str:
    """The carrier's own code for an international report: 000 delivered, else a stable one."""
    return "000" if code == DELIVERED_CODE else f"{1 + zlib.crc32(code.encode()) % 999:03d}"


ACCEPTED_CODE = "ACCEPTD"
ACCEPTED_AFTER_MS = 10 * 60_000
"""A carrier report this late is preceded by ACCEPTD (a non-final report) 2 s after sending."""


@dataclass(frozen=True, slots=True, order=True)
class Due:
    """A message's final report, due at ``report_ms``."""

    report_ms: int
    message_id: str
    template_id: str
    code: str
    segments: int
    mobile: str
    send_ms: int
    international: bool
    extend: str | None = None
    """The send request's ``extend``, echoed in the report (API sends only)."""
    sequence: int = 0
    """The one segment this report is for; 0: every segment, at ``report_ms``."""


SEGMENT_SPREAD_SECONDS = 3
"""A long SMS reaches the handset as separate SMS: their reports come up to 3 s apart."""


def segment_offsets(message_id: str, segments: int) -> list[int]:
    """Seconds between each segment's report and the message's own; the nearest is 0.

    Drawn from the message id, so the same seed gives the same offsets.
    """
    spread = SEGMENT_SPREAD_SECONDS + 1
    # Not crc32: its low bits move in lockstep as the sequence digit changes.
    raw = [
        hashlib.blake2b(f"{message_id}/{k}".encode(), digest_size=1).digest()[0] % spread
        for k in range(1, segments + 1)
    ]
    return [r - min(raw) for r in raw]


def by_segment(due: Due) -> list[Due]:
    """A carrier's final report of a long SMS, one per segment at the segment's own time.

    The message's result is decided at ``report_ms`` either way: delivered once its last
    segment is (the others came earlier), failed on its first failed segment (the others
    come later, by the 72 h deadline). ``EXPIRED`` and the platform's own codes are
    written for the whole message at once, as is ``ACCEPTD`` here.
    """
    code = due.code
    if due.segments == 1 or code in (CODES.codes[EXPIRED], ACCEPTED_CODE):
        return [due]
    if is_platform_code(code):
        return [due]
    out = []
    for sequence, offset in enumerate(segment_offsets(due.message_id, due.segments), start=1):
        if code == DELIVERED_CODE:
            at = max(due.send_ms + 1000, due.report_ms - 1000 * offset)
        else:
            at = min(due.send_ms + EXPIRY_MS, due.report_ms + 1000 * offset)
        out.append(replace(due, report_ms=at, sequence=sequence))
    return out


def accepted_first(due: Due) -> Due | None:
    """The ACCEPTD report a carrier sends before a late final one, or None."""
    late = due.report_ms - due.send_ms > ACCEPTED_AFTER_MS
    if not late or due.code == CODES.codes[EXPIRED] or is_platform_code(due.code):
        return None
    return replace(due, report_ms=due.send_ms + 2000, code=ACCEPTED_CODE)


def due_reports(due: Due) -> list[Due]:
    """The reports a message gets: an ACCEPTD first when its carrier reports late, then its
    own (one per segment of a long SMS, each at its time)."""
    accepted = accepted_first(due)
    return ([] if accepted is None else [accepted]) + by_segment(due)


def report_items(due: Due, extend_key: str | None = None) -> list[dict[str, str]]:
    """One status report per segment (or the one segment of ``due.sequence``), in Huawei's fields.

    ``extend`` echoes the send request's, or with ``extend_key`` is ``<key>=<template id>``;
    ``to`` comes with it, as Huawei's does.
    """
    expired = due.code == CODES.codes[EXPIRED]
    out = []
    sequences = range(1, due.segments + 1) if not due.sequence else (due.sequence,)
    for sequence in sequences:
        report = {
            "smsMsgId": due.message_id,
            "total": str(due.segments),
            "sequence": str(sequence),
            "status": due.code,
            "statusDesc": describe(due.code),
            # 3: the Huawei platform (E..., SC:...); 1: the SMS platform; 2: the carrier.
            "source": "3" if is_platform_code(due.code) else "1" if expired else "2",
        }
        if not expired:  # the platform writes EXPIRED itself, without updateTime
            report["updateTime"] = huawei_time(due.report_ms)
        if due.international:
            report["orgCode"] = org_code(due.code)
        extend = due.extend or (f"{extend_key}={due.template_id}" if extend_key else None)
        if extend:
            report["extend"] = extend
            report["to"] = f"+{due.mobile}"
        out.append(report)
    return out


class Pusher:
    """Turns the store's messages into pushes as the clock moves; ``catch_up`` does one step."""

    def __init__(
        self,
        store: MessageStore,
        clock: Clock,
        config: PushConfig,
        http: httpx.Client,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """``clock`` is the simulated one; ``wall`` dates the signatures (X-Sdk-Date)."""
        self.store = store
        self.clock = clock
        self.config = config
        self._poster = Poster(config, http, wall)
        self._lock = threading.Lock()
        self._cursors: dict[tuple[int, int, int], int] = {}
        self._first_chunk: int | None = None
        self._due: list[Due] = []

    # -- what is due ------------------------------------------------------------

    def _newly_sent(self, now_ms: int) -> Iterator[tuple[Due, bool]]:
        """Messages sent before ``now_ms`` not yet registered, held for review or not, each
        with whether its report goes to the send request's own ``statusCallback`` (store
        internals, under its lock)."""
        store = self.store
        store.advance_to(now_ms)
        templates = store.scenario.templates
        if self._first_chunk is None or self._first_chunk < store.first_chunk:
            # Minutes the store dropped (past its retention) have nothing left to push.
            self._first_chunk = store.first_chunk
            for key in [k for k in self._cursors if k[1] < self._first_chunk]:
                del self._cursors[key]
        last_chunk = (now_ms - 1) // CHUNK_MS
        complete = True
        for chunk in range(self._first_chunk, last_chunk + 1):
            for t, spec in enumerate(templates):
                for kind, block in enumerate(store.blocks_of(t, chunk)):
                    sent = block is store.sent_block(t, chunk)
                    i = self._cursors.get((t, chunk, kind), 0)
                    while i < len(block) and block.send_ms[i] < now_ms:
                        meta = store.meta_of(t, chunk, i) if sent else None
                        yield (
                            Due(
                                block.report_ms[i],
                                format_message_id(block.id_hi[i], block.id_lo[i]),
                                spec.template_id,
                                CODES.codes[block.codes[i]],
                                block.segments[i],
                                str(block.mobiles[i]),
                                block.send_ms[i],
                                spec.region == "intl",
                                None if meta is None else meta.extend,
                            ),
                            meta is not None and meta.callback is not None,
                        )
                        i += 1
                    self._cursors[(t, chunk, kind)] = i
                    if i < len(block):
                        complete = False
            if complete and chunk < last_chunk:
                self._first_chunk = chunk + 1
                for key in [k for k in self._cursors if k[1] == chunk]:
                    del self._cursors[key]

    def catch_up(self, now: float | None = None) -> None:
        """Push every registration and report due at ``now`` (default: the clock's now)."""
        with self._lock:
            now_ms = round((self.clock.now() if now is None else now) * 1000)
            sends: dict[str, list[dict[str, object]]] = {}
            with self.store.lock:
                fresh = list(self._newly_sent(now_ms))
            for due, called_back in fresh:
                if not called_back:  # else its reports go to the request's statusCallback
                    for report in due_reports(due):
                        heapq.heappush(self._due, report)
                sends.setdefault(due.template_id, []).append(
                    {
                        "originTo": f"+{due.mobile}",
                        "createTime": huawei_time(due.send_ms),
                        "from": "simulator",
                        "smsMsgId": due.message_id,
                        "status": "000000",
                        "total": due.segments,
                    }
                )
            if self.config.register:
                for template_id, result in sends.items():
                    self._poster.sends(template_id, result)
                self._poster.flush()
            reports: list[dict[str, str]] = []
            while self._due and self._due[0].report_ms <= now_ms:
                reports.extend(report_items(heapq.heappop(self._due), self.config.extend_key))
            self._poster.reports(reports)
            self._poster.flush()

    # -- HTTP (exporter.simulator.push_posts) -----------------------------------

    @property
    def stats(self) -> Counter[str]:
        """Pushes answered, by ``kind:status`` (``batch:200``, ``sends:error``...)."""
        return self._poster.stats

    @property
    def acknowledged(self) -> Counter[tuple[str, int]]:
        """Reports (smsMsgId, sequence) answered 200, when ``keep_acknowledged``."""
        return self._poster.acknowledged

    @property
    def reports_acknowledged(self) -> int:
        """Report items answered 200, duplicates included."""
        return self._poster.reports_acknowledged

    @property
    def failed(self) -> int:
        """Pushes not answered 200: refused, or no answer at all."""
        return self._poster.failed

    def close(self) -> None:
        """Stop the POSTing threads (the HTTP client is the caller's)."""
        self._poster.close()

    def run(self, stop: threading.Event) -> None:
        """Catch up every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.catch_up()
            except Exception:  # a pusher bug must not stop the simulator
                log.exception("push step failed")
            stop.wait(self.config.interval)
