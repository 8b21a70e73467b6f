"""Messages sent through the sending API: an append-only block per template and minute.

They sit beside the generated blocks of the same minute (:class:`MessageStore` draws
their outcomes). A message's id grows with the count of messages sent before it, so a
sent block only ever grows at its end; a send request that named a ``statusCallback``
or an ``extend`` keeps it for the range of its messages in the block.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from dataclasses import dataclass

from exporter.simulator.traffic import Block


@dataclass(frozen=True, slots=True)
class SentMeta:
    """What a send request asked for its reports: its statusCallback and its extend."""

    callback: str | None
    extend: str | None


@dataclass(frozen=True, slots=True)
class Sent:
    """Messages the sending API accepted: when, and their ids in the order of the numbers."""

    send_ms: int
    template: int
    chunk: int
    first: int
    """The index of the first of them in the template's sent block of ``chunk``."""
    message_ids: tuple[str, ...]


class SentBlocks:
    """Every template's sent blocks by minute, and what their send requests asked."""

    def __init__(self, templates: int) -> None:
        self.blocks: list[dict[int, Block]] = [{} for _ in range(templates)]
        """Per template, its sent block of each minute (in minutes since the epoch)."""
        # Per (template, minute): (first, end, meta) of each request that named a
        # statusCallback or an extend, by index in the block (ordered by first).
        self._meta: dict[tuple[int, int], list[tuple[int, int, SentMeta]]] = {}

    def append(self, fresh: Block, meta: SentMeta | None) -> int:
        """Add ``fresh`` at the end of its template's block of its minute; its first index."""
        template, chunk = fresh.template, fresh.chunk
        block = self.blocks[template].setdefault(chunk, _empty(template, chunk))
        first = len(block)
        for name in ("send_ms", "report_ms", "codes", "segments", "mobiles", "id_hi", "id_lo"):
            getattr(block, name).extend(getattr(fresh, name))
        block.reindex()
        if meta is not None and (meta.callback or meta.extend):
            self._meta.setdefault((template, chunk), []).append((first, len(block), meta))
        return first

    def meta_of(self, template: int, chunk: int, index: int) -> SentMeta | None:
        """What the send request of a message of a sent block asked for its reports."""
        ranges = self._meta.get((template, chunk))
        if not ranges:
            return None
        k = bisect_right(ranges, index, key=lambda r: r[0]) - 1
        return ranges[k][2] if k >= 0 and index < ranges[k][1] else None

    def drop(self, template: int, chunk: int) -> None:
        """Forget the template's sent block of a minute and what its requests asked."""
        self.blocks[template].pop(chunk, None)
        self._meta.pop((template, chunk), None)

    @property
    def requests(self) -> int:
        """Send requests whose statusCallback or extend is kept for their messages."""
        return sum(len(ranges) for ranges in self._meta.values())


def _empty(template: int, chunk: int) -> Block:
    return Block(
        template,
        chunk,
        send_ms=array("q"),
        report_ms=array("q"),
        codes=array("H"),
        segments=array("B"),
        mobiles=array("Q"),
        id_hi=array("Q"),
        id_lo=array("Q"),
    )
