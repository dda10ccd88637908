"""Per-tenant rollups of closed hours: counts the histogram and top-N read instead of raw rows.

A maintenance job (``refresh``) counts each tenant's events per hour, record type and value of
the low-cardinality fields (``ROLLED``) into ``EventRollup``, for hours that ended at least
``lag`` ago, and sums a closed day's hours into one day row. ``RollupDay`` records, per day,
the hour the rollup reaches (``through``) and how many events those hours held.

A query trusts a day's rollup only if, in one statement (one snapshot), the day's stored usage
(``StoredUsage``, written by ingest in the same transaction as the rows) minus the rows at or
after ``through`` equals ``RollupDay.events``. A record that arrived late into a rolled-up
hour raises the usage but not the rollup, so its day is read from the raw rows until the job
rolls that day up again (``refresh`` redoes a day that fails the same check). Answers are
therefore those of the raw rows; the rollup only decides how fast they come.

``coverage`` turns a time range into the rolled-up, verified spans and the gaps left to the raw
rows; ``search`` adds the two parts in one statement. Nothing here changes the ingest path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    String,
    and_,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import InstrumentedAttribute

from a2z.server.events.models import Event, EventRollup, RollupDay, StoredUsage
from a2z.server.store.partitions import DAY
from a2z.server.store.session import ScopedSession

HOUR = 3600

TYPE = "type"
ROLLED: dict[str, InstrumentedAttribute[Any]] = {
    TYPE: Event.path,
    "resp_h": Event.resp_h,
    "resp_p": Event.resp_p,
    "query": Event.query,
    "host": Event.host,
    "server_name": Event.server_name,
    "user_agent": Event.user_agent,
    "status_code": Event.status_code,
}
"""Fields counted per value. Left out, read from raw rows: fields with about one value per
event (uid, uri, title, orig_p), where a rollup would be as large as the rows, and orig_h
(a client address: one per host of a large network)."""

NUMERIC = frozenset({"resp_p", "status_code"})
"""Rolled fields stored as decimal text, ordered and returned as integers."""


@dataclass(frozen=True, slots=True)
class Coverage:
    """A query range split into rolled-up spans and gaps read from the raw rows.

    ``spans`` are ``[start, end)`` in epoch seconds, on hours, verified, merged and in order;
    ``gaps`` cover the rest of the range (None: unbounded on that side).
    """

    spans: tuple[tuple[int, int], ...] = ()
    gaps: tuple[tuple[float | None, float | None], ...] = ((None, None),)

    def raw_clause(self) -> ColumnElement[bool] | None:
        """What narrows the raw rows to the gaps; None when they are the whole range."""
        if self.gaps == ((None, None),):
            return None
        parts = []
        for low, high in self.gaps:
            bounds = []
            if low is not None:
                bounds.append(Event.ts >= low)
            if high is not None:
                bounds.append(Event.ts < high)
            parts.append(and_(*bounds))
        if not parts:  # the rollup covers the whole range
            return literal(False)
        return or_(*parts)

    def rollup_clause(self, *, whole_days: bool) -> ColumnElement[bool]:
        """``EventRollup`` rows of the spans: by hour, or whole days by their day row (fewer
        rows to add up over a long range) and the rest by hour."""
        parts: list[ColumnElement[bool]] = []
        for start, end in self.spans:
            first_day, last_day = -(-start // DAY), end // DAY  # whole days inside the span
            if whole_days and first_day < last_day:
                parts.append(_slots(DAY, first_day, last_day))
                parts.append(_slots(HOUR, start // HOUR, first_day * DAY // HOUR))
                parts.append(_slots(HOUR, last_day * DAY // HOUR, end // HOUR))
            else:
                parts.append(_slots(HOUR, start // HOUR, end // HOUR))
        return or_(*parts) if parts else literal(False)


def _slots(grain: int, first: int, end: int) -> ColumnElement[bool]:
    if first >= end:
        return literal(False)
    return and_(EventRollup.grain == grain, EventRollup.slot >= first, EventRollup.slot < end)


NO_ROLLUP = Coverage()


def coverage(session: ScopedSession, since: float | None, until: float | None) -> Coverage:
    """The rolled-up, verified part of ``[since, until)`` and the gaps around it."""
    low = None if since is None else math.ceil(since / HOUR) * HOUR
    high = None if until is None else math.floor(until / HOUR) * HOUR
    stmt = select(RollupDay.day, RollupDay.through, RollupDay.events)
    if low is not None:
        stmt = stmt.where(RollupDay.day >= low // DAY)
    if high is not None:
        stmt = stmt.where(RollupDay.day <= high // DAY)
    rolled = {int(d): (int(t), int(e)) for d, t, e in session.execute(stmt)}
    closed = rows_before(session, {day: through for day, (through, _) in rolled.items()})
    spans: list[tuple[int, int]] = []
    for day in sorted(closed):
        through, events = rolled[day]
        if events != closed[day]:
            continue  # a record came late into a rolled-up hour: raw rows for this day
        start, end = day * DAY, through
        if low is not None:
            start = max(start, low)
        if high is not None:
            end = min(end, high)
        if start >= end:
            continue
        if spans and spans[-1][1] == start:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    if not spans:
        return NO_ROLLUP
    return Coverage(tuple(spans), gaps(spans, since, until))


def gaps(
    spans: Sequence[tuple[float, float]], since: float | None, until: float | None
) -> tuple[tuple[float | None, float | None], ...]:
    """What ``spans`` (``[start, end)``, in order, disjoint) leave of ``[since, until)``
    (None: unbounded), as ranges in order: the parts that must be read from the raw rows."""
    gaps: list[tuple[float | None, float | None]] = []
    cursor: float | None = since
    for start, end in spans:
        if cursor is None or cursor < start:
            gaps.append((cursor, start))
        cursor = end
    if until is None or cursor is None or cursor < until:
        gaps.append((cursor, until))
    return tuple(gaps)


def rows_before(session: ScopedSession, starts: Mapping[int, int]) -> dict[int, int]:
    """Per usage day in ``starts``: the day's stored usage minus its rows at or after
    ``starts[day]``, i.e. how many of its rows lie before that point if nothing came late.
    Days without stored usage are left out.

    One statement, so usage and rows are read in the same snapshot (ingest writes both in one
    transaction). The bounds go in as constants, so each count is a range of the
    ``(tenant_id, ts)`` index in one partition. Correlated to ``RollupDay`` instead (bounds
    from its columns, every partition in the plan), the same check took ~100 ms per tenant
    with 10,000 open rows against ~10 (2026-11-28, docs/benchmarks.md, Ingest).
    """
    if not starts:
        return {}
    tenant = session.tenant_id
    parts = []
    for day, start in sorted(starts.items()):
        later = (
            select(func.count())
            .where(Event.tenant_id == tenant, Event.ts >= start, Event.ts < (day + 1) * DAY)
            .scalar_subquery()
        )
        parts.append(
            select(StoredUsage.day, StoredUsage.events - later).where(
                StoredUsage.tenant_id == tenant, StoredUsage.day == day
            )
        )
    stmt = parts[0] if len(parts) == 1 else union_all(*parts)
    return {int(day): int(before) for day, before in session.execute(stmt)}


def rollup_value(
    name: str, raw: InstrumentedAttribute[Any]
) -> ColumnElement[Any] | InstrumentedAttribute[Any]:
    """A raw column as it is stored in ``EventRollup.value`` (text)."""
    return cast(raw, String) if name in NUMERIC else raw


def ordered_value(name: str, value: ColumnElement[Any]) -> ColumnElement[Any]:
    """``EventRollup.value`` ordered as the raw column orders (numbers as numbers)."""
    return cast(value, BigInteger) if name in NUMERIC else value


@dataclass
class RefreshReport:
    """What one tenant's refresh did: days extended, days redone (a late record), and rows."""

    extended: list[int] = field(default_factory=list)
    redone: list[int] = field(default_factory=list)
    rolled_events: int = 0


