"""Agent configuration routes: groups, group and agent layers, versions, rollback, desired vs
applied. Reading needs READ; writing needs MANAGE_AGENTS and is audited."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter
from fastapi import Body as JsonBody
from pydantic import Field

from a2z.records import ConfigLayer, effective_settings, parse_layer
from a2z.records.control import ConfigError
from a2z.server.agents import service as agents
from a2z.server.agents.config import service as configs
from a2z.server.agents.config.models import AgentGroup, ConfigScope, ConfigVersion
from a2z.server.agents.models import Agent
from a2z.server.audit import service as audit
from a2z.server.deps import AgentAdmin, Context, Reader, Source
from a2z.server.errors import InvalidInput, NotFound
from a2z.server.schemas import Body, CursorParam, Limit, Out
from a2z.server.store.session import ScopedSession

router = APIRouter(prefix="/api/v1", tags=["agent configuration"])

# A configuration layer: any subset of the fields of a2z.records.ConfigLayer. It is validated
# by that msgspec Struct (the one the agent validates with too), so a bad field is a 422.
LayerBody = Annotated[
    dict[str, Any],
    JsonBody(
        description="configuration layer: bpf, protocols, ruleset_version, batch_size, "
        "batch_max_wait_s, spool_max_bytes, cpu_percent_max, rss_max_bytes (unset: inherit)"
    ),
]


class GroupIn(Body):
    """A new agent group."""

    name: str = Field(min_length=1, max_length=200)


class GroupOut(Out):
    """An agent group."""

    id: uuid.UUID
    name: str
    created_at: datetime


class GroupPage(Out):
    """One page of groups."""

    items: list[GroupOut]
    next_cursor: str | None


class ConfigVersionOut(Out):
    """One version of a group's or an agent's layer; version 0 means nothing was set yet."""

    scope: ConfigScope
    subject_id: uuid.UUID
    version: int
    body: dict[str, Any]  # the layer's fields that are set
    created_at: datetime | None
    created_by: str
    rolled_back_from: int | None  # the version whose body this one restored

    @classmethod
    def of(cls, scope: ConfigScope, subject_id: uuid.UUID, row: ConfigVersion | None) -> Any:
        """Project a row (or the empty layer)."""
        if row is None:
            return cls(
                scope=scope, subject_id=subject_id, version=0, body={}, created_at=None,
                created_by="", rolled_back_from=None,
            )  # fmt: skip
        return cls(
            scope=scope, subject_id=subject_id, version=row.version,
            body=msgspec.json.decode(row.body), created_at=row.created_at,
            created_by=row.created_by, rolled_back_from=row.rolled_back_from,
        )  # fmt: skip


class ConfigVersionPage(Out):
    """One page of versions, oldest first."""

    items: list[ConfigVersionOut]
    next_cursor: str | None


class RollbackIn(Body):
    """Which earlier version to restore (as a new version)."""

    version: int = Field(ge=1)


class GroupAssignment(Body):
    """The group an agent belongs to; null takes it out of any group."""

    group_id: uuid.UUID | None


class AgentConfigOut(Out):
    """An agent's own layer, the effective configuration, and desired vs applied versions."""

    agent_id: uuid.UUID
    group_id: uuid.UUID | None
    layer: ConfigVersionOut  # the agent's own layer (latest version)
    effective: dict[str, Any]  # defaults <- group layer <- agent layer
    desired_version: int  # version of ``effective``; 0 until something is configured
    applied_version: int | None  # what the agent reports it runs
    rejected_version: int | None  # the last version the agent refused ...
    rejected_reason: str | None  # ... and why
    in_sync: bool  # applied == desired


def _layer(raw: dict[str, Any]) -> ConfigLayer:
    try:
        return parse_layer(raw)
    except ConfigError as exc:
        raise InvalidInput(f"invalid configuration: {exc}") from exc


def _group(session: ScopedSession, group_id: uuid.UUID) -> AgentGroup:
    group = configs.get_group(session=session, group_id=group_id)
    if group is None:
        raise NotFound("no such agent group")
    return group


def _agent(session: ScopedSession, agent_id: uuid.UUID) -> Agent:
    agent = agents.get(session=session, agent_id=agent_id)
    if agent is None:
        raise NotFound("no such agent")
    return agent


