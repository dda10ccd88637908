"""Audit log route: read-only by construction (there is no write route)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Query

from a2z.server.audit import service as audit
from a2z.server.deps import Auditor, Context
from a2z.server.schemas import CursorParam, Limit, Out

router = APIRouter(prefix="/api/v1", tags=["audit"])


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
    action: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_.]+$")] = None,
) -> AuditPage:
    """The caller's tenant's audit log."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        page = audit.list_page(session=session, limit=limit, cursor=cursor, action=action)
        items = [
            AuditOut(
                id=e.id,
                at=e.at,
                actor=e.actor,
                action=e.action,
                target=e.target,
                source=e.source,
                outcome=e.outcome,
                detail=msgspec.json.decode(e.detail),
            )
            for e in page.items
        ]
    return AuditPage(items=items, next_cursor=page.next_cursor)
