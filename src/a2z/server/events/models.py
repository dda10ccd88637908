"""Event table: one row per record, common fields typed, the rest of the record as JSON.

On PostgreSQL ``events`` is partitioned by RANGE on ``ts``, one partition per UTC day plus a
default partition for timestamps outside the days created ahead (``store.partitions``); on
SQLite it is one plain table with the same columns and indexes.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, LargeBinary, String, Text, Uuid, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from a2z.server.store.base import Base, TenantOwned

SHORT_TEXT = 255
"""Length kept of the indexed search strings (a DNS name is at most 253 characters)."""

ENVELOPE_FIELDS = ("_path", "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p")
"""Record fields kept only in their typed columns (exactly, so ``data`` need not repeat them)."""

DOCUMENT = JSON().with_variant(JSONB(), "postgresql")
"""The record's remaining fields: JSONB on PostgreSQL, JSON text on SQLite."""


def _string_index(column: str) -> Index:
    """``(tenant_id, column)`` over the rows that carry the string (migration 0014): an entry
    per event, NULLs included, cost every write for a field only some record types have. On
    PostgreSQL the pattern operator class serves ``LIKE 'prefix%'`` under any collation."""
    where = text(f"{column} IS NOT NULL")
    return Index(
        f"ix_events_tenant_{column}", "tenant_id", column,
        postgresql_ops={column: "varchar_pattern_ops"},
        postgresql_where=where, sqlite_where=where,
    )  # fmt: skip


