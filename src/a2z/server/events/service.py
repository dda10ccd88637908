"""Event storage and retrieval."""

from __future__ import annotations

import math
import re
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol, TypeVar, cast

import msgspec
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Float,
    Select,
    Table,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    true,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.dml import ReturningInsert

from a2z.records import Alert, Batch, Dns, Http, Record, Ssl
from a2z.server.events import search, textblocks, usage
from a2z.server.events.models import (
    ENVELOPE_FIELDS,
    SHORT_TEXT,
    AnomalyScore,
    Event,
    EventBatch,
)
from a2z.server.store import bulk
from a2z.server.store.partitions import day_of
from a2z.server.store.session import ScopedSession

_json = msgspec.json.Encoder()
_EVENTS = cast(Table, Event.__table__)
_BATCHES = cast(Table, EventBatch.__table__)

COPY_MIN_ROWS = 10
"""On PostgreSQL, anomaly scores (``scores``) in batches of at least this many rows are written
with COPY (``store.bulk``), smaller ones with the multi-row INSERT; COPY measured faster from 10
rows up (docs/benchmarks.md, Ingest). Events always take the array insert (ADR 0021)."""


def store_batch(
    *, session: ScopedSession, agent_id: uuid.UUID, batch: Batch, region: str | None = None
) -> int:
    """Insert a batch's records, tagged with the tenant's ``region``, and add them to the
    tenant's stored usage; a batch already stored (re-sent: the same agent, epoch and seq)
    stores nothing (``EventBatch``).

    Returns the number of new rows: all the batch's records, or 0.
    """
    return store_batches(session=session, batches=[(agent_id, batch)], region=region)[0]


def store_batches(
    *,
    session: ScopedSession,
    batches: Sequence[tuple[uuid.UUID, Batch]],
    region: str | None = None,
) -> list[int]:
    """``store_batch`` for several ``(agent_id, batch)`` of the session's tenant, with one
    usage update for all of them (ingest's group commit): the number of new rows of each.

    Callers writing in several transactions at once pass the batches in key order (agent,
    epoch, seq), so that two transactions meeting on the same keys wait rather than deadlock.
    """
    counts: list[int] = []
    added: list[tuple[float, int]] = []
    for agent_id, batch in batches:
        stored, times, sizes = _insert_batch(session, agent_id, batch, region)
        counts.append(stored)
        if stored:
            added.extend(zip(times, sizes, strict=True))
    if added:
        usage.add(session=session, rows=added)
    return counts


def _insert_batch(
    session: ScopedSession, agent_id: uuid.UUID, batch: Batch, region: str | None
) -> tuple[int, list[float], list[int]]:
    """Claim the batch's key and insert its rows if the claim is new: ``(rows stored, each
    record's ts, each record's JSON size)``."""
    if not batch.records:
        return 0, [], []
    claim = {
        "tenant_id": session.tenant_id,
        "agent_id": agent_id,
        "boot_epoch": batch.boot_epoch,
        "seq": batch.seq,
        "day": day_of(max(rec.ts for rec in batch.records)),
        "events": len(batch.records),
    }
    if session.get_bind().dialect.name == "postgresql":
        # The claim and the rows in one statement (ADR 0021, 0026).
        arrays, sizes = event_columns(batch)
        constants = {k: claim[k] for k in ("tenant_id", "agent_id", "boot_epoch", "seq")}
        constants["region"] = region
        stored = bulk.insert_columns_once(
            session, _EVENTS, claim=_BATCHES, claim_values=claim, constants=constants,
            arrays=arrays, ordinal="idx",
        )  # fmt: skip
        return stored, arrays["ts"], sizes
    if session.connection().execute(_claim_sqlite(), claim).first() is None:
        return 0, [], []
    # One statement executed over many parameter sets (the driver's executemany), not a
    # 500-row VALUES clause compiled per batch, which cost ~80% of ingest time.
    rows, sizes = event_rows(session.tenant_id, agent_id, batch, region)
    session.connection().execute(insert(_EVENTS), rows)
    return len(rows), [row["ts"] for row in rows], sizes


