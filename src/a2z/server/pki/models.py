"""Per-tenant CA and issued agent certificates."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from a2z.server.store.base import Base, TenantOwned, utcnow


class TenantCA(TenantOwned, Base):
    """The CA that signs a tenant's agent certificates; its key is encrypted at rest."""

    __tablename__ = "tenant_cas"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    cert_pem: Mapped[str] = mapped_column(Text)
    key_pem: Mapped[str] = mapped_column(Text)  # PKCS#8, encrypted with the server secret
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AgentCert(TenantOwned, Base):
    """A certificate issued to an agent; revoking it closes the agent's connections."""

    __tablename__ = "agent_certs"

    serial: Mapped[str] = mapped_column(String(40), primary_key=True)  # hex
    agent_id: Mapped[uuid.UUID]
    fingerprint: Mapped[str] = mapped_column(String(64))
    not_after: Mapped[datetime]
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
