"""Event table: one row per record, common fields typed, the whole record as JSON."""

from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from a2z.server.store.base import Base, TenantOwned


class Event(TenantOwned, Base):
    """A stored record.

    The primary key ``(tenant_id, agent_id, boot_epoch, seq, idx)`` names the record's place in
    its agent's stream, so a re-sent batch collapses onto the rows it already wrote: delivery is
    at-least-once, the stored effect exactly-once.
    """

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_tenant_ts", "tenant_id", "ts"),)

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