def event_rows(
    tenant_id: uuid.UUID, agent_id: uuid.UUID, batch: Batch, region: str | None = None
) -> tuple[list[dict[str, Any]], list[int]]:
    """The ``events`` rows of a batch, one value per column; and each record's JSON size."""
    rows = []
    sizes = []
    for idx, rec in enumerate(batch.records):
        whole = _json.encode(rec)
        sizes.append(len(whole))
        rows.append(
            {
                "tenant_id": tenant_id,
                "agent_id": agent_id,
                "boot_epoch": batch.boot_epoch,
                "seq": batch.seq,
                "idx": idx,
                "ts": rec.ts,
                "path": type(rec).__struct_config__.tag,
                "uid": rec.uid,
                "orig_h": rec.orig_h,
                "orig_p": rec.orig_p,
                "resp_h": rec.resp_h,
                "resp_p": rec.resp_p,
                "data": document(rec, has_nul=b"\\u0000" in whole),
                "region": region,
                **search_columns(rec),
            }
        )
    return rows, sizes


def event_columns(batch: Batch) -> tuple[dict[str, list[Any]], list[int]]:
    """The per-record ``events`` columns of a batch (name -> one value per record: every
    column but the batch's constants and ``idx``; ``data`` as JSON text), and each record's
    JSON size.

    The same values as ``event_rows`` (a test holds them equal), built column by column for
    the array insert: no dict per row, and ``data`` encoded once, not via ``to_builtins``.
    """
    ts: list[float] = []
    path: list[str] = []
    uid: list[str] = []
    orig_h: list[str] = []
    orig_p: list[int] = []
    resp_h: list[str] = []
    resp_p: list[int] = []
    data: list[str] = []
    search_cols: list[list[Any]] = [[] for _ in SEARCH_COLUMNS]
    sizes: list[int] = []
    encode = _json.encode
    for rec in batch.records:
        whole = encode(rec)
        sizes.append(len(whole))
        # float(): a record built in Python may carry an int ts, and psycopg refuses to dump a
        # list that mixes int and float (decoded records always hold floats).
        ts.append(float(rec.ts))
        path.append(type(rec).__struct_config__.tag)  # type: ignore[arg-type]
        uid.append(rec.uid)
        orig_h.append(rec.orig_h)
        orig_p.append(rec.orig_p)
        resp_h.append(rec.resp_h)
        resp_p.append(rec.resp_p)
        data.append(_document_json(rec, whole))
        for values, value in zip(search_cols, search_values(rec), strict=True):
            values.append(value)
    columns: dict[str, list[Any]] = {
        "ts": ts, "path": path, "uid": uid, "orig_h": orig_h, "orig_p": orig_p,
        "resp_h": resp_h, "resp_p": resp_p, "data": data,
    }  # fmt: skip
    columns.update(zip(SEARCH_COLUMNS, search_cols, strict=True))
    return columns, sizes


def _document_json(rec: Record, whole: bytes) -> str:
    """``document(rec)`` as JSON text, cut out of ``whole``, the record's own encoding.

    msgspec writes a record as its tag, then its fields in definition order, envelope fields
    first (``RecordBase``'s, checked once per type): so the document is everything after the
    ``id.resp_p`` value. A key cannot match inside a string (its quotes would be escaped).
    Records with an escaped NUL take ``document``'s replacing walk.
    """
    if b"\\u0000" in whole:
        return _json.encode(document(rec)).decode()
    _check_envelope_first(type(rec))
    found = _AFTER_ENVELOPE.search(whole)
    if found is None:  # resp_p is an int by the record's type: unreachable for a decoded record
        raise ValueError(f"no id.resp_p in {whole[:200]!r}")
    if found.group(1) == b"}":
        return "{}"
    return "{" + whole[found.end() :].decode()


_AFTER_ENVELOPE = re.compile(rb'"id\.resp_p":-?[0-9]+([,}])')
_ENVELOPE_FIRST: set[type] = set()


def _check_envelope_first(kind: type[Record]) -> None:
    if kind in _ENVELOPE_FIRST:
        return
    first = len(ENVELOPE_FIELDS) - 1  # all but the tag, which msgspec writes before any field
    if kind.__struct_encode_fields__[:first] != ENVELOPE_FIELDS[1:]:
        raise TypeError(f"{kind.__name__}: fields do not start with {ENVELOPE_FIELDS[1:]}")
    _ENVELOPE_FIRST.add(kind)


