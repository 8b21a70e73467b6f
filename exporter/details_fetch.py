"""Reading the view's page from the platform: the retried query, and the status-code filter.

The platform's query filters by template, number, send result and sending time, not by
status code. To show one code's records (the overview links a template's top failing
codes), :func:`scan_status_code` reads the query's records 100 at a time, at most
:data:`SCAN_RECORDS` of them, keeps those with the code and pages through them locally;
:class:`Scan` says how much was read, so the page can say when matches may be missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from exporter.errors import UpstreamRejected
from exporter.fetch import DetailsSource
from exporter.records import DetailsPage, DetailsQuery

BUSY_RETRIES = 2
SCAN_LIMIT = 100
"""Records a scanning request asks for: the contract's largest page."""
SCAN_RECORDS = 2000
"""Records one status-code view reads at most (20 requests); narrower times read them all."""


@dataclass(frozen=True, slots=True)
class Scan:
    """How far a status-code scan read: ``read`` of the query's ``total`` records."""

    read: int
    total: int

    @property
    def complete(self) -> bool:
        """Every record of the query was read, so the matches are all of them."""
        return self.read >= self.total


def fetch_query(
    source: DetailsSource, query: DetailsQuery, *, sleep: Callable[[float], None] = time.sleep
) -> DetailsPage:
    """One page of records; retries briefly while the platform answers another query."""
    for attempt in range(BUSY_RETRIES + 1):
        try:
            return source.query(query)
        except UpstreamRejected as exc:
            if not exc.throttled or attempt == BUSY_RETRIES:
                raise
            sleep(min(exc.retry_after or 0.5, 2.0))
    raise AssertionError("unreachable")


def scan_status_code(
    source: DetailsSource,
    query: DetailsQuery,
    status_code: str,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[DetailsPage, Scan]:
    """The page at ``query``'s offset and limit of the records with ``status_code``."""
    matches, rejected = [], []
    read = total = 0
    while read < SCAN_RECORDS:
        page = fetch_query(source, replace(query, offset=read, limit=SCAN_LIMIT), sleep=sleep)
        total = page.total
        matches += [record for record in page.records if record.status_code == status_code]
        rejected += page.rejected
        read += SCAN_LIMIT
        if read >= total or not (page.records or page.rejected):
            break
    shown = matches[query.offset : query.offset + query.limit]
    return DetailsPage(total=len(matches), records=shown, rejected=rejected), Scan(
        min(read, total), total
    )
