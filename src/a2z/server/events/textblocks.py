"""Gram blocks of closed hours: which stored rows a free-text term may be in (ADR 0023).

The rollup pass (``maintenance``) cuts each tenant's rows of the hours it has closed into
blocks of ``BLOCK_ROWS`` consecutive rows in ``ts`` order and stores, per block, its time range
and a Bloom filter of its free-text 3-grams (``grams``). For a term, ``regions`` answers with
the time ranges a page must read: the blocks whose filter may hold every gram of the term, and
every hour no verified block covers (open hours, a day a late record changed), read raw. The
page still applies the ILIKE to each row it reads, so answers are those of the raw rows.

A day's blocks are trusted as the rollups are (``rollups``): only while the day's stored usage
minus its rows at or after the blocks' ``through`` equals the rows the blocks hold.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, text

from a2z.server.events import grams, rollups, search
from a2z.server.events.models import Event, EventTextBlock, StoredUsage
from a2z.server.store.partitions import DAY
from a2z.server.store.session import ScopedSession

HOUR = 3600
BLOCK_ROWS = 256
"""Rows per block: ~400 blocks for a tenant's 100,000 events, so reading every filter of a
tenant stays cheap, and a block let through costs a range read of a few hundred rows."""

Region = tuple[float | None, float | None]
"""A closed time range ``[low, high]`` of rows to read; None: unbounded on that side."""


@dataclass
class BuildReport:
    """What one tenant's pass indexed: rows, blocks written, days rebuilt, seconds spent."""

    rows: int = 0
    blocks: int = 0
    rebuilt: int = 0
    seconds: float = 0.0


def refresh(*, session: ScopedSession, now: float, lag: float) -> BuildReport:
    """Build the session tenant's blocks of the hours that ended ``lag`` seconds before ``now``.

    Per day with stored usage: blocks that still check out are extended over the newly closed
    hours; a day that does not (a record came late into an indexed hour) is rebuilt. Idempotent:
    a second call with the same ``now`` finds nothing to do.
    """
    started = time.perf_counter()
    closed = math.floor((now - lag) / HOUR) * HOUR
    report = BuildReport()
    last = math.ceil(closed / DAY) - 1  # the last day with a closed hour
    for state in _days(session, first=None, last=last, with_blocks=False):
        day, through = state.day, state.through
        want = min((day + 1) * DAY, closed)
        if through is not None and state.verified:
            if through >= want:
                continue
            start, first = through, state.blocks
        else:
            if through is not None:
                report.rebuilt += 1
                session.execute(delete(EventTextBlock).where(EventTextBlock.day == day))
            start, first = day * DAY, 0
        rows, written = _build(session, day, start, want, first)
        report.rows += rows
        report.blocks += written
    report.seconds = time.perf_counter() - started
    return report


@dataclass(frozen=True, slots=True)
class _Day:
    """One usage day as the blocks see it."""

    day: int
    through: int | None  # how far its blocks reach (None: no blocks)
    rows: int  # rows its blocks hold
    blocks: int
    in_closed_hours: int  # its stored usage minus its rows at or after ``through``

    @property
    def verified(self) -> bool:
        """The blocks hold every row of the day before ``through`` (no late record since)."""
        return self.through is not None and self.rows == self.in_closed_hours


def _days(
    session: ScopedSession, *, first: int | None, last: int | None, with_blocks: bool
) -> list[_Day]:
    """The session tenant's usage days in ``[first, last]`` (only those with blocks if
    ``with_blocks``), oldest first, each checked against its rows.

    Two statements: the blocks' extent per day, then usage minus the rows after it
    (``rollups.rows_before``: one snapshot of usage and rows).
    """
    extent = select(
        EventTextBlock.day,
        func.max(EventTextBlock.through),
        func.sum(EventTextBlock.rows),
        func.count(),
    ).group_by(EventTextBlock.day)
    usage = select(StoredUsage.day)
    if first is not None:
        extent, usage = (
            extent.where(EventTextBlock.day >= first),
            usage.where(StoredUsage.day >= first),
        )
    if last is not None:
        extent, usage = (
            extent.where(EventTextBlock.day <= last),
            usage.where(StoredUsage.day <= last),
        )
    built = {int(d): (int(t), int(r), int(n)) for d, t, r, n in session.execute(extent)}
    days = sorted(built) if with_blocks else sorted(int(d) for d in session.scalars(usage))
    starts = {day: built[day][0] if day in built else day * DAY for day in days}
    out = []
    for day, in_closed_hours in sorted(rollups.rows_before(session, starts).items()):
        through, rows, blocks = built.get(day, (None, 0, 0))
        out.append(_Day(day, through, rows, blocks, in_closed_hours))
    return out


def _build(session: ScopedSession, day: int, start: int, end: int, first: int) -> tuple[int, int]:
    """Blocks of the rows in ``[start, end)``, numbered from ``first``; (rows, blocks)."""
    rows_read = (
        select(Event.ts, *search.FREE_TEXT_COLUMNS)
        .where(Event.tenant_id == session.tenant_id, Event.ts >= start, Event.ts < end)
        .order_by(Event.ts)
    )
    tenant = session.tenant_id
    values: list[dict[str, Any]] = []
    n_rows = 0
    for number, chunk in enumerate(_chunks(session.execute(rows_read), BLOCK_ROWS), first):
        held: set[str] = set()
        for row in chunk:
            for value in row[1:]:
                if value:
                    held |= grams.value_grams(value)
        values.append(
            {
                "tenant_id": tenant, "day": day, "block": number, "ts_lo": chunk[0][0],
                "ts_hi": chunk[-1][0], "rows": len(chunk), "through": end,
                "bloom": grams.build_filter(held),
            }
        )  # fmt: skip
        n_rows += len(chunk)
    if values:
        session.execute(insert(EventTextBlock), values)
    return n_rows, len(values)


