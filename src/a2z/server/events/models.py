"""Event table: one row per record, common fields typed, the whole record as JSON."""

from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from a2z.server.store.base import Base, TenantOwned

SHORT_TEXT = 255
"""Length kept of the indexed search strings (a DNS name is at most 253 characters)."""


class Event(TenantOwned, Base):
    """A stored record.

    The primary key ``(tenant_id, agent_id, boot_epoch, seq, idx)`` names the record's place in
    its agent's stream, so a re-sent batch collapses onto the rows it already wrote: delivery is
    at-least-once, the stored effect exactly-once.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_tenant_ts", "tenant_id", "ts"),
        Index("ix_events_tenant_path_ts", "tenant_id", "path", "ts"),
        Index("ix_events_tenant_orig_ip", "tenant_id", "orig_ip"),
        Index("ix_events_tenant_resp_ip", "tenant_id", "resp_ip"),
        Index("ix_events_tenant_query", "tenant_id", "query"),
        Index("ix_events_tenant_host", "tenant_id", "host"),
        Index("ix_events_tenant_server_name", "tenant_id", "server_name"),
    )

    agent_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    boot_epoch: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)  # position within the batch
    ts: Mapped[float]
    path: Mapped[str] = mapped_column(String(32))  # record type: conn, dns, http, ...
    uid: Mapped[str] = mapped_column(String(64))
    orig_h: Mapped[str] = mapped_column(String(64))
    orig_p: Mapped[int]
    resp_h: Mapped[str] = mapped_column(String(64))
    resp_p: Mapped[int]
    data: Mapped[str] = mapped_column(Text)  # the full record as JSON, Zeek field names
    # Search columns (migration 0004), filled from the record by ``store_batch``; NULL when the
    # record type has no such field. Indexed strings keep their first ``SHORT_TEXT`` characters.
    orig_ip: Mapped[str | None] = mapped_column(String(32))  # orig_h sortable: search.ip_key
    resp_ip: Mapped[str | None] = mapped_column(String(32))  # resp_h likewise
    query: Mapped[str | None] = mapped_column(String(SHORT_TEXT))  # dns: queried name
    host: Mapped[str | None] = mapped_column(String(SHORT_TEXT))  # http: Host header
    server_name: Mapped[str | None] = mapped_column(String(SHORT_TEXT))  # ssl: SNI
    uri: Mapped[str | None] = mapped_column(Text)  # http: request target
    user_agent: Mapped[str | None] = mapped_column(Text)  # http: User-Agent header
    status_code: Mapped[int | None]  # http: response status
    title: Mapped[str | None] = mapped_column(Text)  # alert: one-line summary
