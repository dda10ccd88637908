"""Agent configuration: group and agent layers as numbered versions, and each agent's effective
configuration (defaults <- group <- agent), whose version goes up whenever its content changes.

Writers get back the agents whose effective configuration changed; the caller tells the
gateway after the transaction commits, so a push never carries uncommitted state.
"""

from __future__ import annotations

import uuid

import msgspec
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from a2z.records import ConfigLayer, ConfigResult, effective_settings
from a2z.records.control import MAX_REASON_CHARS
from a2z.server.agents.config.models import AgentGroup, ConfigScope, ConfigVersion
from a2z.server.agents.models import Agent
from a2z.server.errors import Conflict, NotFound
from a2z.server.store.pagination import Page, paginate
from a2z.server.store.session import ScopedSession

_layer = msgspec.json.Decoder(ConfigLayer)


def create_group(*, session: ScopedSession, name: str) -> AgentGroup:
    """A new, empty group in the session's tenant."""
    group = AgentGroup(tenant_id=session.tenant_id, name=name)
    session.add(group)
    try:
        session.flush()
    except IntegrityError as exc:  # the whole transaction rolls back with the Conflict
        raise Conflict(f"group {name!r} already exists") from exc
    return group


def list_groups(*, session: ScopedSession, limit: int, cursor: str | None) -> Page[AgentGroup]:
    """The tenant's groups, oldest first."""
    return paginate(
        session,
        select(AgentGroup),
        at=AgentGroup.created_at,
        row_id=AgentGroup.id,
        limit=limit,
        cursor=cursor,
    )


def get_group(*, session: ScopedSession, group_id: uuid.UUID) -> AgentGroup | None:
    """One group of the session's tenant, or None (also for another tenant's group)."""
    return session.get(AgentGroup, (session.tenant_id, group_id))


def latest(
    *, session: ScopedSession, scope: ConfigScope, subject_id: uuid.UUID
) -> ConfigVersion | None:
    """The newest version of a layer, or None if it was never set."""
    return session.scalars(
        select(ConfigVersion)
        .where(ConfigVersion.scope == scope.value, ConfigVersion.subject_id == subject_id)
        .order_by(ConfigVersion.version.desc())
        .limit(1)
    ).first()


def get_version(
    *, session: ScopedSession, scope: ConfigScope, subject_id: uuid.UUID, version: int
) -> ConfigVersion | None:
    """One numbered version of a layer."""
    return session.scalars(
        select(ConfigVersion).where(
            ConfigVersion.scope == scope.value,
            ConfigVersion.subject_id == subject_id,
            ConfigVersion.version == version,
        )
    ).first()


def list_versions(
    *,
    session: ScopedSession,
    scope: ConfigScope,
    subject_id: uuid.UUID,
    limit: int,
    cursor: str | None,
) -> Page[ConfigVersion]:
    """A layer's versions, oldest first."""
    stmt = select(ConfigVersion).where(
        ConfigVersion.scope == scope.value, ConfigVersion.subject_id == subject_id
    )
    return paginate(
        session,
        stmt,
        at=ConfigVersion.created_at,
        row_id=ConfigVersion.id,
        limit=limit,
        cursor=cursor,
    )


def layer_of(row: ConfigVersion | None) -> ConfigLayer | None:
    """The stored layer of a version (validated when it was written)."""
    return _layer.decode(row.body) if row is not None else None


def set_layer(
    *,
    session: ScopedSession,
    scope: ConfigScope,
    subject_id: uuid.UUID,
    layer: ConfigLayer,
    actor: str,
    rolled_back_from: int | None = None,
) -> tuple[ConfigVersion, list[uuid.UUID]]:
    """Write the next version of a layer; returns it and the agents whose effective config moved."""
    number = session.scalar(
        select(func.max(ConfigVersion.version)).where(
            ConfigVersion.scope == scope.value, ConfigVersion.subject_id == subject_id
        )
    )
    row = ConfigVersion(
        tenant_id=session.tenant_id,
        scope=scope.value,
        subject_id=subject_id,
        version=(number or 0) + 1,
        body=msgspec.json.encode(layer).decode(),
        created_by=actor[:64],
        rolled_back_from=rolled_back_from,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent writer took the number; nothing is kept
        raise Conflict("the configuration changed meanwhile; retry") from exc
    if scope is ConfigScope.GROUP:
        members = list(session.scalars(select(Agent).where(Agent.group_id == subject_id)))
    else:
        agent = session.get(Agent, (session.tenant_id, subject_id))
        members = [agent] if agent is not None else []
    return row, refresh(session=session, agents=members)


def rollback(
    *,
    session: ScopedSession,
    scope: ConfigScope,
    subject_id: uuid.UUID,
    version: int,
    actor: str,
) -> tuple[ConfigVersion, list[uuid.UUID]]:
    """A new version carrying the body of an earlier one."""
    old = get_version(session=session, scope=scope, subject_id=subject_id, version=version)
    if old is None:
        raise NotFound(f"no configuration version {version}")
    layer = layer_of(old)
    assert layer is not None
    return set_layer(
        session=session,
        scope=scope,
        subject_id=subject_id,
        layer=layer,
        actor=actor,
        rolled_back_from=version,
    )


def assign_group(
    *, session: ScopedSession, agent: Agent, group: AgentGroup | None
) -> list[uuid.UUID]:
    """Put an agent in a group (or none); returns it if its effective config changed."""
    agent.group_id = group.id if group is not None else None
    return refresh(session=session, agents=[agent])


def refresh(*, session: ScopedSession, agents: list[Agent]) -> list[uuid.UUID]:
    """Recompute each agent's effective config; bump the version of those that changed."""
    changed = []
    for agent in agents:
        group = (
            latest(session=session, scope=ConfigScope.GROUP, subject_id=agent.group_id)
            if agent.group_id is not None
            else None
        )
        own = latest(session=session, scope=ConfigScope.AGENT, subject_id=agent.id)
        body = msgspec.json.encode(effective_settings(layer_of(group), layer_of(own))).decode()
        if body != agent.desired_config:
            agent.desired_config = body
            agent.desired_config_version = (agent.desired_config_version or 0) + 1
            changed.append(agent.id)
    return changed


def record_result(*, session: ScopedSession, agent: Agent, result: ConfigResult) -> None:
    """Note what the agent did with a pushed version."""
    if result.applied:
        agent.config_version = result.version
        if (agent.config_rejected_version or 0) <= result.version:
            agent.config_rejected_version = None
            agent.config_rejected_reason = None
    else:
        agent.config_rejected_version = result.version
        agent.config_rejected_reason = result.reason[:MAX_REASON_CHARS] or "rejected"
