"""Agent registry and enrollment-token tables."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from a2z.server.store.base import Base, TenantOwned, utcnow


class Agent(TenantOwned, Base):
    """One sensor installation."""

    __tablename__ = "agents"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(default=None)
    # The epoch of the agent's last stream, and the highest batch seq stored within it.
    boot_epoch: Mapped[int | None] = mapped_column(BigInteger, default=None)
    last_seq: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # Set when two live connections presented this agent's identity at once (a copied key).
    clone_suspected_at: Mapped[datetime | None] = mapped_column(default=None)
    # The latest heartbeat: when it came, the software and config versions, and its metrics.
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    version: Mapped[str | None] = mapped_column(String(40), default=None)
    config_version: Mapped[int | None] = mapped_column(BigInteger, default=None)
    health: Mapped[str | None] = mapped_column(Text, default=None)  # heartbeat metrics, JSON
    # Control path: the group whose configuration layer the agent inherits; the version and
    # body (JSON AgentSettings) of the effective configuration it should run, bumped whenever
    # its group's or its own layer changes; and the last version it refused, with its reason.
    # The version it runs is ``config_version`` (from its heartbeats and config results).
    group_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    desired_config_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    desired_config: Mapped[str | None] = mapped_column(Text, default=None)
    config_rejected_version: Mapped[int | None] = mapped_column(BigInteger, default=None)
    config_rejected_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # Edge rules (ADR 13): the digest of the pushed rule set the agent runs (from its results
    # and heartbeats; "" none yet, NULL: it has not said it takes rule sets), and the last set
    # it refused, with its reason. What it should run is the tenant's rule set, computed when
    # due, so nothing here goes stale on a rule change.
    rules_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    rules_rejected_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    rules_rejected_reason: Mapped[str | None] = mapped_column(Text, default=None)


class EnrollmentToken(TenantOwned, Base):
    """A short-lived, limited-use secret an agent trades for its identity at enrollment."""

    __tablename__ = "enrollment_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    secret_hash: Mapped[str] = mapped_column(String(64))
    uses_left: Mapped[int]
    expires_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