def refresh(*, session: ScopedSession, now: float, lag: float) -> RefreshReport:
    """Roll the session tenant's hours that ended at least ``lag`` seconds before ``now``.

    Per day with stored usage: a day whose rollup still checks out is extended to the new
    closed hours; one that does not (a record came late into a rolled-up hour) is rolled up
    again from its raw rows. A closed day also gets its day rows (the sum of its hours).
    """
    closed = math.floor((now - lag) / HOUR) * HOUR
    report = RefreshReport()
    state = (
        select(StoredUsage.day, RollupDay.through, RollupDay.events)
        .outerjoin(
            RollupDay,
            and_(RollupDay.tenant_id == StoredUsage.tenant_id, RollupDay.day == StoredUsage.day),
        )
        .where(StoredUsage.day * DAY < closed)
    )
    # Outer join: a day not rolled up yet has no ``RollupDay`` (None, None).
    rolled: dict[int, tuple[int | None, int | None]] = {
        int(d): (t, e) for d, t, e in session.execute(state)
    }
    before = rows_before(
        session, {d: int(t) if t is not None else d * DAY for d, (t, _) in rolled.items()}
    )
    for day, in_closed_hours in sorted(before.items()):
        through, events = rolled[day]
        day_end = (day + 1) * DAY
        want = min(day_end, closed)
        if through is not None and events == in_closed_hours:
            if through >= want:
                continue
            start, base = int(through), int(events)
            report.extended.append(day)
        else:
            if through is not None:
                report.redone.append(day)
                _forget_day(session, day)
            else:
                report.extended.append(day)
            start, base = day * DAY, 0
        added = _roll_hours(session, start, want)
        if want == day_end:
            _roll_day(session, day)
        _record(session, day, want, base + added)
        report.rolled_events += added
    return report