def _versions_page(
    session: ScopedSession,
    scope: ConfigScope,
    subject_id: uuid.UUID,
    limit: int,
    cursor: str | None,
) -> ConfigVersionPage:
    """One page of a group's or an agent's layer versions, oldest first."""
    page = configs.list_versions(
        session=session, scope=scope, subject_id=subject_id, limit=limit, cursor=cursor
    )
    return ConfigVersionPage(
        items=[ConfigVersionOut.of(scope, subject_id, r) for r in page.items],
        next_cursor=page.next_cursor,
    )


def agent_config_out(session: ScopedSession, agent: Agent) -> AgentConfigOut:
    """The agent's configuration state as the API shows it."""
    own = configs.latest(session=session, scope=ConfigScope.AGENT, subject_id=agent.id)
    effective = (
        msgspec.json.decode(agent.desired_config)
        if agent.desired_config
        else msgspec.to_builtins(effective_settings())
    )
    desired = agent.desired_config_version or 0
    return AgentConfigOut(
        agent_id=agent.id, group_id=agent.group_id,
        layer=ConfigVersionOut.of(ConfigScope.AGENT, agent.id, own), effective=effective,
        desired_version=desired, applied_version=agent.config_version,
        rejected_version=agent.config_rejected_version,
        rejected_reason=agent.config_rejected_reason,
        in_sync=(agent.config_version or 0) == desired,
    )  # fmt: skip


# -- groups ------------------------------------------------------------------------------------


@router.get("/agent-groups")
def list_groups(
    principal: Reader, ctx: Context, limit: Limit = 50, cursor: CursorParam = None
) -> GroupPage:
    """The tenant's agent groups."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        page = configs.list_groups(session=session, limit=limit, cursor=cursor)
        return GroupPage(
            items=[GroupOut.model_validate(g) for g in page.items], next_cursor=page.next_cursor
        )


@router.post("/agent-groups", status_code=201)
def create_group(body: GroupIn, principal: AgentAdmin, ctx: Context, source: Source) -> GroupOut:
    """A new agent group (409 if the name is taken)."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        group = configs.create_group(session=session, name=body.name)
        audit.record(
            session=session, actor=principal.actor, action="agent_group.create",
            target=f"agent_group:{group.id}", source=source, detail={"name": body.name},
        )  # fmt: skip
        return GroupOut.model_validate(group)


@router.get("/agent-groups/{group_id}")
def get_group(group_id: uuid.UUID, principal: Reader, ctx: Context) -> GroupOut:
    """One group."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        return GroupOut.model_validate(_group(session, group_id))


@router.get("/agent-groups/{group_id}/config")
def get_group_config(group_id: uuid.UUID, principal: Reader, ctx: Context) -> ConfigVersionOut:
    """The group's current layer (version 0 if never set)."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        _group(session, group_id)
        row = configs.latest(session=session, scope=ConfigScope.GROUP, subject_id=group_id)
        out: ConfigVersionOut = ConfigVersionOut.of(ConfigScope.GROUP, group_id, row)
        return out


@router.put("/agent-groups/{group_id}/config")
def set_group_config(
    group_id: uuid.UUID, body: LayerBody, principal: AgentAdmin, ctx: Context, source: Source
) -> ConfigVersionOut:
    """Write the group's next version; its agents get their new effective configuration."""
    layer = _layer(body)
    with ctx.sessions.tenant(principal.tenant_id) as session:
        _group(session, group_id)
        row, changed = configs.set_layer(
            session=session, scope=ConfigScope.GROUP, subject_id=group_id, layer=layer,
            actor=principal.actor,
        )  # fmt: skip
        audit.record(
            session=session, actor=principal.actor, action="agent_group.config.set",
            target=f"agent_group:{group_id}", source=source,
            detail={"version": row.version, "config": msgspec.to_builtins(layer),
                    "agents_changed": len(changed)},
        )  # fmt: skip
        out: ConfigVersionOut = ConfigVersionOut.of(ConfigScope.GROUP, group_id, row)
    ctx.signals.changed(principal.tenant_id, changed)
    return out


