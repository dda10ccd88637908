"""Published agent releases (platform-wide, not per tenant: every tenant runs the same agent)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from a2z.server.store.base import Base, utcnow


class AgentRelease(Base):
    """One agent package and its signature; the bytes live under ``<data_dir>/releases``."""

    __tablename__ = "agent_releases"

    version: Mapped[str] = mapped_column(String(40), primary_key=True)
    filename: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    signature: Mapped[str] = mapped_column(Text)  # Ed25519, base64
    published_at: Mapped[datetime] = mapped_column(default=utcnow)
    published_by: Mapped[str] = mapped_column(String(64), default="")