class Event(TenantOwned, Base):
    """A stored record.

    ``(tenant_id, agent_id, boot_epoch, seq, idx)`` names the record's place in its agent's
    stream: unique because each batch is stored whole or not at all, once (``EventBatch``), so
    the table carries no key index of its own (migration 0018, ADR 0026). The mapper's identity
    is that place plus ``ts``.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_tenant_ts", "tenant_id", "ts"),
        Index("ix_events_tenant_path_ts", "tenant_id", "path", "ts"),
        Index("ix_events_tenant_orig_ip", "tenant_id", "orig_ip"),
        Index("ix_events_tenant_resp_ip", "tenant_id", "resp_ip"),
        *(_string_index(column) for column in ("query", "host", "server_name")),
        {"postgresql_partition_by": "RANGE (ts)"},
    )
    # No primary key in the database (the ORM needs one to map the class: ``EventBatch`` is
    # what keeps these unique).
    __mapper_args__ = {"primary_key": ("tenant_id", "agent_id", "boot_epoch", "seq", "idx", "ts")}

    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid, sort_order=-10)
    agent_id: Mapped[uuid.UUID]
    boot_epoch: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    idx: Mapped[int] = mapped_column(Integer)  # position within the batch
    ts: Mapped[float]  # record time; partition key
    path: Mapped[str] = mapped_column(String(32))  # record type: conn, dns, http, ...
    uid: Mapped[str] = mapped_column(String(64))
    orig_h: Mapped[str] = mapped_column(String(64))
    orig_p: Mapped[int]
    resp_h: Mapped[str] = mapped_column(String(64))
    resp_p: Mapped[int]
    # The record's other fields (Zeek names), everything but ENVELOPE_FIELDS; with the typed
    # columns above it gives back the record exactly (``service.record_of``).
    data: Mapped[dict[str, Any]] = mapped_column(DOCUMENT)
    region: Mapped[str | None] = mapped_column(String(32))  # the tenant's residency tag
    # Search columns (migration 0004), filled from the record by ``store_batch``; NULL when the
    # record type has no such field. Indexed strings keep their first ``SHORT_TEXT`` characters.
    # orig_h as 16 bytes that sort like the address (search.ip_key; migration 0019, ADR 0028)
    orig_ip: Mapped[bytes | None] = mapped_column(LargeBinary(16))
    resp_ip: Mapped[bytes | None] = mapped_column(LargeBinary(16))  # resp_h likewise
    query: Mapped[str | None] = mapped_column(String(SHORT_TEXT))  # dns: queried name
    host: Mapped[str | None] = mapped_column(String(SHORT_TEXT))  # http: Host header
    server_name: Mapped[str | None] = mapped_column(String(SHORT_TEXT))  # ssl: SNI
    uri: Mapped[str | None] = mapped_column(Text)  # http: request target
    user_agent: Mapped[str | None] = mapped_column(Text)  # http: User-Agent header
    status_code: Mapped[int | None]  # http: response status
    title: Mapped[str | None] = mapped_column(Text)  # alert: one-line summary


class EventBatch(TenantOwned, Base):
    """An agent batch the store holds: the key ``(tenant_id, agent_id, boot_epoch, seq)`` that
    makes a re-sent batch (a redelivery, an agent's spool replayed, a racing worker) store
    nothing, however long after the first copy, within the bus's dedup window or not.

    Ingest inserts it in the same statement as the batch's events, which go in only if it was
    new (``ON CONFLICT DO NOTHING``): one unique check per batch instead of one per event
    (ADR 0026). ``day`` is the UTC day of the batch's newest record: retention forgets the key
    with the last of its rows.
    """

    __tablename__ = "event_batches"
    __table_args__ = (Index("ix_event_batches_tenant_day", "tenant_id", "day"),)

    agent_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    boot_epoch: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    day: Mapped[int] = mapped_column(Integer)  # floor(newest record's ts / 86400)
    events: Mapped[int] = mapped_column(Integer)  # records in the batch


class StoredUsage(TenantOwned, Base):
    """What a tenant keeps in the event store, per UTC day of the records' ``ts``.

    Kept per day so retention, which removes whole days, subtracts exactly what it removed.
    ``bytes`` counts each record's JSON size as received (a store-independent measure). Ingest
    adds to it in the batch's transaction, so a re-sent batch adds nothing twice.
    """

    __tablename__ = "stored_usage"

    day: Mapped[int] = mapped_column(Integer, primary_key=True)  # floor(ts / 86400)
    events: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)


class AnomalyScore(TenantOwned, Base):
    """The anomaly model's score of one connection, written by the detect role (ADR 15).

    A side table, not a column of ``events``: the detect role scores a connection after ingest
    stored it, and an UPDATE of a partitioned, indexed row per connection would cost more than
    the score itself. The search API joins it to conn events by ``uid`` for the analyst.
    """

    __tablename__ = "anomaly_scores"
    __table_args__ = (Index("ix_anomaly_scores_tenant_ts", "tenant_id", "ts"),)

    uid: Mapped[str] = mapped_column(String(64), primary_key=True)  # the conn record's uid
    ts: Mapped[float]  # the connection's ts, for retention
    score: Mapped[float]  # 0..1; higher is more unusual for this tenant


class EventRollup(TenantOwned, Base):
    """How many of a tenant's events carry ``value`` in ``field``, per record type and closed
    time slot: what the histogram and top-N read instead of the raw rows (ADR 0019).

    ``grain`` is the slot's width in seconds (3600: an hour; 86400: a whole UTC day, summed from
    its hours once the day is closed) and ``slot`` is ``floor(ts / grain)``. The ``type`` field
    counts every event (its value is the record type), so it also serves the histogram.
    Written only by the maintenance job (``events.rollups.refresh``); ``RollupDay`` says which
    hours of a day it covers. ``field`` leads after the tenant: a query reads one field.
    """

    __tablename__ = "event_rollups"

    field: Mapped[str] = mapped_column(String(16), primary_key=True)
    grain: Mapped[int] = mapped_column(Integer, primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(Text, primary_key=True)  # a number as its decimal text
    n: Mapped[int] = mapped_column(BigInteger)


class RollupDay(TenantOwned, Base):
    """How far ``EventRollup`` covers one UTC day of a tenant's events.

    The hours of ``day`` before ``through`` (epoch seconds, on an hour) are rolled up, and they
    held ``events`` events when they were. A query trusts them only while the day's stored
    usage (kept by ingest in the rows' own transaction) minus the rows after ``through`` still
    equals ``events``: a record that arrived late into a rolled-up hour breaks the equality, and
    that day is read from the raw rows until the job rolls it up again.
    """

    __tablename__ = "rollup_days"

    day: Mapped[int] = mapped_column(Integer, primary_key=True)  # floor(ts / 86400)
    through: Mapped[int] = mapped_column(BigInteger)
    events: Mapped[int] = mapped_column(BigInteger)


class EventTextBlock(TenantOwned, Base):
    """A Bloom filter of the free-text 3-grams of one block of a tenant's stored events: what
    lets a search for a rare term read only the blocks that may hold it (ADR 0023).

    A block is up to ``textblocks.BLOCK_ROWS`` consecutive rows (in ``ts`` order) of closed
    hours of one UTC ``day``, its rows' times within ``[ts_lo, ts_hi]``. Each block built by
    one pass over the hours before ``through`` carries that ``through``: per day, the largest
    ``through`` is how far the blocks reach and the sum of ``rows`` how many events those hours
    held, checked against stored usage as ``RollupDay`` is (a late record makes the day read
    raw until the pass rebuilds it). Written only by the maintenance job.
    """

    __tablename__ = "event_text_blocks"

    day: Mapped[int] = mapped_column(Integer, primary_key=True)  # floor(ts / 86400)
    block: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0, 1, ... within the day
    ts_lo: Mapped[float]  # the block's oldest row's ts
    ts_hi: Mapped[float]  # its newest row's ts
    rows: Mapped[int] = mapped_column(Integer)
    through: Mapped[int] = mapped_column(BigInteger)  # epoch seconds, on an hour
    bloom: Mapped[bytes] = mapped_column(LargeBinary)  # grams.build_filter
