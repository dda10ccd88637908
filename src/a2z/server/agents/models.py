"""Agent registry table."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from a2z.server.store.base import Base, TenantOwned, utcnow


class Agent(TenantOwned, Base):
    """One sensor installation."""

    __tablename__ = "agents"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(default=None)
    boot_epoch: Mapped[int | None] = mapped_column(default=None)  # epoch of the last stream
    last_seq: Mapped[int | None] = mapped_column(default=None)  # highest batch seq stored
