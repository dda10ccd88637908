"""Agent groups and the immutable, numbered versions of group and agent configuration layers."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from a2z.server.store.base import Base, TenantOwned, utcnow


class AgentGroup(TenantOwned, Base):
    """A named set of agents sharing one configuration layer."""

    __tablename__ = "agent_groups"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_agent_groups_name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConfigScope(enum.StrEnum):
    """Whose layer a version is."""

    GROUP = "group"
    AGENT = "agent"


class ConfigVersion(TenantOwned, Base):
    """One version of a group's or an agent's configuration layer; never changed once written.

    Rolling back writes a new version with an old body, so the history stays complete.
    """

    __tablename__ = "config_versions"
    __table_args__ = (
        UniqueConstraint(
            "tenant_id", "scope", "subject_id", "version", name="uq_config_versions_number"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    scope: Mapped[str] = mapped_column(String(8))  # ConfigScope
    subject_id: Mapped[uuid.UUID]  # the group's or the agent's id
    version: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per subject
    body: Mapped[str] = mapped_column(Text)  # the layer, JSON (a2z.records.ConfigLayer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    rolled_back_from: Mapped[int | None] = mapped_column(Integer, default=None)