def document(rec: Record, *, has_nul: bool = True) -> dict[str, Any]:
    """The record's fields other than ``ENVELOPE_FIELDS``, for the ``data`` column.

    JSONB cannot hold U+0000, so a NUL in any string is stored as U+FFFD (on both stores, so
    they agree); ``has_nul=False`` skips that walk when the caller knows there is none.
    """
    fields: dict[str, Any] = msgspec.to_builtins(rec)
    for name in ENVELOPE_FIELDS:
        del fields[name]
    return _without_nul(fields) if has_nul else fields


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {k: _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


class StoredRecord(Protocol):
    """The columns a record is rebuilt from: an ``Event`` or a row selecting them."""

    path: str
    ts: float
    uid: str
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    data: dict[str, Any]


def record_of(event: StoredRecord) -> dict[str, Any]:
    """The stored record as the agent sent it (Zeek field names): typed columns plus ``data``."""
    return _record(
        event.ts, event.path, event.uid, event.orig_h, event.orig_p, event.resp_h, event.resp_p,
        event.data,
    )  # fmt: skip


def _record(
    ts: float,
    path: str,
    uid: str,
    orig_h: str,
    orig_p: int,
    resp_h: str,
    resp_p: int,
    data: dict[str, Any],
) -> dict[str, Any]:
    # Positional, so a page's rows can be unpacked into it: reading a SQLAlchemy Row's
    # attributes cost ~10 µs per record (1 ms of a 100-record page), unpacking it ~2 µs.
    return {
        "_path": path,
        "ts": ts,
        "uid": uid,
        "id.orig_h": orig_h,
        "id.orig_p": orig_p,
        "id.resp_h": resp_h,
        "id.resp_p": resp_p,
        **data,
    }


SEARCH_COLUMNS = (
    "orig_ip", "resp_ip", "query", "host", "server_name", "uri", "user_agent", "status_code",
    "title",
)  # fmt: skip
"""The typed search columns, in the order of ``search_values``."""


def search_columns(rec: Record) -> dict[str, Any]:
    """The record's values for the typed search columns (None where its type has no such field)."""
    return dict(zip(SEARCH_COLUMNS, search_values(rec), strict=True))


def search_values(rec: Record) -> tuple[Any, ...]:
    """``search_columns(rec)``'s values in ``SEARCH_COLUMNS`` order (no dict per record)."""
    orig_ip, resp_ip = address_key(rec.orig_h), address_key(rec.resp_h)
    if isinstance(rec, Dns):
        return (orig_ip, resp_ip, _short(rec.query), None, None, None, None, None, None)
    if isinstance(rec, Http):
        uri, agent = _clean(rec.uri), _clean(rec.user_agent)
        return (orig_ip, resp_ip, None, _short(rec.host), None, uri, agent, rec.status_code, None)
    if isinstance(rec, Ssl):
        return (orig_ip, resp_ip, None, None, _short(rec.server_name), None, None, None, None)
    if isinstance(rec, Alert):
        return (orig_ip, resp_ip, None, None, None, None, None, None, _clean(rec.title))
    return (orig_ip, resp_ip, None, None, None, None, None, None, None)


def address_key(address: str) -> bytes | None:
    """``search.ip_key(address)``, with a fast path for dotted-quad IPv4 text.

    ``ipaddress.ip_address`` took half of building a batch's rows. ``inet_pton`` (C) accepts
    only four decimal octets up to 255 without leading zeros, which ``ipaddress`` reads the
    same way (a test compares them); any other text goes to ``ip_key``.
    """
    try:
        return search.V4_MAPPED_PREFIX + socket.inet_pton(socket.AF_INET, address)
    except (OSError, ValueError, UnicodeError):  # not dotted-quad IPv4 (NUL: ValueError)
        return search.ip_key(address)


def _clean(text: str | None) -> str | None:
    # NUL is legal in a record (the JSON copy escapes it) but PostgreSQL text refuses it.
    return text.replace("\x00", "") if text is not None else None


def _short(text: str | None) -> str | None:
    cleaned = _clean(text)
    return cleaned[:SHORT_TEXT] if cleaned is not None else None


@cache
def _claim_sqlite() -> ReturningInsert[tuple[int]]:
    """The batch's key, or no row returned when it is already stored (SQLite)."""
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(_BATCHES).on_conflict_do_nothing().returning(_BATCHES.c.seq)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Position after the last event of a page, newest-first order."""

    ts: float
    agent_id: uuid.UUID
    boot_epoch: int
    seq: int
    idx: int

    def encode(self) -> str:
        """Opaque token for the next page."""
        return f"{self.ts!r}:{self.agent_id}:{self.boot_epoch}:{self.seq}:{self.idx}"

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """Parse a token from ``encode``; ValueError on anything else."""
        ts, agent, epoch, seq, idx = token.split(":")
        return cls(float(ts), uuid.UUID(agent), int(epoch), int(seq), int(idx))


_KEY = (Event.ts, Event.agent_id, Event.boot_epoch, Event.seq, Event.idx)
# What a record is made of (record_of): the envelope columns and the JSON document.
_RECORD_COLUMNS = (
    Event.path, Event.uid, Event.orig_h, Event.orig_p, Event.resp_h, Event.resp_p, Event.data
)  # fmt: skip


def _recent(
    stmt: Select[Any],
    session: ScopedSession,
    limit: int,
    flt: search.EventFilter | None,
    cursor: Cursor | None,
) -> Select[Any]:
    return _narrowed(stmt, session, flt, cursor).limit(limit + 1)


def _narrowed(
    stmt: Select[Any],
    session: ScopedSession,
    flt: search.EventFilter | None,
    cursor: Cursor | None,
) -> Select[Any]:
    """``stmt`` newest first, after ``cursor``, matching ``flt``; no LIMIT yet."""
    stmt = stmt.order_by(*(col.desc() for col in _KEY))
    if flt is not None:
        stmt = search.where(stmt, flt, session.get_bind().dialect.name)
    if cursor is not None:
        after = (cursor.ts, cursor.agent_id, cursor.boot_epoch, cursor.seq, cursor.idx)
        stmt = stmt.where(_tuple_less_than(_KEY, after))
    return stmt


def list_recent(
    *,
    session: ScopedSession,
    limit: int,
    flt: search.EventFilter | None = None,
    cursor: Cursor | None = None,
) -> tuple[list[Event], Cursor | None]:
    """The tenant's events matching ``flt``, newest first, one page; and the next cursor."""
    return _cut(list(session.scalars(_recent(select(Event), session, limit, flt, cursor))), limit)


R = TypeVar("R")


def _cut(rows: list[R], limit: int) -> tuple[list[R], Cursor | None]:
    """A page of ``limit`` out of ``limit + 1`` rows read, and the cursor after its last row
    (None when no row was left over)."""
    if len(rows) <= limit:
        return rows, None
    last: Any = rows[limit - 1]  # an Event or a row of _KEY columns: both have the key fields
    return rows[:limit], Cursor(last.ts, last.agent_id, last.boot_epoch, last.seq, last.idx)


def list_recent_records(
    *,
    session: ScopedSession,
    limit: int,
    flt: search.EventFilter | None = None,
    cursor: Cursor | None = None,
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """As ``list_recent``, but the records themselves (``record_of``), read as plain columns.

    The read paths need only the record: building an ORM ``Event`` per row (identity map,
    instance state) cost more than the query on the events page (docs/benchmarks.md, API).
    """
    stmt = _recent(select(*_KEY, *_RECORD_COLUMNS), session, limit, flt, cursor)
    rows, nxt = _cut(list(session.execute(stmt).all()), limit)
    return [record_of(row) for row in rows], nxt


def list_page_records(
    *,
    session: ScopedSession,
    limit: int,
    flt: search.EventFilter | None = None,
    cursor: Cursor | None = None,
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """As ``list_recent_records``, each conn record with the detect role's ``anomaly_score``
    where it has one: what the events page shows, in one statement.

    The score is joined to the page (a LEFT JOIN on the score's key), not looked up by a
    second query: that one's ``uid IN (...)`` list, rebuilt per request, cost more CPU than the
    page itself (docs/benchmarks.md, API).
    """
    plan = None
    if flt is not None and flt.q is not None:
        plan = textblocks.plan(session, flt.q, flt.since, flt.until)
    if plan is not None:
        assert flt is not None
        found = _rows_in_regions(session, flt, cursor, plan, limit + 1)
    else:
        stmt, values = _page(session.get_bind().dialect.name, flt or _ANY, cursor)
        values = {_PAGE_SIZE: limit + 1, _TENANT: session.tenant_id, **values}
        # Past the ORM: its per-execution tenant criteria and row processing cost ~1 ms of a
        # page's CPU. The statement carries the tenant itself (``_page``), and row-level
        # security still applies underneath on PostgreSQL.
        found = list(session.read_connection().execute(stmt, values).all())
    rows, nxt = _cut(found, limit)
    records = []
    for ts, _agent, _epoch, _seq, _idx, *columns, score in rows:  # _KEY, _RECORD_COLUMNS, score
        record = _record(ts, *columns)
        if score is not None:
            record["anomaly_score"] = score
        records.append(record)
    return records, nxt


def _rows_in_regions(
    session: ScopedSession,
    flt: search.EventFilter,
    cursor: Cursor | None,
    plan: textblocks.Plan,
    want: int,
) -> list[Any]:
    """Free text: the first ``want`` rows of the page, read only where the term may be: the
    hours at or after every block (``plan.through``), then the blocks that may hold the term
    and the hours no block covers (``plan.rest``, looked up only if the page is not full yet).

    The regions are disjoint and newest first, so reading them in order and stopping once the
    page is full gives the rows of the whole-history scan, in its order. A term common in the
    newest (raw) hours fills the page from the first region; a rare one reads its candidate
    blocks, a few statements in all: each reads the next regions, 4, then 32, then 256... at a
    time (geometric: a term common in older blocks stops early, a rare one takes two or three
    statements), one index range per region (``_page_in_ranges``), each stopping at the rows
    still wanted.
    """
    # The head as a plain statement, like a page without blocks: its range is a constant, so
    # the planner prunes to the newest partition and walks its (tenant_id, ts) index backwards,
    # stopping at the page's last match (a common term reads a few hundred rows).
    base = _narrowed(select(*_KEY, *_RECORD_COLUMNS), session, flt, cursor)
    head = _with_scores(base.where(Event.ts >= plan.through))
    rows = list(session.execute(head, {_PAGE_SIZE: want}).all())
    if len(rows) < want:
        rest = plan.rest(session)
        if cursor is not None:
            rest = [r for r in rest if r[0] is None or r[0] <= cursor.ts]
        page = _page_in_ranges(session, flt, cursor)
        rows += _read_ranges(session, page, rest, want - len(rows))
    return rows


def _read_ranges(
    session: ScopedSession, page: Select[Any], regions: list[textblocks.Region], want: int
) -> list[Any]:
    """Up to ``want`` rows of ``page`` in ``regions`` (disjoint, newest first), in order."""
    rows: list[Any] = []
    done, size = 0, 4
    while done < len(regions) and len(rows) < want:
        batch = regions[done : done + size]
        done, size = done + len(batch), size * 8
        params = {
            _PAGE_SIZE: want - len(rows),
            _LOWS: [-math.inf if lo is None else lo for lo, _ in batch],
            _HIGHS: [math.inf if hi is None else hi for _, hi in batch],
        }
        rows += session.execute(page, params).all()
    return rows


def _page_in_ranges(
    session: ScopedSession, flt: search.EventFilter, cursor: Cursor | None
) -> Select[Any]:
    """The page's rows in the time ranges ``[_LOWS[i], _HIGHS[i]]`` (array parameters): per
    range, a LATERAL range scan of ``(tenant_id, ts)`` stopping after ``_PAGE_SIZE`` rows. One
    statement whatever the number of ranges, so it is built once per request."""
    ranges = (
        func.unnest(
            bindparam(_LOWS, type_=postgresql.ARRAY(Float)),
            bindparam(_HIGHS, type_=postgresql.ARRAY(Float)),
        )
        .table_valued("lo", "hi")
        .render_derived(name="ranges")
    )
    # Per range, newest first by ts alone, with the rows tied with the last one: ordered by
    # the whole key, PostgreSQL sorted every row of the range (the index gives ts only) instead
    # of walking it backwards and stopping; the outer ORDER BY puts ties in key order.
    hits = (
        _narrowed(select(*_KEY, *_RECORD_COLUMNS), session, flt, cursor)
        .order_by(None)
        .order_by(Event.ts.desc())
        .where(Event.tenant_id == session.tenant_id, Event.ts >= ranges.c.lo)
        .where(Event.ts <= ranges.c.hi)
        .fetch(bindparam(_PAGE_SIZE), with_ties=True)
        .lateral("hits")
    )
    page = select(*hits.c).select_from(ranges).join(hits, true())
    return _with_scores(page.order_by(*(hits.c[col.key].desc() for col in _KEY)))


_LOWS, _HIGHS = "range_lows", "range_highs"


def _with_scores(page: Select[Any], tenant: BindParameter[Any] | None = None) -> Select[Any]:
    """``page`` (a ``_narrowed`` select of ``_KEY`` and ``_RECORD_COLUMNS``), limited by the
    ``_PAGE_SIZE`` parameter, with each row's anomaly score (None for non-conn records and
    unscored ones). ``tenant``: the scores' tenant, for a statement run past the ORM (which
    otherwise adds it)."""
    rows = page.limit(bindparam(_PAGE_SIZE)).subquery("page")
    on = [AnomalyScore.uid == rows.c.uid, rows.c.path == "conn"]
    if tenant is not None:
        on.append(AnomalyScore.tenant_id == tenant)
    return (
        select(rows, AnomalyScore.score)
        .outerjoin(AnomalyScore, and_(*on))
        .order_by(*(rows.c[col.key].desc() for col in _KEY))
    )


_PAGE_SIZE = "page_size"
_TENANT = "page_tenant"
_ANY = search.EventFilter()
_AFTER = tuple(f"after_{col.key}" for col in _KEY)
_PAGES: dict[tuple[str, tuple[tuple[str, str], ...], bool], Select[Any]] = {}
_MAX_PAGES = 1024  # statements kept; a dashboard's filters come in a few shapes


def _page(
    dialect: str, flt: search.EventFilter, cursor: Cursor | None
) -> tuple[Select[Any], dict[str, Any]]:
    """The page statement for ``flt``'s shape (and whether a cursor continues it), and the
    values to execute it with (``_PAGE_SIZE`` aside).

    Building the statement (the scores subquery's column proxies above all) cost more CPU than
    PostgreSQL took to run it; filters of one shape differ only in their values, so each shape's
    statement is built once and the values are bound at execution (ADR 0030). It names the
    tenant of both tables as ``_TENANT``, which the caller binds to the session's tenant: it runs
    past the ORM, which would otherwise add the tenant criteria itself.
    """
    bound = search.bind(flt, dialect)
    values = bound.values
    if cursor is not None:
        after = (cursor.ts, cursor.agent_id, cursor.boot_epoch, cursor.seq, cursor.idx)
        values = {**values, **dict(zip(_AFTER, after, strict=True))}
    key = (dialect, bound.shape, cursor is not None)
    stmt = _PAGES.get(key)
    if stmt is None:
        stmt = select(*_KEY, *_RECORD_COLUMNS).order_by(*(col.desc() for col in _KEY))
        stmt = stmt.where(Event.tenant_id == bindparam(_TENANT), *bound.clauses())
        if cursor is not None:
            marks = [bindparam(name, type_=c.type) for name, c in zip(_AFTER, _KEY, strict=True)]
            stmt = stmt.where(_tuple_less_than(_KEY, marks))
        stmt = _with_scores(stmt, tenant=bindparam(_TENANT))
        if len(_PAGES) >= _MAX_PAGES:  # shapes are finite, but bound the memory anyway
            _PAGES.clear()
        _PAGES[key] = stmt
    return stmt, values


def _tuple_less_than(
    cols: Sequence[InstrumentedAttribute[Any]], values: Sequence[Any]
) -> ColumnElement[bool]:
    # Row-value comparison spelled out: portable to SQLite, and PostgreSQL plans it as a range.
    clauses = []
    for i in range(len(cols)):
        eq = [cols[j] == values[j] for j in range(i)]
        clauses.append(and_(*eq, cols[i] < values[i]))
    return or_(*clauses)
