"""Declarative base, the TenantOwned mixin every tenant's table inherits, and the
OperatorManaged marker of rows every tenant reads and only operators change."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect, TypeDecorator, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    """Aware UTC now; one clock for every timestamp column."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and always read back timezone-aware.

    SQLite has no timezone type and hands back naive values; this makes both stores agree.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stamp: datetime = value
        return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


class Base(DeclarativeBase):
    """Root of all models."""

    type_annotation_map = {datetime: UTCDateTime(), uuid.UUID: Uuid}


class TenantOwned:
    """Mixin for rows that belong to one tenant; the session factory scopes every query on it.

    ``tenant_id`` leads each table's primary key and indexes so tables can be distributed by
    tenant (Citus) and so PostgreSQL row-level security can key on it.
    """

    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, sort_order=-10)


class OperatorManaged:
    """Marker for rows of no tenant that every tenant's detections read and only operators
    change (global threat intel). The session factory refuses to write them outside a session
    opened for it (``SessionFactory.tenant(..., global_intel=True)``); on PostgreSQL row-level
    security refuses the same underneath (``tenancy.global_intel_guard``), so a bug in a
    tenant's query cannot change what every tenant is matched against.
    """
