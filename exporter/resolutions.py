"""Reading the followed messages found resolved: their final records, for their status
code and delivery delay.

Each is read a page at a time where it stood among its template's records when its
minute was read (an offset into the minutes that hold it), one page for those within a
page of each other: the same page the contract would hand a reader that knew every
position. A message not found there (a record added since moved it), and those past
the window, are read in narrow ranges of whole seconds, coalesced so that each is
expected to fit one page, per template or across templates, whichever is expected to
cost fewer pages. Those of a template the list no longer shows (deleted upstream, whose
queries answer 404) are read across templates only.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field

from exporter.fetch import PageSource, read_range
from exporter.minutebook import MinuteBook
from exporter.pending import Followed, PendingMessage, late_key
from exporter.ranges import MINUTE, SEND_TIME_GRAIN, coalesce, pages
from exporter.records import DetailsQuery, SendRecord, SendResult


@dataclass(slots=True)
class _Wanted:
    """Keeps the final records of the wanted messages (by id, or by late key)."""

    wanted: Container[str | int]
    found: list[SendRecord] = field(default_factory=list)

    def add(self, record: SendRecord) -> None:
        if record.send_result is SendResult.SENDING:
            return
        if record.message_id in self.wanted or late_key(record.message_id) in self.wanted:
            self.found.append(record)


@dataclass(slots=True)
class _Page:
    """One page to read: ``offset`` records into [start, end) of one template, holding the
    followed messages ``keys``."""

    template_id: str
    start: int
    end: int
    offset: int
    keys: list[str | int]


def read_resolved(book: MinuteBook, source: PageSource, end: int, resolved: Followed) -> None:
    """Read the final records of the followed messages found resolved; the book learns them.

    Outside the window a message carries its template's records in its minute, but the
    density across templates is unknown there: those are read per template."""
    book.unreadable = set()
    if not resolved:
        return
    window_start = end - book.settings.window
    cross = book.settings.cross_template
    # Across templates the reads also follow templates the list no longer shows (deleted
    # upstream): a query by such a template answers 404, so theirs are read across.
    unlisted = {k: m for k, m in resolved.items() if cross and m.template_id not in book.active}
    listed = {k: m for k, m in resolved.items() if k not in unlisted}
    inside = {k: m for k, m in listed.items() if m.minute >= window_start}
    outside = [m for m in listed.values() if m.minute < window_start]
    ranges, cost = _ranges(book, list(inside.values()), cross)
    positioned = _positioned(book, inside)
    if positioned and len(positioned) <= cost:
        left = _read_pages(book, source, positioned, inside)
        ranges, _ = _ranges(book, [inside[k] for k in left], cross)
    ranges += _ranges(book, outside, False)[0]
    ranges += _across(book, list(unlisted.values()))
    for scope, start, stop in ranges:
        query = DetailsQuery(start, stop, scope, limit=book.settings.page_size)
        read = read_range(source, query, lambda: _Wanted(resolved))
        book.counters.count(read)
        for record in read.sink.found:
            book.apply_resolution(record)
        if read.rejected:  # a final record skipped as malformed: its message looks pending
            book.unreadable.update(
                k
                for k, m in resolved.items()
                if k in book.pending
                and start <= m.send_time < stop
                and scope in (None, m.template_id)
            )


def _positioned(book: MinuteBook, messages: Followed) -> list[_Page]:
    """Pages that hold the messages, placed by where each stood in its template's
    records when its minute was read: one page for those within a page of each other."""
    size, span = book.settings.page_size, book.settings.max_query_span
    by_template: dict[str, list[tuple[int, int, str | int]]] = {}
    for key, m in messages.items():
        if m.position >= 0:
            by_template.setdefault(m.template_id, []).append((m.minute, m.position, key))
    out: list[_Page] = []
    for template_id, group in sorted(by_template.items()):
        page: _Page | None = None
        for minute, position, key in sorted(group):
            if page is not None:
                at = book.known_total(template_id, page.start, minute) + position
                if at - page.offset < size and minute + MINUTE - page.start <= span:
                    page.end = minute + MINUTE
                    page.keys.append(key)
                    continue
            page = _Page(template_id, minute, minute + MINUTE, position, [key])
            out.append(page)
    return out


def _read_pages(
    book: MinuteBook, source: PageSource, places: list[_Page], wanted: Followed
) -> set[str | int]:
    """Read one page at each place; the wanted messages not found (records added since,
    a held message appearing, shifted them), for a read by range."""
    found: set[str | int] = set()
    size = book.settings.page_size
    for page in places:
        query = DetailsQuery(page.start, page.end, page.template_id, limit=size)
        read = read_range(source, query, lambda: _Wanted(wanted), skip=page.offset, stop=_one_page)
        book.counters.count(read)
        for record in read.sink.found:
            if record.message_id not in found:
                found.add(record.message_id)
                book.apply_resolution(record)
    return {k for page in places for k in page.keys} - found


def _ranges(
    book: MinuteBook, messages: list[PendingMessage], cross_template: bool
) -> tuple[list[tuple[str | None, float, float]], int]:
    """Narrow ranges that hold the messages, and the requests they are expected to cost."""
    if not messages:
        return [], 0
    page, span = book.settings.page_size, book.settings.max_query_span
    by_template: dict[str, list[PendingMessage]] = {}
    for message in messages:
        by_template.setdefault(message.template_id, []).append(message)
    per_template: list[tuple[str | None, float, float]] = []
    cost = 0
    for template_id, group in sorted(by_template.items()):
        busiest = max(m.records or book.records_in(template_id, m.minute) for m in group)
        density = busiest / MINUTE
        times = sorted(m.send_time for m in group)
        ranges = coalesce(times, density, page, span, grain=SEND_TIME_GRAIN)
        per_template += [(template_id, a, b) for a, b in ranges]
        cost += pages(ranges, density, page)
    if not cross_template:
        return per_template, cost
    ranges, across = _across_ranges(book, messages)
    if across >= cost:
        return per_template, cost
    return [(None, a, b) for a, b in ranges], across


def _across(
    book: MinuteBook, messages: list[PendingMessage]
) -> list[tuple[str | None, float, float]]:
    """Narrow ranges across templates that hold the messages."""
    if not messages:
        return []
    return [(None, a, b) for a, b in _across_ranges(book, messages)[0]]


def _across_ranges(
    book: MinuteBook, messages: list[PendingMessage]
) -> tuple[list[tuple[float, float]], int]:
    """Ranges across templates holding the messages, coalesced by the density of all
    templates' records, and the pages they are expected to cost."""
    page, span = book.settings.page_size, book.settings.max_query_span
    density = max(max(m.records, book.records_in(None, m.minute)) for m in messages) / MINUTE
    times = sorted(m.send_time for m in messages)
    ranges = coalesce(times, density, page, span, grain=SEND_TIME_GRAIN)
    return ranges, pages(ranges, density, page)


def _one_page(_sink: object) -> bool:
    return True
