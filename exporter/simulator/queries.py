"""What a query reads: the visible slices of a minute's blocks, filtered, counted, in order.

Pure functions over :class:`~exporter.simulator.traffic.Block` slices (``Piece``), at a
simulated instant ``now`` (epoch milliseconds): a message is ``sending`` until its
report time, then final. :class:`~exporter.simulator.store.MessageStore` finds the
slices a query may see (send times, review holds, retention) and hands them here.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.records import SendRecord, SendResult, mask_mobile
from exporter.simulator.template_specs import TemplateSpec
from exporter.simulator.traffic import CODES, DELIVERED, Block, format_message_id
from exporter.status_codes import describe

Piece = tuple[Block, int, int]
"""The slice [lo, hi) of a block that a query may see."""
Group = tuple[int, list[Piece]]
"""A minute (in minutes since the epoch) and its pieces."""


@dataclass(frozen=True, slots=True)
class Filters:
    """The console's filters, in store units (milliseconds, digits as an integer)."""

    start_ms: int
    end_ms: int
    template_id: str | None = None
    mobile: int | None = None
    send_result: SendResult | None = None


def result_of(block: Block, i: int, now_ms: int) -> SendResult:
    """The send result of message ``i`` of ``block`` at ``now_ms``."""
    if block.report_ms[i] > now_ms:
        return SendResult.SENDING
    return SendResult.SUCCESS if block.codes[i] == DELIVERED else SendResult.FAILED


def matches(piece: Piece, f: Filters, now_ms: int) -> Iterator[int]:
    """The indexes of the piece's messages that pass the mobile and result filters."""
    block, lo, hi = piece
    if f.mobile is not None and not block.has_mobile(f.mobile):
        return
    for i in range(lo, hi):
        if f.mobile is not None and block.mobiles[i] != f.mobile:
            continue
        if f.send_result is not None and result_of(block, i, now_ms) is not f.send_result:
            continue
        yield i


def count(piece: Piece, f: Filters, now_ms: int) -> int:
    """How many of the piece's messages pass the filters, without a scan when it can."""
    block, lo, hi = piece
    if f.mobile is None and f.send_result is None:
        return hi - lo
    if f.mobile is None and lo == 0 and hi == len(block):
        ok = bisect_right(block.success_reports, now_ms)
        bad = bisect_right(block.failed_reports, now_ms)
        counts = {
            SendResult.SUCCESS: ok,
            SendResult.FAILED: bad,
            SendResult.SENDING: len(block) - ok - bad,
        }
        return counts[f.send_result] if f.send_result is not None else hi - lo
    return sum(1 for _ in matches(piece, f, now_ms))


class MergedOrder:
    """A minute's matching messages in (send time, id) order, the last 16 orders kept."""

    def __init__(self) -> None:
        self._merged: OrderedDict[tuple[Any, ...], list[tuple[Block, int]]] = OrderedDict()

    def clear(self) -> None:
        """Forget every order: a block changed."""
        self._merged.clear()

    def ordered(
        self, chunk: int, pieces: list[Piece], f: Filters, now_ms: int
    ) -> list[tuple[Block, int]]:
        """The matching messages of the minute's pieces, in order."""
        if len(pieces) == 1 and f.mobile is None and f.send_result is None:
            block, lo, hi = pieces[0]
            return [(block, i) for i in range(lo, hi)]
        key = (
            chunk,
            # The block itself: a template's minute may have a generated and a sent block.
            tuple((id(b), lo, hi) for b, lo, hi in pieces),
            f.mobile,
            f.send_result,
            now_ms if f.send_result else None,
        )
        cached = self._merged.get(key)
        if cached is not None:
            self._merged.move_to_end(key)
            return cached
        rows = [
            (block.send_ms[i], block.id_hi[i], block.id_lo[i], block, i)
            for piece in pieces
            for block in [piece[0]]
            for i in matches(piece, f, now_ms)
        ]
        if len(pieces) > 1:
            rows.sort(key=lambda r: (r[0], r[1], r[2]))
        ordered = [(r[3], r[4]) for r in rows]
        self._merged[key] = ordered
        if len(self._merged) > 16:
            self._merged.popitem(last=False)
        return ordered


def page(
    groups: Iterable[Group],
    f: Filters,
    offset: int,
    limit: int,
    now_ms: int,
    order: MergedOrder,
    templates: Sequence[TemplateSpec],
) -> tuple[int, list[SendRecord]]:
    """``total`` matching messages and the page [offset, offset + limit) in order."""
    total = 0
    records: list[SendRecord] = []
    for chunk, pieces in groups:
        n = sum(count(p, f, now_ms) for p in pieces)
        want_from, want_to = offset + len(records), offset + limit
        if n and want_from < want_to and total + n > want_from:
            ordered = order.ordered(chunk, pieces, f, now_ms)
            skip = want_from - total
            for block, i in ordered[skip : skip + want_to - want_from]:
                records.append(record(block, i, now_ms, templates))
        total += n
    return total, records


def record(block: Block, i: int, now_ms: int, templates: Sequence[TemplateSpec]) -> SendRecord:
    """Message ``i`` of ``block`` as the console shows it at ``now_ms`` (mobile masked)."""
    result = result_of(block, i, now_ms)
    code = "" if result is SendResult.SENDING else CODES.codes[block.codes[i]]
    return SendRecord(
        message_id=format_message_id(block.id_hi[i], block.id_lo[i]),
        template_id=templates[block.template].template_id,
        mobile=mask_mobile(str(block.mobiles[i])),
        send_time=block.send_ms[i] / 1000,
        send_result=result,
        status_code=code,
        status_desc=describe(code) if code else "",
        receive_time=None if result is SendResult.SENDING else block.report_ms[i] / 1000,
        segments=block.segments[i],
    )


def tally(groups: Iterable[Group], now_ms: int) -> dict[str, Any]:
    """One template's truth: results, final status codes and delivered delay sum."""
    ok = bad = sending = delay_ms = 0
    codes: dict[int, int] = {}
    for _, pieces in groups:
        for block, lo, hi in pieces:
            reports, kinds, sends = block.report_ms, block.codes, block.send_ms
            for i in range(lo, hi):
                report = reports[i]
                if report > now_ms:
                    sending += 1
                    continue
                code = kinds[i]
                codes[code] = codes.get(code, 0) + 1
                if code == DELIVERED:
                    ok += 1
                    delay_ms += report - sends[i]
                else:
                    bad += 1
    return {
        "success": ok,
        "failed": bad,
        "sending": sending,
        "status_codes": dict(sorted((CODES.codes[c], n) for c, n in codes.items())),
        "delivery_delay_seconds_sum": delay_ms / 1000,
    }


def find_mobile(blocks: Iterable[Block], message_id: str) -> str | None:
    """The full number the message ``message_id`` went to, if one of ``blocks`` holds it."""
    digits = message_id.partition("_")[0].replace("-", "")
    try:
        ident = int(digits, 16)
    except ValueError:
        return None
    hi, lo = ident >> 64, ident & ((1 << 64) - 1)
    for block in blocks:
        for i, value in enumerate(block.id_lo):
            if value == lo and block.id_hi[i] == hi:
                return str(block.mobiles[i])
    return None
