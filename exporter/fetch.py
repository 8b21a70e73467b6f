"""Reading one range of sending details to its end, page by page, each record once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Generic, Protocol, TypeVar, runtime_checkable

from exporter.errors import UpstreamMalformed
from exporter.records import DetailsPage, DetailsQuery, SendRecord
from exporter.stats import RequestStats
from exporter.templates import SmsTemplate

MAX_RESTARTS = 2


class PageSource(Protocol):
    """Anything that answers sending-details queries."""

    def query(self, query: DetailsQuery) -> DetailsPage:
        """One page of sending details."""
        ...


@runtime_checkable
class Snapshots(Protocol):
    """A source that can answer several queries from one consistent state (a store)."""

    def snapshot(self) -> AbstractContextManager[object]:
        """While entered, this thread's queries all see the state of its first query."""
        ...


def snapshot_of(source: object) -> AbstractContextManager[object]:
    """One consistent view of ``source`` for a whole range read, when it can give one.

    The push store pins a read snapshot, so its pages cannot shift and its total cannot
    move while reports land; an HTTP API cannot, and its pages are checked as they come.
    """
    return source.snapshot() if isinstance(source, Snapshots) else nullcontext()


class DetailsSource(PageSource, Protocol):
    """What a poller reads: the HTTP client, or the in-process push store."""

    @property
    def stats(self) -> RequestStats:
        """Accounting of the requests made."""
        ...

    def list_templates(self) -> list[SmsTemplate]:
        """The account's templates."""
        ...


class RecordSink(Protocol):
    """Where a range's records go, one by one, as pages arrive."""

    def add(self, record: SendRecord) -> None:
        """Take one record."""
        ...


S = TypeVar("S", bound=RecordSink)


@dataclass(slots=True)
class RecordList:
    """A sink that keeps the records (for small ranges and tests)."""

    records: list[SendRecord] = field(default_factory=list)

    def add(self, record: SendRecord) -> None:
        """Keep one record."""
        self.records.append(record)


@dataclass(slots=True)
class RangeRead(Generic[S]):
    """What reading one range produced, and what it cost."""

    sink: S
    total: int = 0
    fetched: int = 0
    requests: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    stopped: bool = False


def read_range(
    source: PageSource,
    query: DetailsQuery,
    sink: Callable[[], S],
    *,
    skip: int = 0,
    stop: Callable[[S], bool] | None = None,
    shrinking: bool = False,
) -> RangeRead[S]:
    """Every record matching ``query`` (its offset is ignored) into a fresh ``sink()``.

    Records stream into the sink page by page, so memory does not grow with the range.
    They come ordered by (send time, message id), so a record repeated at a page
    boundary (offsets drift while data changes) is recognised by its key and skipped.
    If ``total`` changes between pages the read starts over with a new sink, at most
    MAX_RESTARTS times. Past the total, a page full of new records is followed by
    another, so a total that lags the records (counted before the newest landed) loses
    none of them; an honest total pays one empty page when the records fill the last
    page exactly. ``skip`` starts at that offset, for callers that know how many records
    precede the ones they want. ``stop(sink)`` true after a page ends the read
    there, marked ``stopped`` (for callers that learnt what they wanted to know).

    ``shrinking``: the set is expected to shrink while it is read (a ``sending`` scan
    while status reports arrive), so a changed total does not start the read over: it
    reads through once. Records the shift skips are missed, so only a caller for which a
    missed record is harmless may ask for this.

    A source with snapshots (the push store) is read from one snapshot, which neither
    shifts nor shrinks while it is read.
    """
    with snapshot_of(source):
        return _read_range(source, query, sink, skip, stop, shrinking)


def _read_range(
    source: PageSource,
    query: DetailsQuery,
    sink: Callable[[], S],
    skip: int,
    stop: Callable[[S], bool] | None,
    shrinking: bool,
) -> RangeRead[S]:
    requests = 0
    for _attempt in range(MAX_RESTARTS + 1):
        out = RangeRead(sink=sink(), requests=requests)
        last_key: tuple[float, str] | None = None
        offset = skip
        first_total: int | None = None
        changed = False
        while True:
            page = source.query(replace(query, offset=offset))
            out.requests += 1
            if first_total is None:
                first_total = page.total
            elif page.total != first_total and not shrinking:
                changed = True
                break
            for rejected in page.rejected:
                out.rejected[rejected.reason] += 1
            fresh = len(page.rejected)
            for record in page.records:
                key = (record.send_time, record.message_id)
                if last_key is not None and key <= last_key:
                    continue
                last_key = key
                fresh += 1
                out.fetched += 1
                out.sink.add(record)
            fetched = len(page.records) + len(page.rejected)
            if fetched > query.limit:
                raise UpstreamMalformed("send-details returned more records than the limit")
            if stop is not None and stop(out.sink):
                out.total, out.stopped = page.total, True
                return out
            # A page that repeats records has pushed as many later ones past its end:
            # advance by what was new, so those are read on the next page.
            offset += fresh or fetched
            # A last page full of new records may not be the last: a total counted
            # before the newest records landed lags them, and only the next page tells.
            if fetched == 0 or (offset >= page.total and min(fresh, fetched) < query.limit):
                break
        out.total = first_total or 0
        requests = out.requests
        seen = skip + out.fetched + sum(out.rejected.values())
        if shrinking or (not changed and seen >= out.total):
            return out
        # Fewer records than the total promised (or the total moved): read it again.
    raise UpstreamMalformed("send-details total kept changing or pages kept shifting while paging")
