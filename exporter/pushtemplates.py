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
from exporter.pushstore import UNKNOWN_TEMPLATE

OTHER_TEMPLATE = "other"
"""Where reports of templates beyond the limit are counted."""
REFRESH_SECONDS = 60.0
"""At the limit, the store is read again this often: templates past the retention leave."""


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
        self._read_at = float("-inf")
        self._read()

    def _read(self) -> None:
        try:
            known = self._known()
        except UpstreamError:
            return  # the store is down (a database at start): read again when full
        self._admitted = {t for t in known if t not in self._free}
        self._read_at = self._clock()

    def admit(self, template: str) -> str:
        """``template`` when admitted, else ``other``."""
        if template in self._free or template in self._admitted:
            return template
        with self._lock:
            full = len(self._admitted) >= self._limit
            if full and self._clock() - self._read_at >= REFRESH_SECONDS:
                self._read()
                full = len(self._admitted) >= self._limit
            if full:
                return OTHER_TEMPLATE
            self._admitted.add(template)
            return template
