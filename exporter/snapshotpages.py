"""What the pages read earlier in one store snapshot tell the next ones.

Inside one read snapshot (``ReportStore.snapshot``) nothing a query sees can change, so
a range read page by page (the contract pages by offset) need not count its range again
for every page, nor skip ``offset`` rows by index to find where the previous page ended:
the total of a filter is counted once, and the page at the offset where the previous one
ended starts right after its last key (send time, message id), the order pages come in.
The answers are the same as counting and skipping would give; only their cost changes,
from growing with the offset (a range of n records read in n**2 steps) to not.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from exporter.mobilekey import MobileKey, filter_hash
from exporter.records import DetailsQuery

PageKey = tuple[int, str]
"""Where a page ended: (send_ms, message_id) of its last record."""


def filter_key(query: DetailsQuery, account: str | None) -> Hashable:
    """What a page's range and filters are: pages with the same key continue each other."""
    return (
        account,
        query.start_time,
        query.end_time,
        query.template_id,
        query.mobile,
        query.send_result,
    )


def filter_columns(
    query: DetailsQuery, account: str | None, mobile_key: MobileKey | None
) -> list[tuple[str, object]]:
    """The equality filters of a store's page query beyond its send-time range, as
    (column, value): both stores keep the same columns (the number only as its keyed
    hash). BadParameter for a number without a key: nothing is kept to find it by."""
    columns: list[tuple[str, object]] = []
    if account is not None:
        columns.append(("account", account))
    if query.template_id is not None:
        columns.append(("template_id", query.template_id))
    if query.mobile is not None:
        columns.append(("mobile_hash", filter_hash(query.mobile, mobile_key)))
    if query.send_result is not None:
        columns.append(("result", query.send_result.value))
    return columns


@dataclass(slots=True)
class _Cursor:
    total: int
    offset: int = -1
    after: PageKey | None = None


class SnapshotPages:
    """Totals and page ends per query filter, for the life of one snapshot."""

    def __init__(self) -> None:
        self._cursors: dict[Hashable, _Cursor] = {}

    def total(self, where: Hashable) -> int | None:
        """The filter's total, if a page of this snapshot counted it already."""
        cursor = self._cursors.get(where)
        return None if cursor is None else cursor.total

    def after(self, where: Hashable, offset: int) -> PageKey | None:
        """The key a page at ``offset`` starts after, when the previous page ended there."""
        cursor = self._cursors.get(where)
        if cursor is None or cursor.after is None or cursor.offset != offset:
            return None
        return cursor.after

    def read(self, where: Hashable, total: int, offset: int, keys: Sequence[PageKey]) -> None:
        """Note a page: its filter's total, and where the next page starts (offset, key)."""
        cursor = self._cursors.setdefault(where, _Cursor(total))
        if keys:
            cursor.offset, cursor.after = offset + len(keys), keys[-1]
