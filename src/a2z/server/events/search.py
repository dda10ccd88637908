"""Event search: filters over the typed columns, and the aggregations dashboards draw.

Every statement here is an ORM ``select`` on ``Event``, so the session factory adds the tenant
(and PostgreSQL row-level security applies underneath): a filter can narrow a tenant's rows,
never widen them to another tenant's.

Matching, the same on SQLite and PostgreSQL:

- strings: equality, or a prefix when the value ends in ``*`` (case-sensitive; no other
  character is special);
- addresses: one address or a CIDR block, compared on ``orig_ip``/``resp_ip``, the address as
  its 16 bytes in network order (IPv4 mapped into ``::ffff:0:0/96``), which sort like the
  addresses under a byte comparison, so a block is an indexed range on both stores with no
  per-row address parsing (ADR 0028);
- free text ``q``: a case-insensitive substring of any of the main strings (PostgreSQL
  ``ILIKE``; SQLite ``lower() LIKE``, ASCII case only). No index serves it under RLS; on
  PostgreSQL a page reads only the blocks of closed hours whose 3-gram filter may hold the
  term, and the hours no block covers (``textblocks``, ADR 0023), still testing each row
  with the ILIKE. Elsewhere it scans the tenant's rows left by the other filters.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    cast,
    func,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.orm import InstrumentedAttribute

from a2z.server.errors import InvalidInput
from a2z.server.events import rollups
from a2z.server.events.models import Event, EventRollup
from a2z.server.store.session import ScopedSession

MAX_BUCKETS = 10_000
"""A histogram with more non-empty buckets than this is refused: widen the bucket."""

V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"
"""The first 12 bytes of an IPv4 address's key: ``::ffff:a.b.c.d``."""


def ip_key(address: str) -> bytes | None:
    """``address`` as 16 bytes that sort like the address; None if it is not one."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return _key(ip)


def _key(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    return V4_MAPPED_PREFIX + ip.packed if ip.version == 4 else ip.packed


@dataclass(frozen=True, slots=True)
class AddressMatch:
    """An inclusive range of ``ip_key`` values: one address or a CIDR block."""

    low: bytes
    high: bytes

    @classmethod
    def parse(cls, text: str) -> AddressMatch:
        """``10.0.0.1``, ``10.0.0.0/8``, ``2001:db8::/32``; InvalidInput otherwise."""
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError as exc:
            raise InvalidInput(f"not an address or CIDR block: {text!r}") from exc
        return cls(_key(net.network_address), _key(net.broadcast_address))


@dataclass(frozen=True, slots=True)
class TextMatch:
    """Equality, or a prefix when the query value ended in ``*``."""

    value: str
    prefix: bool

    @classmethod
    def parse(cls, text: str) -> TextMatch:
        if text.endswith("*"):
            return cls(text[:-1], True)
        return cls(text, False)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What a search or an aggregation is narrowed to; every field optional (None = any)."""

    since: float | None = None  # inclusive, epoch seconds
    until: float | None = None  # exclusive
    path: str | None = None  # record type
    uid: TextMatch | None = None
    orig_h: AddressMatch | None = None
    resp_h: AddressMatch | None = None
    orig_p: int | None = None
    resp_p: int | None = None
    query: TextMatch | None = None
    host: TextMatch | None = None
    uri: TextMatch | None = None
    server_name: TextMatch | None = None
    user_agent: TextMatch | None = None
    status_code: int | None = None
    q: str | None = None

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InvalidInput("since must be before until")


_TEXT_COLUMNS: dict[str, InstrumentedAttribute[Any]] = {
    "uid": Event.uid,
    "query": Event.query,
    "host": Event.host,
    "uri": Event.uri,
    "server_name": Event.server_name,
    "user_agent": Event.user_agent,
}
FREE_TEXT_COLUMNS = (
    Event.query, Event.host, Event.uri, Event.server_name, Event.user_agent, Event.title
)  # fmt: skip
"""The columns free text ``q`` matches (and ``textblocks`` indexes the 3-grams of)."""


