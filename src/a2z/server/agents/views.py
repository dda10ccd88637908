"""Agent registry routes."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from a2z.server.agents import service as agents
from a2z.server.agents.models import Agent
from a2z.server.deps import Context, Reader
from a2z.server.errors import NotFound

router = APIRouter(prefix="/api/v1/agents", tags=["agents"])


class AgentOut(BaseModel):
    """An agent as the API shows it."""

    id: uuid.UUID
    name: str
    created_at: datetime
    last_seen_at: datetime | None
    boot_epoch: int | None
    last_seq: int | None

    @classmethod
    def of(cls, agent: Agent) -> AgentOut:
        """Project a row."""
        return cls(
            id=agent.id,
            name=agent.name,
            created_at=agent.created_at,
            last_seen_at=agent.last_seen_at,
            boot_epoch=agent.boot_epoch,
            last_seq=agent.last_seq,
        )


class AgentList(BaseModel):
    """Every agent of the tenant."""

    items: list[AgentOut]


@router.get("")
def list_agents(principal: Reader, ctx: Context) -> AgentList:
    """The caller's tenant's agents."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        return AgentList(items=[AgentOut.of(a) for a in agents.list_all(session=session)])


@router.get("/{agent_id}")
def get_agent(agent_id: uuid.UUID, principal: Reader, ctx: Context) -> AgentOut:
    """One agent; another tenant's agent is 404, exactly like one that does not exist."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        agent = agents.get(session=session, agent_id=agent_id)
        if agent is None:
            raise NotFound("no such agent")
        return AgentOut.of(agent)
