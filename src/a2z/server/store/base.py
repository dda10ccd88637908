"""Declarative base and the TenantOwned mixin every tenant's table inherits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import DateTime, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    """Aware UTC now; one clock for every timestamp column."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Root of all models."""

    type_annotation_map = {datetime: DateTime(timezone=True), uuid.UUID: Uuid}


class TenantOwned:
    """Mixin for rows that belong to one tenant; the session factory scopes every query on it.

    ``tenant_id`` leads each table's primary key and indexes so tables can be distributed by
    tenant (Citus) and so PostgreSQL row-level security can key on it.
    """

    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, sort_order=-10)