@dataclass(frozen=True, slots=True)
class BoundFilter:
    """A filter as the SQL it needs (``shape``) and the values bound into it (``values``).

    Filters of one shape share one statement: the search page builds it once per shape and
    binds each request's values at execution (service.py), since building a statement costs
    more CPU than PostgreSQL takes to run the page (docs/benchmarks.md, API).
    """

    shape: tuple[tuple[str, str], ...]  # (field, how it matches), in a fixed order
    values: dict[str, Any] = field(compare=False)  # bind parameter name -> value

    def clauses(self) -> list[ColumnElement[bool]]:
        """The conditions, each with its bind parameter (named ``f_<field>``)."""
        return [_clause(name, how, self.values) for name, how in self.shape]


def bind(flt: EventFilter, dialect: str) -> BoundFilter:
    """``flt`` split into its shape and its values (the values as ``dialect`` matches them)."""
    shape: list[tuple[str, str]] = []
    values: dict[str, Any] = {}

    def term(name: str, how: str, value: Any) -> None:
        shape.append((name, how))
        if how == "between":  # an address block: its first and last key
            values[_PARAM + name + "_low"], values[_PARAM + name + "_high"] = value
        else:
            values[_PARAM + name] = value

    if flt.since is not None:
        term("since", "since", flt.since)
    if flt.until is not None:
        term("until", "until", flt.until)
    if flt.path is not None:
        term("path", "eq", flt.path)
    for name in _TEXT_COLUMNS:
        match: TextMatch | None = getattr(flt, name)
        if match is not None:
            if not match.prefix:
                term(name, "eq", match.value)
            elif dialect == "sqlite":
                term(name, "glob", _escape_glob(match.value) + "*")
            elif dialect == "postgresql":
                term(name, "starts_with", match.value)
            else:
                term(name, "like", _escape_like(match.value) + "%")
    for name in ("orig_h", "resp_h"):
        address: AddressMatch | None = getattr(flt, name)
        if address is not None:
            if address.low == address.high:
                term(name, "eq", address.low)
            else:
                term(name, "between", (address.low, address.high))
    for name in ("orig_p", "resp_p", "status_code"):
        number: int | None = getattr(flt, name)
        if number is not None:
            term(name, "eq", number)
    if flt.q is not None:
        term("q", "ilike", "%" + _escape_like(flt.q) + "%")
    return BoundFilter(tuple(shape), values)


def where(stmt: Select[Any], flt: EventFilter, dialect: str) -> Select[Any]:
    """``stmt`` narrowed by ``flt``."""
    clauses = bind(flt, dialect).clauses()
    return stmt.where(*clauses) if clauses else stmt


_PARAM = "f_"
# The column each filter field is compared on (addresses on their 16-byte keys, ADR 0028).
_COLUMNS: dict[str, InstrumentedAttribute[Any]] = {
    "since": Event.ts,
    "until": Event.ts,
    "path": Event.path,
    "orig_h": Event.orig_ip,
    "resp_h": Event.resp_ip,
    "orig_p": Event.orig_p,
    "resp_p": Event.resp_p,
    "status_code": Event.status_code,
    **{name: column for name, column in _TEXT_COLUMNS.items()},
}


