"""The bound on templates pushes can add: one anonymous POST must not add 10,000 series.

Templates reach the push store from send registrations and from ``extend``. Beyond
``receiver.max_templates`` distinct ones, a new template's reports and registrations are
counted under ``template="other"`` rather than refused: Huawei pushes each report once,
so a refused report would be lost, while ``other`` keeps every total exact and the
``msgsms_push_templates_folded_total`` counter says how much was folded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from exporter.errors import UpstreamError
from exporter.pushitems import UNKNOWN_TEMPLATE

OTHER_TEMPLATE = "other"
"""Where reports of templates beyond the limit are counted."""
REFRESH_SECONDS = 60.0
"""At the limit, the store is read again this often: templates past the retention leave.
A template admitted within this long is kept by a read that does not show it yet (its
write may still be on its way to the store)."""


class TemplateLimit:
    """Admits templates up to ``limit``; those named in the configuration always."""

    def __init__(
        self,
        limit: int,
        known: Callable[[], Iterable[str]],
        *,
        pinned: Iterable[str] = (),
        clock: Callable[[], float],
    ) -> None:
        self._limit = limit
        self._known = known
        self._free = frozenset({*pinned, UNKNOWN_TEMPLATE, OTHER_TEMPLATE})
        self._clock = clock
        self._lock = threading.Lock()
        self._admitted: set[str] = set()
        self._recent: dict[str, float] = {}  # admitted lately: when (the store may lag)
        self._read_at = float("-inf")
        self._reading = False
        self._read()

    def _read(self) -> None:
        try:
            known = self._known()
        except UpstreamError:
            return  # the store is down (a database at start): read again when full
        self._admitted = {t for t in known if t not in self._free}
        self._read_at = self._clock()

    def pin(self, pinned: Iterable[str]) -> None:
        """Always admit ``pinned`` from now on (the configured templates, after a reload);
        they leave the count."""
        free = frozenset({*pinned, UNKNOWN_TEMPLATE, OTHER_TEMPLATE})
        with self._lock:
            self._free = free
            self._admitted -= free

    def admit(self, template: str) -> str:
        """``template`` when admitted, else ``other``; never waits for the store.

        A template not seen before starts a read of the store when one is due, on a thread
        of its own (pushes are admitted on the server's event loop): at the limit, later
        reports see the templates that left; below it, the templates that other replicas
        sharing the store admitted meanwhile count too (else each replica would admit its
        own ``limit``).
        """
        if template in self._free or template in self._admitted:
            return template
        with self._lock:
            if not self._reading and self._clock() - self._read_at >= REFRESH_SECONDS:
                self._reading = True
                threading.Thread(target=self._read_again, name="push-templates").start()
            if len(self._admitted) < self._limit:
                self._admitted.add(template)
                self._recent[template] = self._clock()
                return template
            return OTHER_TEMPLATE

    def _read_again(self) -> None:
        try:
            known = self._known()
        except UpstreamError:
            known = None  # the store is down: try again a refresh later
        with self._lock:
            now = self._clock()
            # Admitted but not yet stored (or stored after this read began) still count:
            # without them, one request that fills the limit and triggers the read would
            # free its own places for as many templates again.
            self._recent = {t: at for t, at in self._recent.items() if now - at < REFRESH_SECONDS}
            if known is not None:
                self._admitted = {t for t in known if t not in self._free} | self._recent.keys()
            self._read_at = now
            self._reading = False
