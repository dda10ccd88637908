"""Indicator and warning-list tables: the tenant's own (RLS) and the global ones (operators').

Rows are versioned rather than deleted: a change stamps ``version`` with the owner's next intel
version, a delete sets ``removed_version`` (a tombstone), so "what changed since version v" is
one indexed query, and an agent at v gets a delta. Tombstones older than ``TOMBSTONE_VERSIONS``
versions are purged and the owner's ``floor`` raised: an agent older than the floor gets the
whole set instead.

The global tables have no ``tenant_id``, so they are not under row-level security: every
tenant's transaction may read them (the detect role matches them for everyone). Only the
operator routes write them; the API's permission check is what guards that.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from a2z.server.store.base import Base, OperatorManaged, TenantOwned, utcnow

VALUE_MAX = 1024  # longer values (URLs) are refused at import: they key a btree index
SOURCE_MAX = 100
TOMBSTONE_VERSIONS = 256  # removals remembered for this many versions


class WarningKind(enum.StrEnum):
    """What a warning-list entry holds."""

    CIDR = "cidr"  # an address or block: indicators inside it are benign
    DOMAIN = "domain"  # a domain and its subdomains
    VALUE = "value"  # an exact value (a URL, a hash, a fingerprint)


class _IndicatorColumns:
    """What every stored indicator has, tenant or global."""

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    type: Mapped[str] = mapped_column(String(8))  # IndicatorType
    value: Mapped[str] = mapped_column(String(VALUE_MAX))  # normal form (a2z.rules.intel)
    source: Mapped[str] = mapped_column(String(SOURCE_MAX))  # feed or list it came from
    confidence: Mapped[int] = mapped_column(Integer)  # 0-100
    expires_at: Mapped[datetime | None] = mapped_column(default=None)  # no match after it
    ref: Mapped[str | None] = mapped_column(String(200), default=None)  # e.g. a STIX id
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)  # first import
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)  # latest import that had it
    version: Mapped[int] = mapped_column(BigInteger)  # owner's intel version of the last change
    removed_version: Mapped[int | None] = mapped_column(BigInteger, default=None)  # tombstone


class _WarningColumns:
    """A warning-list entry: a known-benign value."""

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(8))  # WarningKind
    value: Mapped[str] = mapped_column(String(VALUE_MAX))  # normal form
    note: Mapped[str] = mapped_column(String(200), default="")  # why it is benign
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TenantIndicator(_IndicatorColumns, TenantOwned, Base):
    """One of the tenant's indicators (identity: type, value, source)."""

    __tablename__ = "intel_indicators"
    __table_args__ = (
        Index("uq_intel_indicators_key", "tenant_id", "type", "value", "source", unique=True),
        Index("ix_intel_indicators_version", "tenant_id", "version"),
        Index("ix_intel_indicators_source", "tenant_id", "source"),
        Index("ix_intel_indicators_seen", "tenant_id", "first_seen", "id"),
    )


class TenantWarning(_WarningColumns, TenantOwned, Base):
    """One entry of the tenant's warning list."""

    __tablename__ = "intel_warnings"
    __table_args__ = (
        Index("uq_intel_warnings_value", "tenant_id", "kind", "value", unique=True),
        Index("ix_intel_warnings_created", "tenant_id", "created_at", "id"),
    )


class TenantIntelState(TenantOwned, Base):
    """The tenant's intel version (bumped by every change) and the oldest delta base kept."""

    __tablename__ = "intel_state"

    version: Mapped[int] = mapped_column(BigInteger, default=0)
    floor: Mapped[int] = mapped_column(BigInteger, default=0)  # deltas from below: full set


class GlobalIndicator(_IndicatorColumns, OperatorManaged, Base):
    """An indicator every tenant is matched against (managed by operators)."""

    __tablename__ = "intel_global_indicators"
    __table_args__ = (
        Index("uq_intel_global_indicators_key", "type", "value", "source", unique=True),
        Index("ix_intel_global_indicators_version", "version"),
        Index("ix_intel_global_indicators_source", "source"),
        Index("ix_intel_global_indicators_seen", "first_seen", "id"),
    )


class GlobalWarning(_WarningColumns, OperatorManaged, Base):
    """An entry of the global warning list (managed by operators)."""

    __tablename__ = "intel_global_warnings"
    __table_args__ = (
        Index("uq_intel_global_warnings_value", "kind", "value", unique=True),
        Index("ix_intel_global_warnings_created", "created_at", "id"),
    )


class GlobalIntelState(OperatorManaged, Base):
    """The global intel version: one row, id 1."""

    __tablename__ = "intel_global_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    floor: Mapped[int] = mapped_column(BigInteger, default=0)
