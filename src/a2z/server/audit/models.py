"""Audit table; the database refuses UPDATE and DELETE on it (triggers; grants on PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from a2z.server.store.base import Base, TenantOwned, utcnow


class AuditEvent(TenantOwned, Base):
    """One security-relevant action."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_tenant_at", "tenant_id", "at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))  # "user:<id>", "key:<id>", "agent:<id>", "cli"
    action: Mapped[str] = mapped_column(String(64))  # e.g. auth.login, api_key.create
    target: Mapped[str] = mapped_column(String(200), default="")  # the object acted on
    source: Mapped[str] = mapped_column(String(64), default="")  # client address
    outcome: Mapped[str] = mapped_column(String(16), default="success")  # success | failure
    detail: Mapped[str] = mapped_column(Text, default="{}")  # JSON, never secrets


class SystemAuditEvent(Base):
    """One security-relevant action on what belongs to no tenant (agent releases, ...).

    The operators' audit trail: the same shape and the same append-only guard as the tenant
    log, read through ``GET /api/v1/system/audit`` by operators only.
    """

    __tablename__ = "system_audit_events"
    __table_args__ = (Index("ix_system_audit_at", "at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))  # "cli", "user:<id>", ...
    action: Mapped[str] = mapped_column(String(64))  # e.g. release.publish
    target: Mapped[str] = mapped_column(String(200), default="")  # e.g. release:0.2.0
    source: Mapped[str] = mapped_column(String(64), default="")  # client address, if any
    outcome: Mapped[str] = mapped_column(String(16), default="success")  # success | failure
    detail: Mapped[str] = mapped_column(Text, default="{}")  # JSON, never secrets
