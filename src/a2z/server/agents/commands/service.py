"""Agent commands: create, list, deliver, settle. Results are capped and kept once (the first
answer wins: an agent that re-answers a redelivered command changes nothing)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import msgspec
from sqlalchemy import select, update

from a2z.records import Command, CommandResult
from a2z.records.control import MAX_REASON_CHARS, MAX_RESULT_BYTES, CommandKind
from a2z.server.agents.commands.models import OPEN_STATUSES, AgentCommand, CommandStatus
from a2z.server.agents.models import Agent
from a2z.server.store.base import utcnow
from a2z.server.store.pagination import Page, paginate
from a2z.server.store.session import ScopedSession

DEFAULT_TTL = timedelta(hours=24)  # an agent offline longer than this never runs the command
MAX_DELIVER = 20  # commands sent to one agent at once; the rest follow as these settle


def create(
    *,
    session: ScopedSession,
    agent: Agent,
    kind: CommandKind,
    args: dict[str, object],
    actor: str,
    ttl: timedelta = DEFAULT_TTL,
) -> AgentCommand:
    """Queue a command for ``agent``."""
    row = AgentCommand(
        tenant_id=session.tenant_id,
        agent_id=agent.id,
        kind=kind,
        args=msgspec.json.encode(args).decode(),
        created_by=actor[:64],
        expires_at=utcnow() + ttl,
    )
    session.add(row)
    session.flush()
    return row


def expire_stale(*, session: ScopedSession, agent_id: uuid.UUID) -> None:
    """Mark unanswered commands past their deadline as expired."""
    session.execute(
        update(AgentCommand)
        .where(
            AgentCommand.agent_id == agent_id,
            AgentCommand.status.in_(OPEN_STATUSES),
            AgentCommand.expires_at < utcnow(),
        )
        .values(status=CommandStatus.EXPIRED.value, finished_at=utcnow())
    )


def list_page(
    *, session: ScopedSession, agent_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[AgentCommand]:
    """An agent's commands, oldest first."""
    expire_stale(session=session, agent_id=agent_id)
    return paginate(
        session,
        select(AgentCommand).where(AgentCommand.agent_id == agent_id),
        at=AgentCommand.created_at,
        row_id=AgentCommand.id,
        limit=limit,
        cursor=cursor,
    )


def get(
    *, session: ScopedSession, agent_id: uuid.UUID, command_id: uuid.UUID
) -> AgentCommand | None:
    """One command of one agent of the session's tenant."""
    row = session.get(AgentCommand, (session.tenant_id, command_id))
    if row is None or row.agent_id != agent_id:
        return None
    expire_stale(session=session, agent_id=agent_id)
    session.refresh(row)
    return row


def pending(*, session: ScopedSession, agent_id: uuid.UUID) -> list[Command]:
    """The agent's unanswered commands, oldest first, as the wire messages to send."""
    expire_stale(session=session, agent_id=agent_id)
    rows = session.scalars(
        select(AgentCommand)
        .where(AgentCommand.agent_id == agent_id, AgentCommand.status.in_(OPEN_STATUSES))
        .order_by(AgentCommand.created_at, AgentCommand.id)
        .limit(MAX_DELIVER)
    )
    return [
        Command(id=str(r.id), kind=r.kind, args=msgspec.json.decode(r.args))  # type: ignore[arg-type]
        for r in rows
    ]


def mark_sent(*, session: ScopedSession, agent_id: uuid.UUID, command_id: uuid.UUID) -> None:
    """Note that the command went out on a channel."""
    session.execute(
        update(AgentCommand)
        .where(
            AgentCommand.id == command_id,
            AgentCommand.agent_id == agent_id,
            AgentCommand.status == CommandStatus.QUEUED.value,
        )
        .values(status=CommandStatus.SENT.value, sent_at=utcnow())
    )


def settle(
    *, session: ScopedSession, agent_id: uuid.UUID, result: CommandResult
) -> AgentCommand | None:
    """Store the agent's answer; returns the row if this answer settled it (None: unknown id,
    another agent's command, or already settled)."""
    try:
        command_id = uuid.UUID(result.id)
    except ValueError:
        return None
    row = session.get(AgentCommand, (session.tenant_id, command_id))
    if row is None or row.agent_id != agent_id or row.status not in OPEN_STATUSES:
        return None
    row.status = (CommandStatus.ACKED if result.ok else CommandStatus.FAILED).value
    row.finished_at = utcnow()
    row.result = cap_result(result.result)
    row.error = result.error[:MAX_REASON_CHARS] or None
    return row


def cap_result(result: dict[str, object]) -> str:
    """The result as JSON, or a note of its size if it is over the cap (the agent caps its own;
    this guards the store against one that does not)."""
    text = msgspec.json.encode(result).decode()
    if len(text) <= MAX_RESULT_BYTES:
        return text
    return msgspec.json.encode({"truncated": True, "bytes": len(text)}).decode()
