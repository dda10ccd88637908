"""API key table: machine credentials, stored hashed."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from a2z.server.store.base import Base, TenantOwned, utcnow


class ApiKey(TenantOwned, Base):
    """A revocable machine credential; only its SHA-256 is kept."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    prefix: Mapped[str] = mapped_column(String(16), index=True)  # public part, for lookup
    secret_hash: Mapped[str] = mapped_column(String(64))  # sha256 hex of the whole key
    role: Mapped[str] = mapped_column(String(20))
    agent_id: Mapped[uuid.UUID | None] = mapped_column(default=None)  # set for agent keys
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
