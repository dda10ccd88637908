"""Agent registry and enrollment-token routes."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import msgspec
from fastapi import APIRouter, Response
from pydantic import Field

from a2z.rules.catalog import version_of
from a2z.server.agents import service as agents
from a2z.server.agents.models import Agent
from a2z.server.audit import service as audit
from a2z.server.auth.principal import Principal
from a2z.server.context import ServerContext
from a2z.server.deps import AgentAdmin, Context, Reader, Source
from a2z.server.errors import NotFound
from a2z.server.schemas import Body, CursorParam, Limit, Out
from a2z.server.store.base import utcnow

router = APIRouter(prefix="/api/v1", tags=["agents"])


class AgentStatus(StrEnum):
    """Liveness from heartbeats."""

    ONLINE = "online"  # a heartbeat within the offline threshold
    OFFLINE = "offline"  # heartbeats stopped
    NEVER = "never"  # no heartbeat yet


class AgentOut(Out):
    """An agent as the API shows it."""

    id: uuid.UUID
    name: str
    created_at: datetime
    last_seen_at: datetime | None
    boot_epoch: int | None
    last_seq: int | None
    status: AgentStatus
    last_heartbeat_at: datetime | None
    version: str | None
    config_version: int | None
    intel_version: int | None  # threat-intel set the agent matches (see GET /intel/stats)
    intel_rejected_reason: str | None  # why it refused the last intel push, if it did
    health: dict[str, Any] | None  # the latest heartbeat's metrics
    clone_suspected_at: datetime | None
    # Edge rules (ADR 13): the pushed rule set the agent runs ("": none yet; null: the agent
    # takes no rule sets), and the last set it refused with the reason; compare with
    # GET /api/v1/rules/effective's edge_digest.
    rules_digest: str | None
    rules_version: int | None
    rules_rejected_digest: str | None
    rules_rejected_reason: str | None

    @classmethod
    def of(cls, agent: Agent, offline_after_s: float) -> AgentOut:
        """Project a row; the status is derived from the last heartbeat's age."""
        return cls(**agent_view(agent, offline_after_s))


def agent_view(agent: agents.ShownAgent, offline_after_s: float) -> dict[str, Any]:
    """``AgentOut``'s fields of an ``Agent`` or of a row of ``agents.SHOWN``, as plain values.

    The one projection both the route (validated into ``AgentOut``) and the hot read path
    (encoded as it is, hot_reads.py) use, so the two cannot drift apart.
    """
    beat = agent.last_heartbeat_at
    if beat is None:
        status = AgentStatus.NEVER
    elif utcnow() - beat > timedelta(seconds=offline_after_s):
        status = AgentStatus.OFFLINE
    else:
        status = AgentStatus.ONLINE
    return {
        "id": agent.id, "name": agent.name, "created_at": agent.created_at,
        "last_seen_at": agent.last_seen_at, "boot_epoch": agent.boot_epoch,
        "last_seq": agent.last_seq, "status": status, "last_heartbeat_at": beat,
        "version": agent.version, "config_version": agent.config_version,
        "intel_version": agent.intel_version,
        "intel_rejected_reason": agent.intel_rejected_reason,
        "health": msgspec.json.decode(agent.health) if agent.health else None,
        "clone_suspected_at": agent.clone_suspected_at, "rules_digest": agent.rules_digest,
        "rules_version": version_of(agent.rules_digest) if agent.rules_digest else None,
        "rules_rejected_digest": agent.rules_rejected_digest,
        "rules_rejected_reason": agent.rules_rejected_reason,
    }  # fmt: skip


class AgentPage(Out):
    """One page of agents."""

    items: list[AgentOut]
    next_cursor: str | None


class AgentUpdate(Body):
    """Fields an agent's record allows changing."""

    name: str = Field(min_length=1, max_length=200)


@router.get("/agents")
def list_agents(
    principal: Reader, ctx: Context, limit: Limit = 50, cursor: CursorParam = None
) -> AgentPage:
    """The caller's tenant's agents."""
    return AgentPage.model_validate(agents_page(ctx, principal, limit=limit, cursor=cursor))


def agents_page(
    ctx: ServerContext, principal: Principal, *, limit: int, cursor: str | None
) -> dict[str, Any]:
    """``GET /agents``' body as plain values (the route and hot_reads.py both answer it)."""
    offline_after_s = ctx.settings.agent_offline_after_s
    with ctx.sessions.tenant(principal.tenant_id) as session:
        page = agents.list_page(session=session, limit=limit, cursor=cursor)
    return {
        "items": [agent_view(row, offline_after_s) for row in page.items],
        "next_cursor": page.next_cursor,
    }


