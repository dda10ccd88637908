"""Audit log routes: read-only by construction (there is no write route).

``/audit`` is the caller's tenant's log; ``/system/audit`` the operators' trail of actions on
what belongs to no tenant (agent releases), for operators only.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Query

from a2z.server.audit import service as audit
from a2z.server.audit.models import AuditEvent, SystemAuditEvent
from a2z.server.deps import Auditor, Context, Operator
from a2z.server.schemas import CursorParam, Limit, Out

router = APIRouter(prefix="/api/v1", tags=["audit"])
ActionFilter = Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_.]+$")]


class AuditOut(Out):
    """One audit entry."""

    id: uuid.UUID
    at: datetime
    actor: str
    action: str
    target: str
    source: str
    outcome: str
    detail: dict[str, Any]


class AuditPage(Out):
    """One page of the audit log, oldest first."""

    items: list[AuditOut]
    next_cursor: str | None


@router.get("/audit")
def list_audit(
    principal: Auditor,
    ctx: Context,
    limit: Limit = 50,
    cursor: CursorParam = None,
    action: ActionFilter = None,
) -> AuditPage:
    """The caller's tenant's audit log."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        page = audit.list_page(session=session, limit=limit, cursor=cursor, action=action)
        items = [_out(e) for e in page.items]
    return AuditPage(items=items, next_cursor=page.next_cursor)


@router.get("/system/audit")
def list_system_audit(
    principal: Operator,
    ctx: Context,
    limit: Limit = 50,
    cursor: CursorParam = None,
    action: ActionFilter = None,
) -> AuditPage:
    """The operators' audit trail: actions on what belongs to no tenant (agent releases)."""
    with ctx.sessions.system() as session:
        page = audit.list_system_page(session=session, limit=limit, cursor=cursor, action=action)
        items = [_out(e) for e in page.items]
    return AuditPage(items=items, next_cursor=page.next_cursor)


def _out(entry: AuditEvent | SystemAuditEvent) -> AuditOut:
    return AuditOut(
        id=entry.id, at=entry.at, actor=entry.actor, action=entry.action, target=entry.target,
        source=entry.source, outcome=entry.outcome, detail=msgspec.json.decode(entry.detail),
    )  # fmt: skip
