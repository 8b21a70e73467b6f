"""``POST /sms/batchSendSms/v1`` served: authenticate, check the form, send, answer.

Authentication is the application's key and secret (the simulator's AK/SK pair), by
``X-WSSE`` UsernameToken (refused with Huawei's ``E0000xx`` codes) or SDK-HMAC-SHA256
(refused by the gateway, ``APIG.*``); an IAM token is not accepted here, as on Huawei's
``smsapi`` hosts. The per-credential rate limit is the gateway's. Accepted numbers become
messages of the simulated world (:meth:`MessageStore.send`); a message whose request
named a ``statusCallback`` has its reports queued for that URL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from exporter.errors import AuthError, BadParameter
from exporter.simulator.callbacks import Callbacks, sent_dues
from exporter.simulator.clock import Clock
from exporter.simulator.gate import Credentials, RateLimiter, authenticate, authenticate_wsse
from exporter.simulator.push import huawei_time
from exporter.simulator.sending import parse_send_form, send_answer
from exporter.simulator.sent_blocks import SentMeta
from exporter.simulator.store import MessageStore

log = structlog.get_logger("msgsms-simulator.send")
Answer = tuple[int, dict[str, Any]]


class SendApi:
    """The sending API over one store; ``callbacks`` delivers statusCallback reports."""

    def __init__(
        self,
        store: MessageStore,
        clock: Clock,
        credentials: Credentials,
        limiter: RateLimiter,
        hidden: Callable[[], frozenset[str]],
        callbacks: Callbacks | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.credentials = credentials
        self.limiter = limiter
        self.hidden = hidden
        self.callbacks = callbacks

    def _caller(self, url: str, headers: Mapping[str, str], body: bytes) -> str:
        """The caller's principal, or AuthError."""
        lowered = {name.lower(): value for name, value in headers.items()}
        scheme = lowered.get("authorization", "").strip().partition(" ")[0]
        now, manual = self.clock.now(), self.clock.manual
        if scheme == "SDK-HMAC-SHA256":
            signed = {k: v for k, v in headers.items() if k.lower() != "x-auth-token"}
            return authenticate(
                "POST",
                url,
                signed,
                body,
                self.credentials,
                sim_now=now,
                wall_now=time.time(),
                manual_clock=manual,
            )
        return authenticate_wsse(headers, self.credentials, now, time.time(), manual)

    def handle(self, url: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """Answer one POST: Huawei's status code and body."""
        try:
            principal = self._caller(url, headers, body)
        except AuthError as exc:
            if exc.error_code.startswith("APIG."):
                return 401, {"error_code": exc.error_code, "error_msg": str(exc)}
            return 401, {"code": exc.error_code, "description": str(exc)}
        if not self.limiter.allow(principal):
            return 429, {"error_code": "APIG.0308", "error_msg": "The request is throttled."}
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        try:
            request = parse_send_form(body, content_type, self.store.scenario, self.hidden())
        except BadParameter as exc:
            log.info("send refused", code=exc.error_code)
            return 400, {"code": exc.error_code, "description": str(exc)}
        accepted = request.accepted
        callback, extend = request.status_callback, request.extend
        ids: list[str] = []
        created = huawei_time(round(self.clock.now() * 1000))
        if accepted:
            with self.store.lock:  # the clock is read under the lock the pusher reads under
                sent = self.store.send(
                    request.template,
                    [(r.mobile, request.segments) for r in accepted],
                    round(self.clock.now() * 1000),
                    SentMeta(callback, extend),
                )
            ids = list(sent.message_ids)
            created = huawei_time(sent.send_ms)
            if callback is not None and self.callbacks is not None:
                mobiles = [str(r.mobile) for r in accepted]
                self.callbacks.add(sent_dues(self.store, sent, mobiles, extend), callback)
        answer = send_answer(request, created, ids)
        log.info(
            "sent",
            code=answer["code"],
            messages=len(ids),
            refused=len(request.recipients) - len(ids),
        )
        return 200, answer