def _clause(name: str, how: str, values: dict[str, Any]) -> ColumnElement[bool]:
    key = _PARAM + name
    if how == "ilike":
        pattern = bindparam(key, values[key], type_=String())  # one parameter for six columns
        return or_(*(col.ilike(pattern, escape="\\") for col in FREE_TEXT_COLUMNS))
    column = _COLUMNS[name]
    if how == "between":
        return column.between(
            bindparam(key + "_low", values[key + "_low"], type_=column.type),
            bindparam(key + "_high", values[key + "_high"], type_=column.type),
        )
    param = bindparam(key, values[key], type_=column.type)
    if how == "eq":
        return column == param
    if how == "since":
        return column >= param
    if how == "until":
        return column < param
    if how == "glob":
        # SQLite's LIKE ignores ASCII case; GLOB is case-sensitive like PostgreSQL's LIKE.
        return column.op("GLOB")(param)
    if how == "starts_with":
        # starts_with, not LIKE: under row-level security only leakproof functions may become
        # index conditions, and LIKE's is not; starts_with's is, and the planner turns it into
        # a range on the pattern-ops index (migration 0014) instead of filtering every row.
        return func.starts_with(column, param)
    assert how == "like", how
    return column.like(param, escape="\\")


def plan_newest_first(session: ScopedSession, flt: EventFilter) -> None:
    """Before a page with free text: walk the tenant's time index newest first (PostgreSQL).

    The planner cannot estimate a substring match over six columns; it takes the term for
    rare, reads every row of the tenant through a bitmap and sorts them (200-500 ms at 100,000
    rows), even when the newest 50 matches are among the newest few hundred rows. Walking
    ``(tenant_id, ts)`` backwards stops at the page's last match: as fast as the term is
    common, and no slower than the bitmap when it is rare (both then read every row). Only
    for this transaction (``SET LOCAL``).
    """
    if flt.q is not None and session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL enable_bitmapscan = off"))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _escape_glob(text: str) -> str:
    # GLOB has no escape character: a metacharacter is matched literally inside brackets.
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


@dataclass(frozen=True, slots=True)
class Bucket:
    """Events whose ts falls in ``[start, start + size)``."""

    start: float
    count: int


