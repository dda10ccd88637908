"""Tenant rule tables: a rule's current state, and its immutable versions.

A rule is keyed by its Sigma id within the tenant: a custom rule has its own id, an override
has the id of the shipped rule it replaces. Versions are never changed or deleted (triggers
refuse it, migration 0008); a rule that is deleted through the API is archived, so the text
behind past alerts stays readable.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import ForeignKeyConstraint, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from a2z.server.store.base import Base, TenantOwned, utcnow

TITLE_MAX = 256  # Sigma's specification limits titles to 256 characters


class RuleKind(enum.StrEnum):
    """Where a tenant rule comes from."""

    CUSTOM = "custom"  # the tenant's own rule
    OVERRIDE = "override"  # the tenant's version of a shipped rule (same Sigma id)


class VersionOrigin(enum.StrEnum):
    """What made a version."""

    CREATE = "create"  # the rule's first version
    UPDATE = "update"  # a person or key replaced the text
    UPSTREAM = "upstream"  # an override merged with a new shipped version at upgrade


class TenantRule(TenantOwned, Base):
    """A tenant's rule and its current state; the text is in its current version."""

    __tablename__ = "tenant_rules"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)  # the Sigma id
    kind: Mapped[str] = mapped_column(String(16))  # RuleKind
    title: Mapped[str] = mapped_column(String(TITLE_MAX))  # of the current version
    enabled: Mapped[bool]
    version: Mapped[int]  # the current version's number (1, 2, ...)
    created_by: Mapped[str] = mapped_column(String(200))  # actor, as in the audit log
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    archived_at: Mapped[datetime | None] = mapped_column(default=None)  # "deleted"


class RuleVersion(TenantOwned, Base):
    """One immutable version of a tenant rule's text."""

    __tablename__ = "tenant_rule_versions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "rule_id"], ["tenant_rules.tenant_id", "tenant_rules.id"]
        ),
    )

    rule_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(TITLE_MAX))
    yaml: Mapped[str] = mapped_column(Text)  # the Sigma rule, as written
    digest: Mapped[str] = mapped_column(String(64))  # SHA-256 of yaml
    origin: Mapped[str] = mapped_column(String(16))  # VersionOrigin
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Overrides only: the shipped text this version derives from (the next upstream merge's
    # base) and its digest, compared with the shipped catalog to spot an upstream change.
    base_yaml: Mapped[str | None] = mapped_column(Text, default=None)
    base_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    # Upstream merges only: keys both sides changed (JSON list; the tenant's value was kept),
    # and why the merged text was not used when it did not compile.
    conflicts: Mapped[str] = mapped_column(Text, default="[]")
    merge_error: Mapped[str | None] = mapped_column(Text, default=None)