@router.get("/agents/{agent_id}")
def get_agent(agent_id: uuid.UUID, principal: Reader, ctx: Context) -> AgentOut:
    """One agent; another tenant's agent is 404, exactly like one that does not exist."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        agent = agents.get(session=session, agent_id=agent_id)
        if agent is None:
            raise NotFound("no such agent")
        return AgentOut.of(agent, ctx.settings.agent_offline_after_s)


@router.patch("/agents/{agent_id}")
def update_agent(
    agent_id: uuid.UUID, body: AgentUpdate, principal: AgentAdmin, ctx: Context, source: Source
) -> AgentOut:
    """Rename an agent."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        agent = agents.get(session=session, agent_id=agent_id)
        if agent is None:
            raise NotFound("no such agent")
        agent.name = body.name
        audit.record(
            session=session,
            actor=principal.actor,
            action="agent.update",
            target=f"agent:{agent.id}",
            source=source,
            detail={"name": body.name},
        )
        return AgentOut.of(agent, ctx.settings.agent_offline_after_s)


@router.delete("/agents/{agent_id}", status_code=204)
def delete_agent(
    agent_id: uuid.UUID, principal: AgentAdmin, ctx: Context, source: Source
) -> Response:
    """Remove an agent and revoke its credentials; its stored events remain."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        agent = agents.get(session=session, agent_id=agent_id)
        if agent is None:
            raise NotFound("no such agent")
        agents.delete_agent(session=session, agent=agent)
        audit.record(
            session=session,
            actor=principal.actor,
            action="agent.delete",
            target=f"agent:{agent_id}",
            source=source,
        )
    return Response(status_code=204)


class EnrollmentTokenIn(Body):
    """A new enrollment token."""

    ttl_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    uses: int = Field(default=1, ge=1, le=1000)


class EnrollmentTokenOut(Out):
    """An enrollment token without its secret."""

    id: uuid.UUID
    uses_left: int
    expires_at: datetime
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


class EnrollmentTokenCreated(EnrollmentTokenOut):
    """A new token (the secret is shown this once) and the pin of the CA agents must trust."""

    token: str
    ca_pin: str  # SHA-256 of the agent root certificate: `a2z agent enroll --ca-pin`


class EnrollmentTokenPage(Out):
    """One page of enrollment tokens."""

    items: list[EnrollmentTokenOut]
    next_cursor: str | None


@router.get("/enrollment-tokens")
def list_enrollment_tokens(
    principal: AgentAdmin, ctx: Context, limit: Limit = 50, cursor: CursorParam = None
) -> EnrollmentTokenPage:
    """The tenant's enrollment tokens."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        page = agents.list_enrollment_tokens(session=session, limit=limit, cursor=cursor)
        return EnrollmentTokenPage(
            items=[EnrollmentTokenOut.model_validate(t) for t in page.items],
            next_cursor=page.next_cursor,
        )


@router.post("/enrollment-tokens", status_code=201)
def create_enrollment_token(
    body: EnrollmentTokenIn, principal: AgentAdmin, ctx: Context, source: Source
) -> EnrollmentTokenCreated:
    """A short-lived, limited-use token for enrolling agents into the caller's tenant."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        row, token = agents.create_enrollment_token(
            session=session,
            ttl=timedelta(seconds=body.ttl_seconds),
            uses=body.uses,
            created_by=principal.actor,
        )
        audit.record(
            session=session,
            actor=principal.actor,
            action="enrollment_token.create",
            target=f"enrollment_token:{row.id}",
            source=source,
            detail={"ttl_seconds": body.ttl_seconds, "uses": body.uses},
        )
        return EnrollmentTokenCreated(
            **EnrollmentTokenOut.model_validate(row).model_dump(), token=token, ca_pin=ctx.root.pin
        )


@router.get("/enrollment-tokens/{token_id}")
def get_enrollment_token(
    token_id: uuid.UUID, principal: AgentAdmin, ctx: Context
) -> EnrollmentTokenOut:
    """One enrollment token."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        row = agents.get_enrollment_token(session=session, token_id=token_id)
        if row is None:
            raise NotFound("no such enrollment token")
        return EnrollmentTokenOut.model_validate(row)


@router.delete("/enrollment-tokens/{token_id}", status_code=204)
def revoke_enrollment_token(
    token_id: uuid.UUID, principal: AgentAdmin, ctx: Context, source: Source
) -> Response:
    """Revoke a token before it expires or runs out of uses."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        row = agents.get_enrollment_token(session=session, token_id=token_id)
        if row is None:
            raise NotFound("no such enrollment token")
        row.revoked_at = row.revoked_at or utcnow()
        audit.record(
            session=session,
            actor=principal.actor,
            action="enrollment_token.revoke",
            target=f"enrollment_token:{row.id}",
            source=source,
        )
    return Response(status_code=204)
