"""Range arithmetic over sending time: minutes, runs of minutes, chunks and coalesced ranges.

Pure: numbers in, ranges out. A range is ``[start, end)`` in epoch seconds; minutes are
identified by their start.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

from exporter.config import RESOLUTION_SECONDS
from exporter.ledger import bucket_of

MINUTE = RESOLUTION_SECONDS
MILLI = 0.001
PAGE_FILL = 0.8
"""A coalesced range aims at this share of a page, leaving room for a density estimate off."""
SEND_TIME_GRAIN = 1.0
"""Send times are whole seconds (as the console and status reports show them): a range
narrower than a second costs as much as the whole second, every record sent in it."""


def minute_floor(seconds: float) -> int:
    """Start of the minute a timestamp falls in."""
    return bucket_of(seconds, MINUTE)


def runs(minutes: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted minutes as contiguous [start, end) runs."""
    out: list[tuple[int, int]] = []
    for minute in sorted(minutes):
        if out and out[-1][1] == minute:
            out[-1] = (out[-1][0], minute + MINUTE)
        else:
            out.append((minute, minute + MINUTE))
    return out


def chunks_newest_first(spans: list[tuple[int, int]], size: int) -> Iterator[tuple[int, int]]:
    """Split runs into chunks of at most ``size`` seconds, newest chunk first."""
    for start, end in sorted(spans, reverse=True):
        while end > start:
            yield max(start, end - size), end
            end = max(start, end - size)


def coalesce(
    times: list[float],
    density: float,
    page_size: int,
    max_span: float,
    *,
    grain: float = MILLI,
) -> list[tuple[float, float]]:
    """Group sorted send times into [start, end) ranges expected to fit one page each.

    ``density`` is records per second around them; a gap costs the records inside it.
    Each time stands for ``grain`` seconds (the resolution of send times). No range spans
    ``max_span`` seconds or more.
    """
    groups: list[tuple[float, float]] = []
    for t in times:
        if groups:
            start, end = groups[-1]
            if t < end:
                continue  # within the range already (same second)
            fits = (t + grain - start) * density < page_size * PAGE_FILL
            if fits and t + grain - start <= max_span:
                groups[-1] = (start, t + grain)
                continue
        groups.append((t, t + grain))
    return groups


def pages(ranges: list[tuple[float, float]], density: float, page_size: int) -> int:
    """Requests the ranges are expected to cost at ``density`` records a second."""
    return sum(max(1, math.ceil((end - start) * density / page_size)) for start, end in ranges)


def spans_within(minutes: list[int], max_span: float) -> list[list[int]]:
    """Split sorted minutes into groups whose [first, last + 1 min) spans ``max_span`` at most."""
    groups: list[list[int]] = []
    for minute in minutes:
        if groups and minute + MINUTE - groups[-1][0] <= max_span:
            groups[-1].append(minute)
        else:
            groups.append([minute])
    return groups