def histogram(*, session: ScopedSession, flt: EventFilter, bucket: int) -> list[Bucket]:
    """Counts per time bucket of ``bucket`` seconds, oldest first; empty buckets are left out.

    Hours the rollup covers (``events.rollups``) are read from it when the filter is only a
    time range and a record type and the bucket is whole hours; the rest from the raw rows.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        slot: ColumnElement[Any] = func.floor(Event.ts / bucket)
    else:  # SQLite has floor() only when built with math functions; ts >= 0 truncates alike.
        slot = cast(Event.ts / bucket, Integer)
    raw = where(select(slot.label("slot"), func.count().label("n")), flt, dialect)
    cover = _coverage(session, flt) if bucket % rollups.HOUR == 0 else rollups.NO_ROLLUP
    if not cover.spans:
        stmt = raw.group_by(slot).order_by(slot).limit(MAX_BUCKETS + 1)
    else:
        hours = EventRollup.slot // (bucket // rollups.HOUR)
        rolled = _rolled(session, flt, rollups.TYPE, cover.rollup_clause(whole_days=False))
        parts = union_all(
            _raw_part(session, raw, cover).group_by(slot),
            select(hours.label("slot"), func.sum(EventRollup.n).label("n"))
            .where(rolled)
            .group_by(hours),
        ).subquery("parts")
        stmt = (
            select(parts.c.slot, func.sum(parts.c.n))
            .group_by(parts.c.slot)
            .order_by(parts.c.slot)
            .limit(MAX_BUCKETS + 1)
        )
    rows = session.execute(stmt).all()
    if len(rows) > MAX_BUCKETS:
        raise InvalidInput(f"more than {MAX_BUCKETS} buckets: narrow the range or widen the bucket")
    return [Bucket(float(int(row[0]) * bucket), int(row[1])) for row in rows]


def _coverage(session: ScopedSession, flt: EventFilter) -> rollups.Coverage:
    """The rollup's part of ``flt``'s range; none when ``flt`` filters on more than the time
    range and the record type (the rollup counts nothing finer)."""
    if flt != EventFilter(since=flt.since, until=flt.until, path=flt.path):
        return rollups.NO_ROLLUP
    return rollups.coverage(session, flt.since, flt.until)


def _raw_part(session: ScopedSession, stmt: Select[Any], cover: rollups.Coverage) -> Select[Any]:
    """``stmt`` on the raw rows, narrowed to the gaps the rollup leaves."""
    # The tenant is also spelled out: inside a UNION the session's criteria are not relied on.
    stmt = stmt.where(Event.tenant_id == session.tenant_id)
    clause = cover.raw_clause()
    return stmt if clause is None else stmt.where(clause)


def _rolled(
    session: ScopedSession, flt: EventFilter, field: str, slots: ColumnElement[bool]
) -> ColumnElement[bool]:
    """The rollup rows of ``field`` in ``slots`` that ``flt`` selects."""
    clauses = [EventRollup.tenant_id == session.tenant_id, EventRollup.field == field, slots]
    if flt.path is not None:
        clauses.append(EventRollup.path == flt.path)
    return and_(*clauses)


class TopField(enum.StrEnum):
    """Fields whose most frequent values ``top`` can count."""

    TYPE = "type"
    UID = "uid"
    ORIG_H = "orig_h"
    RESP_H = "resp_h"
    ORIG_P = "orig_p"
    RESP_P = "resp_p"
    QUERY = "query"
    HOST = "host"
    URI = "uri"
    SERVER_NAME = "server_name"
    USER_AGENT = "user_agent"
    STATUS_CODE = "status_code"
    TITLE = "title"


_TOP_COLUMNS: dict[TopField, InstrumentedAttribute[Any]] = {
    TopField.TYPE: Event.path,
    TopField.UID: Event.uid,
    TopField.ORIG_H: Event.orig_h,
    TopField.RESP_H: Event.resp_h,
    TopField.ORIG_P: Event.orig_p,
    TopField.RESP_P: Event.resp_p,
    TopField.QUERY: Event.query,
    TopField.HOST: Event.host,
    TopField.URI: Event.uri,
    TopField.SERVER_NAME: Event.server_name,
    TopField.USER_AGENT: Event.user_agent,
    TopField.STATUS_CODE: Event.status_code,
    TopField.TITLE: Event.title,
}


@dataclass(frozen=True, slots=True)
class TopValue:
    """One value of a field and how many events carry it."""

    value: str | int
    count: int


def top(*, session: ScopedSession, flt: EventFilter, field: TopField, n: int) -> list[TopValue]:
    """The ``n`` most frequent non-null values of ``field``, most frequent first (ties by value).

    As ``histogram``: the rollup serves what it covers for the fields it counts.
    """
    column = _TOP_COLUMNS[field]
    dialect = session.get_bind().dialect.name
    cover = _coverage(session, flt) if field.value in rollups.ROLLED else rollups.NO_ROLLUP
    if not cover.spans:
        count = func.count().label("n")
        stmt = where(select(column, count), flt, dialect)
        stmt = stmt.where(column.is_not(None)).group_by(column).order_by(count.desc(), column)
        return [TopValue(row[0], int(row[1])) for row in session.execute(stmt.limit(n)).all()]
    value = rollups.rollup_value(field.value, column)
    raw = where(select(value.label("value"), func.count().label("n")), flt, dialect)
    parts = union_all(
        _raw_part(session, raw.where(column.is_not(None)), cover).group_by(value),
        select(EventRollup.value, func.sum(EventRollup.n).label("n"))
        .where(_rolled(session, flt, field.value, cover.rollup_clause(whole_days=True)))
        .group_by(EventRollup.value),
    ).subquery("parts")
    total = func.sum(parts.c.n)
    stmt = (
        select(parts.c.value, total)
        .group_by(parts.c.value)
        .order_by(total.desc(), rollups.ordered_value(field.value, parts.c.value))
        .limit(n)
    )
    numeric = field.value in rollups.NUMERIC
    return [
        TopValue(int(row[0]) if numeric else row[0], int(row[1]))
        for row in session.execute(stmt).all()
    ]