def _chunks(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass(frozen=True, slots=True)
class Plan:
    """A free-text page through the blocks: first the rows at or after ``through`` (after
    every block: the open hours, read raw, where a common term fills the page at once), then,
    only if the page is not full, the regions below it (``rest``: the day checks and the
    filter lookup)."""

    term: str
    since: float | None
    until: float | None
    through: float  # the newest ``through`` of the tenant's blocks

    def rest(self, session: ScopedSession) -> list[Region]:
        """The regions older than ``through``, newest first."""
        below = math.nextafter(self.through, -math.inf)  # the ts just before ``through``
        found = regions(session, self.term, self.since, self.until)
        if found is None:
            return [(None, below)]
        out: list[Region] = []
        for lo, hi in found:
            if lo is not None and lo > below:
                continue
            out.append((lo, below if hi is None or hi > below else hi))
        return out


def plan(
    session: ScopedSession, term: str, since: float | None, until: float | None
) -> Plan | None:
    """How to read a free-text page of ``term`` through the blocks; None when they cannot help
    (a short or non-ASCII term, not PostgreSQL, no blocks yet): read the rows as before."""
    if grams.term_grams(term) is None or session.get_bind().dialect.name != "postgresql":
        return None
    through = session.scalar(select(func.max(EventTextBlock.through)))
    return None if through is None else Plan(term, since, until, float(through))


def regions(
    session: ScopedSession, term: str, since: float | None, until: float | None
) -> list[Region] | None:
    """The time ranges, newest first and disjoint, outside which no row of the session tenant
    in ``[since, until)`` contains ``term``; None when the blocks cannot tell (a short or
    non-ASCII term, or no verified block in the range: read the rows as before).

    Only PostgreSQL: the filter bits are tested in SQL (``get_bit``), over the tenant's few
    hundred blocks, so only the blocks that may hold the term come back.
    """
    wanted = grams.term_grams(term)
    if wanted is None or session.get_bind().dialect.name != "postgresql":
        return None
    spans = _verified_spans(session, since, until)
    if not spans:
        return None
    # Every filter's size divides MAX_BITS (powers of two), so a position modulo MAX_BITS,
    # taken again modulo the block's size in SQL, is the bit ``grams.positions`` names.
    bits = sorted({p for g in wanted for p in grams.positions(g, grams.MAX_BITS)})
    params = {"tenant": session.tenant_id, "days": [day for day, _, _ in spans], "bits": bits}
    found: list[Region] = [
        (float(lo), float(hi)) for lo, hi in session.execute(_CANDIDATES, params)
    ]
    # Every time outside the verified spans is read raw (a row read twice at an edge costs
    # nothing: ``_merged`` joins touching ranges). Floats: psycopg refuses mixed-type arrays.
    found += rollups.gaps([(float(start), float(end)) for _, start, end in spans], None, None)
    return _merged(found, since, until)


_CANDIDATES = text(
    "SELECT ts_lo, ts_hi FROM event_text_blocks"
    " WHERE tenant_id = :tenant AND day = ANY(:days) AND NOT EXISTS ("
    " SELECT 1 FROM unnest(CAST(:bits AS integer[])) AS p"
    " WHERE get_bit(bloom, p % (octet_length(bloom) * 8)) = 0)"
)
"""The blocks whose filter has every bit of the term's grams (a text statement with the bits as
one array: the same statement for every term, cheap to build; the tenant also by RLS)."""


def _verified_spans(
    session: ScopedSession, since: float | None, until: float | None
) -> list[tuple[int, int, int]]:
    """``(day, start, through)`` of each day whose blocks still hold every row of its hours
    before ``through``, in ``[since, until)``."""
    first = None if since is None else int(since // DAY)
    last = None if until is None else int(until // DAY)
    out = []
    for state in _days(session, first=first, last=last, with_blocks=True):
        if state.verified and state.through is not None:
            out.append((state.day, state.day * DAY, state.through))
    return out


def _merged(found: list[Region], since: float | None, until: float | None) -> list[Region]:
    """``found`` clipped to ``[since, until]``, overlapping or touching ranges joined, newest
    first: the order a page reads them in, each entirely newer than the next."""
    clipped: list[tuple[float, float]] = []
    for lo, hi in found:
        low = -math.inf if lo is None else lo
        high = math.inf if hi is None else hi
        if since is not None:
            low = max(low, since)
        if until is not None:
            high = min(high, until)
        if low <= high:
            clipped.append((low, high))
    clipped.sort(reverse=True)
    out: list[tuple[float, float]] = []
    for low, high in clipped:  # by ``low``, newest first
        out.append((low, high))
        # A range reaching into the one before it (a gap with no lower bound reaches far)
        # joins it, and then perhaps the one before that.
        while len(out) > 1 and out[-1][1] >= out[-2][0]:
            (low1, high1), (low2, high2) = out.pop(), out.pop()
            out.append((min(low1, low2), max(high1, high2)))
    return [(None if lo == -math.inf else lo, None if hi == math.inf else hi) for lo, hi in out]


def forget_before(*, session: ScopedSession, day: int) -> None:
    """Remove the session tenant's blocks of days before ``day`` (retention took their rows)."""
    session.execute(delete(EventTextBlock).where(EventTextBlock.day < day))
