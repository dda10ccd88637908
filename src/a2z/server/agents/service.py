"""Agent registry operations."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from a2z.server.agents.models import Agent
from a2z.server.store.base import utcnow
from a2z.server.store.session import ScopedSession


def create(*, session: ScopedSession, name: str) -> Agent:
    """Register an agent in the session's tenant."""
    agent = Agent(tenant_id=session.tenant_id, name=name)
    session.add(agent)
    session.flush()
    return agent


def list_all(*, session: ScopedSession) -> list[Agent]:
    """Every agent of the session's tenant, oldest first."""
    return list(session.scalars(select(Agent).order_by(Agent.created_at, Agent.id)))


def get(*, session: ScopedSession, agent_id: uuid.UUID) -> Agent | None:
    """One agent of the session's tenant, or None (also for another tenant's agent)."""
    return session.scalars(select(Agent).where(Agent.id == agent_id)).one_or_none()


def record_batch(*, session: ScopedSession, agent_id: uuid.UUID, boot_epoch: int, seq: int) -> None:
    """Note that a batch from this agent was stored: last seen, epoch, highest seq."""
    agent = get(session=session, agent_id=agent_id)
    if agent is None:
        return
    agent.last_seen_at = utcnow()
    if agent.boot_epoch != boot_epoch:
        agent.boot_epoch, agent.last_seq = boot_epoch, seq
    else:
        agent.last_seq = max(agent.last_seq or 0, seq)
