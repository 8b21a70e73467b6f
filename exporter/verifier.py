"""The password verifier: bcrypt checks of credentials not seen before, bounded.

A bcrypt check takes about a tenth of a second of CPU. Run in the server's worker
threads, a flood of wrong passwords held every one of them, and requests whose
credentials were verified long ago (a send registration, a scrape whose exposition had to
be rendered) waited behind the whole flood: 200 wrong passwords at cost 10 kept a
registration 9 s. Here the checks run one at a time on a thread of their own, at most
:data:`WAITING_CHECKS` wait, and a check beyond them is refused at once (the server
answers 503 with ``Retry-After``). Credentials already verified never come here.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Protocol

import structlog

log = structlog.get_logger("msgsms_exporter.web")

WAITING_CHECKS = 16
"""Checks that may wait for the one running: at cost 12 (about 0.25 s each here) a new,
right password waits about 4 s at worst during a flood, within a scrape's timeout."""


class PasswordCheck(Protocol):
    """Checks a user name and password with the slow hash (``webconfig.BasicAuth``)."""

    def check(self, user: str, password: str) -> bool:
        """True when the credentials are valid."""
        ...


Verdict = Callable[[bool], None]
"""Told the result of a check, on the verifier's thread."""


class PasswordVerifier:
    """One thread checking passwords in turn, with a bounded queue of waiting checks."""

    def __init__(self, waiting: int = WAITING_CHECKS) -> None:
        self._queue: queue.Queue[tuple[PasswordCheck, str, str, Verdict] | None] = queue.Queue(
            waiting
        )
        self._thread = threading.Thread(target=self._run, name="web-auth", daemon=True)
        self._started = False
        self._stopping = threading.Event()
        self._start_lock = threading.Lock()

    def submit(self, auth: PasswordCheck, user: str, password: str, verdict: Verdict) -> bool:
        """Queue a check; False (nothing queued) when :data:`WAITING_CHECKS` already wait."""
        with self._start_lock:
            if not self._started:  # on first use: most servers never check a password
                self._thread.start()
                self._started = True
        try:
            self._queue.put_nowait((auth, user, password, verdict))
        except queue.Full:
            return False
        return True

    def _run(self) -> None:
        while (job := self._queue.get()) is not None and not self._stopping.is_set():
            auth, user, password, verdict = job
            try:
                ok = auth.check(user, password)
            except Exception:  # a bug: refuse the credentials, keep checking others
                log.exception("password check failed")
                ok = False
            verdict(ok)

    def stop(self) -> None:
        """End the thread after the check in progress; the waiting ones are dropped (their
        connections are being closed)."""
        self._stopping.set()
        with self._start_lock:
            if not self._started:
                return
        with contextlib.suppress(queue.Full):  # full: the thread sees the flag next
            self._queue.put_nowait(None)
