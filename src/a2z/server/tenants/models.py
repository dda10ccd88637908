"""Tenants, people, and their memberships (the role a person holds in a tenant)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from a2z.server.store.base import Base, TenantOwned, utcnow

DEFAULT_RETENTION_DAYS = 30


class Role(enum.StrEnum):
    """What a principal may do within a tenant."""

    OWNER = "owner"  # everything, including managing owners
    ADMIN = "admin"  # people, keys, agents, enrollment, audit
    ANALYST = "analyst"  # read and work the data
    VIEWER = "viewer"  # read the data
    OPERATOR = "operator"  # MSSP staff: admin in each tenant explicitly granted, creates tenants
    AGENT = "agent"  # machine role held by agent-bound keys: only sending record batches over
    # HTTP (agents with a certificate use the gateway's channel instead)


class Tenant(Base):
    """A customer; owns every tenant-owned row through ``tenant_id``. Not itself tenant-owned."""

    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set by operators (``a2z admin tenant set``, PATCH /api/v1/tenants/{id}); see quotas/.
    retention_days: Mapped[int] = mapped_column(
        Integer, default=DEFAULT_RETENTION_DAYS, server_default=str(DEFAULT_RETENTION_DAYS)
    )  # events older than this many days are deleted
    region: Mapped[str | None] = mapped_column(String(32))  # data-residency tag, on every event
    events_per_second: Mapped[int | None]  # sustained ingest rate; None: unlimited
    burst_events: Mapped[int | None]  # token bucket size; None: one second's worth
    max_stored_bytes: Mapped[int | None] = mapped_column(BigInteger)  # None: unlimited
    anomaly_threshold: Mapped[float | None]  # anomaly model alert threshold; None: the default


class User(Base):
    """A person's identity and password; what they may do lives in their memberships."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Membership(TenantOwned, Base):
    """A person's role in one tenant. An operator has one membership per granted tenant."""

    __tablename__ = "memberships"
    __table_args__ = (Index("ix_memberships_user", "user_id", "tenant_id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
