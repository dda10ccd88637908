"""Commands issued to agents and their outcomes."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from a2z.server.store.base import Base, TenantOwned, utcnow


class CommandStatus(enum.StrEnum):
    """A command's life: queued -> sent -> acked | failed; or expired before an answer."""

    QUEUED = "queued"  # stored, not yet on any channel
    SENT = "sent"  # written to a live channel (re-sent on the agent's next connect if unanswered)
    ACKED = "acked"  # the agent ran it and answered ok
    FAILED = "failed"  # the agent answered with an error
    EXPIRED = "expired"  # no answer before ``expires_at``


OPEN_STATUSES = (CommandStatus.QUEUED.value, CommandStatus.SENT.value)


class AgentCommand(TenantOwned, Base):
    """One command for one agent."""

    __tablename__ = "agent_commands"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    agent_id: Mapped[uuid.UUID]
    kind: Mapped[str] = mapped_column(String(32))  # a2z.records.CommandKind
    args: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    status: Mapped[str] = mapped_column(String(16), default=CommandStatus.QUEUED.value)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    expires_at: Mapped[datetime]
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    result: Mapped[str | None] = mapped_column(Text, default=None)  # JSON, capped
    error: Mapped[str | None] = mapped_column(Text, default=None)
