"""Credentials: API keys and login sessions (refresh tokens), stored hashed."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from a2z.server.store.base import Base, TenantOwned, utcnow


class ApiKey(TenantOwned, Base):
    """A revocable machine credential; only its SHA-256 is kept."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), default="")
    secret_hash: Mapped[str] = mapped_column(String(64))  # sha256 hex of the whole key
    role: Mapped[str] = mapped_column(String(20))
    agent_id: Mapped[uuid.UUID | None] = mapped_column(default=None)  # set for agent keys
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class AuthSession(TenantOwned, Base):
    """One login: its rotating refresh token and whether it was revoked (logout, reuse)."""

    __tablename__ = "auth_sessions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID]
    refresh_hash: Mapped[str] = mapped_column(String(64))  # the current refresh token
    previous_hash: Mapped[str | None] = mapped_column(String(64), default=None)  # last rotated
    source: Mapped[str] = mapped_column(String(64), default="")  # client address at login
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class LoginFailure(Base):
    """One failed login, counted against an account and against a source address.

    Control-plane, not tenant data: a login names no tenant until its password is verified. The
    table is shared by every API process, so ``--workers N`` does not multiply the limits.
    """

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_key_at", "key", "at"),
        Index("ix_login_failures_at", "at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # sha256 hex of "a:<account>" or "s:<address>": who was tried is not kept in clear.
    key: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)
