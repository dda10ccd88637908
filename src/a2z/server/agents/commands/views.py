"""Agent command routes: issue (MANAGE_AGENTS, audited), list and read (READ)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

import msgspec
from fastapi import APIRouter
from pydantic import Field

from a2z.records.control import MAX_RESULT_BYTES
from a2z.server.agents import service as agents
from a2z.server.agents.commands import service as commands
from a2z.server.agents.commands.models import AgentCommand, CommandStatus
from a2z.server.agents.models import Agent
from a2z.server.audit import service as audit
from a2z.server.deps import AgentAdmin, Context, Reader, Source
from a2z.server.errors import InvalidInput, NotFound
from a2z.server.schemas import Body, CursorParam, Limit, Out
from a2z.server.store.session import ScopedSession

router = APIRouter(prefix="/api/v1", tags=["agent commands"])


class CommandKind(enum.StrEnum):
    """What an agent can be told to do (a2z.records.CommandKind)."""

    UPGRADE = "upgrade"  # args: {"version": "X.Y.Z"} — a published release
    RELOAD_RULES = "reload-rules"  # no args
    SET_CONFIG = "set-config"  # no args: re-apply the agent's current effective configuration
    RESTART_CAPTURE = "restart-capture"  # no args: close and reopen the capture socket
    COLLECT_DIAGNOSTICS = "collect-diagnostics"  # args: {"max_bytes": N} (<= 256 KiB)


class CommandIn(Body):
    """A command to issue."""

    kind: CommandKind
    args: dict[str, Any] = Field(default_factory=dict)


class CommandOut(Out):
    """A command and, once answered, its result."""

    id: uuid.UUID
    agent_id: uuid.UUID
    kind: CommandKind
    args: dict[str, Any]
    status: CommandStatus
    created_at: datetime
    created_by: str
    expires_at: datetime
    sent_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] | None
    error: str | None

    @classmethod
    def of(cls, row: AgentCommand) -> CommandOut:
        """Project a row."""
        return cls(
            id=row.id, agent_id=row.agent_id, kind=CommandKind(row.kind),
            args=msgspec.json.decode(row.args), status=CommandStatus(row.status),
            created_at=row.created_at, created_by=row.created_by, expires_at=row.expires_at,
            sent_at=row.sent_at, finished_at=row.finished_at,
            result=msgspec.json.decode(row.result) if row.result is not None else None,
            error=row.error,
        )  # fmt: skip


class CommandPage(Out):
    """One page of commands, oldest first."""

    items: list[CommandOut]
    next_cursor: str | None


def _agent(session: ScopedSession, agent_id: uuid.UUID) -> Agent:
    agent = agents.get(session=session, agent_id=agent_id)
    if agent is None:
        raise NotFound("no such agent")
    return agent


def _args(body: CommandIn, agent: Agent) -> dict[str, Any]:
    """Check a command's arguments; the server fills in what it knows (the config to apply)."""
    args = dict(body.args)
    if body.kind is CommandKind.COLLECT_DIAGNOSTICS:
        limit = args.pop("max_bytes", MAX_RESULT_BYTES)
        if not isinstance(limit, int) or not 1024 <= limit <= MAX_RESULT_BYTES:
            raise InvalidInput(f"max_bytes must be an integer in [1024, {MAX_RESULT_BYTES}]")
        out: dict[str, Any] = {"max_bytes": limit}
    elif body.kind is CommandKind.UPGRADE:
        version = args.pop("version", None)
        if not isinstance(version, str) or not 0 < len(version) <= 40:
            raise InvalidInput("upgrade needs args.version, the release to install")
        out = {"version": version}
    elif body.kind is CommandKind.SET_CONFIG:
        if not agent.desired_config:
            raise InvalidInput("the agent has no configuration set; PUT its config first")
        out = {
            "version": agent.desired_config_version,
            "config": msgspec.json.decode(agent.desired_config),
        }
    else:
        out = {}
    if args:
        raise InvalidInput(f"unknown argument(s) for {body.kind.value}: {', '.join(sorted(args))}")
    return out


@router.post("/agents/{agent_id}/commands", status_code=201)
def issue_command(
    agent_id: uuid.UUID, body: CommandIn, principal: AgentAdmin, ctx: Context, source: Source
) -> CommandOut:
    """Queue a command; a connected agent gets it now, an offline one when it reconnects."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        agent = _agent(session, agent_id)
        row = commands.create(
            session=session, agent=agent, kind=body.kind.value, args=_args(body, agent),
            actor=principal.actor,
        )  # fmt: skip
        audit.record(
            session=session, actor=principal.actor, action="agent.command.issue",
            target=f"command:{row.id}", source=source,
            detail={"agent_id": str(agent_id), "kind": body.kind.value},
        )  # fmt: skip
        out = CommandOut.of(row)
    ctx.signals.changed(principal.tenant_id, [agent_id])
    return out


@router.get("/agents/{agent_id}/commands")
def list_commands(
    agent_id: uuid.UUID,
    principal: Reader,
    ctx: Context,
    limit: Limit = 50,
    cursor: CursorParam = None,
) -> CommandPage:
    """The agent's commands, oldest first."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        _agent(session, agent_id)
        page = commands.list_page(session=session, agent_id=agent_id, limit=limit, cursor=cursor)
        return CommandPage(
            items=[CommandOut.of(r) for r in page.items], next_cursor=page.next_cursor
        )


@router.get("/agents/{agent_id}/commands/{command_id}")
def get_command(
    agent_id: uuid.UUID, command_id: uuid.UUID, principal: Reader, ctx: Context
) -> CommandOut:
    """One command and its result."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        _agent(session, agent_id)
        row = commands.get(session=session, agent_id=agent_id, command_id=command_id)
        if row is None:
            raise NotFound("no such command")
        return CommandOut.of(row)