def _roll_hours(session: ScopedSession, start: int, end: int) -> int:
    """Count the raw rows of ``[start, end)`` into hour rows; returns how many events."""
    if start >= end:
        return 0
    tenant = session.tenant_id
    slot = cast(Event.ts / HOUR, Integer)  # ts >= 0: truncation is floor, on both stores
    if session.get_bind().dialect.name == "postgresql":
        slot = cast(func.floor(Event.ts / HOUR), Integer)
    for name, column in ROLLED.items():
        value = rollup_value(name, column)
        rows = (
            select(literal(tenant), literal(name), literal(HOUR), slot, Event.path, value)
            .add_columns(func.count())
            .where(Event.tenant_id == tenant, Event.ts >= start, Event.ts < end)
            .where(column.is_not(None))
            .group_by(slot, Event.path, value)
        )
        session.execute(insert(EventRollup).from_select(_ROLLUP_COLUMNS, rows))
    total = session.scalar(
        select(func.coalesce(func.sum(EventRollup.n), 0)).where(
            EventRollup.field == TYPE,
            EventRollup.grain == HOUR,
            EventRollup.slot >= start // HOUR,
            EventRollup.slot < end // HOUR,
        )
    )
    return int(total or 0)  # the range had no hour rows before: it lay after ``through``


_ROLLUP_COLUMNS = ["tenant_id", "field", "grain", "slot", "path", "value", "n"]


def _roll_day(session: ScopedSession, day: int) -> None:
    """A closed day's day rows: the sum of its hour rows."""
    rows = (
        select(EventRollup.tenant_id, EventRollup.field, literal(DAY), literal(day))
        .add_columns(EventRollup.path, EventRollup.value, func.sum(EventRollup.n))
        .where(EventRollup.tenant_id == session.tenant_id)
        .where(_fields(), _slots(HOUR, day * 24, (day + 1) * 24))
        .group_by(EventRollup.tenant_id, EventRollup.field, EventRollup.path, EventRollup.value)
    )
    session.execute(insert(EventRollup).from_select(_ROLLUP_COLUMNS, rows))


def _fields() -> ColumnElement[bool]:
    # Every field named: the key leads with (tenant_id, field), so a day's rows are found by
    # one index range per field instead of a scan of the tenant's whole rollup.
    return EventRollup.field.in_(list(ROLLED))


def _forget_day(session: ScopedSession, day: int) -> None:
    session.execute(
        delete(EventRollup).where(
            _fields(),
            or_(_slots(HOUR, day * 24, (day + 1) * 24), _slots(DAY, day, day + 1)),
        )
    )
    session.execute(delete(RollupDay).where(RollupDay.day == day))


def _record(session: ScopedSession, day: int, through: int, events: int) -> None:
    row = session.get(RollupDay, (session.tenant_id, day))
    if row is None:
        session.add(RollupDay(tenant_id=session.tenant_id, day=day, through=through, events=events))
    else:
        row.through, row.events = through, events
    session.flush()


def forget_before(*, session: ScopedSession, day: int) -> None:
    """Remove the session tenant's rollups of days before ``day`` (retention took their rows)."""
    session.execute(
        delete(EventRollup).where(
            _fields(),
            or_(
                and_(EventRollup.grain == HOUR, EventRollup.slot < day * 24),
                and_(EventRollup.grain == DAY, EventRollup.slot < day),
            ),
        )
    )
    session.execute(delete(RollupDay).where(RollupDay.day < day))


def days(*, session: ScopedSession) -> list[tuple[int, int, int]]:
    """``(day, through, events)`` of the session tenant's rollup (tests, the CLI)."""
    rows = session.execute(
        select(RollupDay.day, RollupDay.through, RollupDay.events).order_by(RollupDay.day)
    )
    return [(int(d), int(t), int(e)) for d, t, e in rows]
