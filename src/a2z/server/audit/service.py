"""Writing and reading the audit log. There is deliberately no update or delete."""

from __future__ import annotations

import msgspec
from sqlalchemy import select

from a2z.server.audit.models import AuditEvent, SystemAuditEvent
from a2z.server.store.pagination import Page, paginate
from a2z.server.store.session import ScopedSession


def record(
    *,
    session: ScopedSession,
    actor: str,
    action: str,
    target: str = "",
    source: str = "",
    outcome: str = "success",
    detail: dict[str, object] | None = None,
) -> None:
    """Append one entry in the session's tenant, inside the caller's transaction."""
    session.add(
        AuditEvent(
            tenant_id=session.tenant_id,
            actor=actor,
            action=action,
            target=target,
            source=source,
            outcome=outcome,
            detail=msgspec.json.encode(detail or {}).decode(),
        )
    )


def list_page(
    *, session: ScopedSession, limit: int, cursor: str | None, action: str | None = None
) -> Page[AuditEvent]:
    """Oldest first, one page."""
    stmt = select(AuditEvent)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    return paginate(
        session, stmt, at=AuditEvent.at, row_id=AuditEvent.id, limit=limit, cursor=cursor
    )


def record_system(
    *,
    session: ScopedSession,
    actor: str,
    action: str,
    target: str = "",
    source: str = "",
    outcome: str = "success",
    detail: dict[str, object] | None = None,
) -> None:
    """Append one entry to the operators' (tenant-less) audit trail, in a system session."""
    session.add(
        SystemAuditEvent(
            actor=actor[:200],
            action=action,
            target=target[:200],
            source=source[:64],
            outcome=outcome,
            detail=msgspec.json.encode(detail or {}).decode(),
        )
    )


def list_system_page(
    *, session: ScopedSession, limit: int, cursor: str | None, action: str | None = None
) -> Page[SystemAuditEvent]:
    """The operators' audit trail, oldest first, one page (system session)."""
    stmt = select(SystemAuditEvent)
    if action:
        stmt = stmt.where(SystemAuditEvent.action == action)
    return paginate(
        session, stmt, at=SystemAuditEvent.at, row_id=SystemAuditEvent.id, limit=limit,
        cursor=cursor,
    )  # fmt: skip