@router.get("/agent-groups/{group_id}/config/versions")
def list_group_config_versions(
    group_id: uuid.UUID,
    principal: Reader,
    ctx: Context,
    limit: Limit = 50,
    cursor: CursorParam = None,
) -> ConfigVersionPage:
    """Every version of the group's layer, oldest first."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        _group(session, group_id)
        return _versions_page(session, ConfigScope.GROUP, group_id, limit, cursor)


@router.post("/agent-groups/{group_id}/config/rollback")
def rollback_group_config(
    group_id: uuid.UUID, body: RollbackIn, principal: AgentAdmin, ctx: Context, source: Source
) -> ConfigVersionOut:
    """Restore an earlier version of the group's layer, as a new version."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        _group(session, group_id)
        row, changed = configs.rollback(
            session=session, scope=ConfigScope.GROUP, subject_id=group_id,
            version=body.version, actor=principal.actor,
        )  # fmt: skip
        audit.record(
            session=session, actor=principal.actor, action="agent_group.config.rollback",
            target=f"agent_group:{group_id}", source=source,
            detail={"version": row.version, "restored": body.version,
                    "agents_changed": len(changed)},
        )  # fmt: skip
        out: ConfigVersionOut = ConfigVersionOut.of(ConfigScope.GROUP, group_id, row)
    ctx.signals.changed(principal.tenant_id, changed)
    return out


# -- agents ------------------------------------------------------------------------------------


@router.get("/agents/{agent_id}/config")
def get_agent_config(agent_id: uuid.UUID, principal: Reader, ctx: Context) -> AgentConfigOut:
    """The agent's layer, effective configuration, and desired vs applied version."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        return agent_config_out(session, _agent(session, agent_id))


@router.put("/agents/{agent_id}/config")
def set_agent_config(
    agent_id: uuid.UUID, body: LayerBody, principal: AgentAdmin, ctx: Context, source: Source
) -> AgentConfigOut:
    """Write the agent's next layer version; a changed effective config is pushed to it."""
    layer = _layer(body)
    with ctx.sessions.tenant(principal.tenant_id) as session:
        agent = _agent(session, agent_id)
        row, changed = configs.set_layer(
            session=session, scope=ConfigScope.AGENT, subject_id=agent_id, layer=layer,
            actor=principal.actor,
        )  # fmt: skip
        audit.record(
            session=session, actor=principal.actor, action="agent.config.set",
            target=f"agent:{agent_id}", source=source,
            detail={"version": row.version, "config": msgspec.to_builtins(layer),
                    "desired_version": agent.desired_config_version},
        )  # fmt: skip
        out = agent_config_out(session, agent)
    ctx.signals.changed(principal.tenant_id, changed)
    return out


@router.get("/agents/{agent_id}/config/versions")
def list_agent_config_versions(
    agent_id: uuid.UUID,
    principal: Reader,
    ctx: Context,
    limit: Limit = 50,
    cursor: CursorParam = None,
) -> ConfigVersionPage:
    """Every version of the agent's own layer, oldest first."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        _agent(session, agent_id)
        return _versions_page(session, ConfigScope.AGENT, agent_id, limit, cursor)


@router.post("/agents/{agent_id}/config/rollback")
def rollback_agent_config(
    agent_id: uuid.UUID, body: RollbackIn, principal: AgentAdmin, ctx: Context, source: Source
) -> AgentConfigOut:
    """Restore an earlier version of the agent's layer, as a new version."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        agent = _agent(session, agent_id)
        row, changed = configs.rollback(
            session=session, scope=ConfigScope.AGENT, subject_id=agent_id,
            version=body.version, actor=principal.actor,
        )  # fmt: skip
        audit.record(
            session=session, actor=principal.actor, action="agent.config.rollback",
            target=f"agent:{agent_id}", source=source,
            detail={"version": row.version, "restored": body.version,
                    "desired_version": agent.desired_config_version},
        )  # fmt: skip
        out = agent_config_out(session, agent)
    ctx.signals.changed(principal.tenant_id, changed)
    return out


@router.put("/agents/{agent_id}/group")
def assign_agent_group(
    agent_id: uuid.UUID,
    body: GroupAssignment,
    principal: AgentAdmin,
    ctx: Context,
    source: Source,
) -> AgentConfigOut:
    """Move the agent into a group (or out of any); it inherits that group's layer."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        agent = _agent(session, agent_id)
        group = _group(session, body.group_id) if body.group_id is not None else None
        changed = configs.assign_group(session=session, agent=agent, group=group)
        audit.record(
            session=session, actor=principal.actor, action="agent.group.assign",
            target=f"agent:{agent_id}", source=source,
            detail={"group_id": str(body.group_id) if body.group_id else None},
        )  # fmt: skip
        out = agent_config_out(session, agent)
    ctx.signals.changed(principal.tenant_id, changed)
    return out


__all__ = ["agent_config_out", "router"]
