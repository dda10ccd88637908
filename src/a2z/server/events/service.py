"""Event storage and retrieval."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import msgspec
from sqlalchemy import ColumnElement, Insert, Select, Table, and_, bindparam, insert, or_, select
from sqlalchemy.orm import InstrumentedAttribute

from a2z.records import Alert, Batch, Dns, Http, Record, Ssl
from a2z.server.events import search, usage
from a2z.server.events.models import ENVELOPE_FIELDS, SHORT_TEXT, AnomalyScore, Event
from a2z.server.store import bulk
from a2z.server.store.session import ScopedSession

_json = msgspec.json.Encoder()
_EVENTS = cast(Table, Event.__table__)

COPY_MIN_ROWS = 10
"""On PostgreSQL, batches of at least this many records are written with COPY (``store.bulk``),
smaller ones with the multi-row INSERT; COPY measured faster from 10 records up
(docs/benchmarks.md, Ingest)."""


def store_batch(
    *, session: ScopedSession, agent_id: uuid.UUID, batch: Batch, region: str | None = None
) -> int:
    """Insert a batch's records, tagged with the tenant's ``region``; rows already stored (a
    re-sent batch) are skipped, and the new ones are added to the tenant's stored usage.

    Returns the number of new rows.
    """
    if not batch.records:
        return 0
    rows, sizes = event_rows(session.tenant_id, agent_id, batch, region)
    if session.get_bind().dialect.name == "postgresql" and len(rows) >= COPY_MIN_ROWS:
        new = bulk.copy_insert_ignoring_duplicates(session, _EVENTS, rows, returning="idx")
    else:
        # One statement executed over many parameter sets: SQLAlchemy batches it
        # ("insertmanyvalues") without compiling a new 500-row VALUES clause per batch, which
        # cost ~80% of ingest time. RETURNING names what was really inserted; rowcount is not
        # reliable across drivers.
        stmt = _insert_ignoring_duplicates(session).returning(Event.idx)
        new = list(session.scalars(stmt, rows))
    if new:
        usage.add(session=session, rows=((rows[i]["ts"], sizes[i]) for i in new))
    return len(new)


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
    return {
        "_path": event.path,
        "ts": event.ts,
        "uid": event.uid,
        "id.orig_h": event.orig_h,
        "id.orig_p": event.orig_p,
        "id.resp_h": event.resp_h,
        "id.resp_p": event.resp_p,
        **event.data,
    }


def search_columns(rec: Record) -> dict[str, Any]:
    """The record's values for the typed search columns (None where its type has no such field)."""
    return {
        "orig_ip": search.ip_key(rec.orig_h),
        "resp_ip": search.ip_key(rec.resp_h),
        "query": _short(rec.query) if isinstance(rec, Dns) else None,
        "host": _short(rec.host) if isinstance(rec, Http) else None,
        "server_name": _short(rec.server_name) if isinstance(rec, Ssl) else None,
        "uri": _clean(rec.uri) if isinstance(rec, Http) else None,
        "user_agent": _clean(rec.user_agent) if isinstance(rec, Http) else None,
        "status_code": rec.status_code if isinstance(rec, Http) else None,
        "title": _clean(rec.title) if isinstance(rec, Alert) else None,
    }


def _clean(text: str | None) -> str | None:
    # NUL is legal in a record (the JSON copy escapes it) but PostgreSQL text refuses it.
    return text.replace("\x00", "") if text is not None else None


def _short(text: str | None) -> str | None:
    cleaned = _clean(text)
    return cleaned[:SHORT_TEXT] if cleaned is not None else None


def _insert_ignoring_duplicates(session: ScopedSession) -> Insert:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(Event).on_conflict_do_nothing()
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(Event).on_conflict_do_nothing()
    return insert(Event)


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
    if cursor is None and (flt is None or flt == _ANY):
        stmt = _NEWEST  # what dashboards poll: built once, not per request
    else:
        stmt = _with_scores(_narrowed(select(*_KEY, *_RECORD_COLUMNS), session, flt, cursor))
    rows, nxt = _cut(list(session.execute(stmt, {_PAGE_SIZE: limit + 1}).all()), limit)
    records = []
    for row in rows:
        record = record_of(row)
        if row.score is not None:
            record["anomaly_score"] = row.score
        records.append(record)
    return records, nxt


def _with_scores(page: Select[Any]) -> Select[Any]:
    """``page`` (a ``_narrowed`` select of ``_KEY`` and ``_RECORD_COLUMNS``), limited by the
    ``_PAGE_SIZE`` parameter, with each row's anomaly score (None for non-conn records and
    unscored ones)."""
    rows = page.limit(bindparam(_PAGE_SIZE)).subquery("page")
    return (
        select(rows, AnomalyScore.score)
        .outerjoin(AnomalyScore, and_(AnomalyScore.uid == rows.c.uid, rows.c.path == "conn"))
        .order_by(*(rows.c[col.key].desc() for col in _KEY))
    )


_PAGE_SIZE = "page_size"
_ANY = search.EventFilter()
# Building the statement costs more CPU than SQLite takes to run it (the subquery's column
# proxies); the unfiltered first page is the same every time, so it is built once. The tenant
# criteria are still added at each execution by the session factory.
_NEWEST = _with_scores(select(*_KEY, *_RECORD_COLUMNS).order_by(*(col.desc() for col in _KEY)))


def _tuple_less_than(
    cols: Sequence[InstrumentedAttribute[Any]], values: Sequence[Any]
) -> ColumnElement[bool]:
    # Row-value comparison spelled out: portable to SQLite, and PostgreSQL plans it as a range.
    clauses = []
    for i in range(len(cols)):
        eq = [cols[j] == values[j] for j in range(i)]
        clauses.append(and_(*eq, cols[i] < values[i]))
    return or_(*clauses)
