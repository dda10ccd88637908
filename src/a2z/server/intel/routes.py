"""What the tenant and the global intel routes do alike, given a session and a scope.

Each function runs inside the caller's transaction, audits the change in the caller's tenant,
and raises the API's typed errors.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from a2z.rules.intel import IndicatorType
from a2z.server.audit import service as audit
from a2z.server.auth.principal import Principal
from a2z.server.errors import Conflict, InvalidInput, NotFound
from a2z.server.intel import service as intel
from a2z.server.intel.imports import ImportRequest, parse
from a2z.server.intel.schemas import (
    ImportIn,
    ImportOut,
    IndicatorOut,
    IndicatorPage,
    SourceDeleted,
    WarningIn,
    WarningOut,
    WarningPage,
)
from a2z.server.metrics import ServerMetrics
from a2z.server.store.session import ScopedSession

MAX_WARNINGS = 5_000  # per owner: agents get global plus tenant lists whole (IntelWarnings cap)

Scope = intel.Scope[Any, Any]


def _action(scope: Scope, verb: str) -> str:
    return f"intel.global.{verb}" if scope.is_global else f"intel.{verb}"


def request_of(body: ImportIn) -> ImportRequest:
    """The import's parse request."""
    return ImportRequest(
        text=body.content, format=body.format, source=body.source, confidence=body.confidence,
        expires_at=body.expires_at, type=body.type, csv_layout=body.csv_layout,
    )  # fmt: skip


def import_feed(
    session: ScopedSession, scope: Scope, request: ImportRequest, *, principal: Principal,
    source_ip: str, metrics: ServerMetrics,
) -> ImportOut:  # fmt: skip
    """Parse and store a feed; audit it with its counts."""
    parsed = parse(request, metrics)
    counts = intel.import_indicators(session, scope, parsed.indicators)
    if counts.too_long:
        metrics.intel_import_rejected.labels("too_long").inc(counts.too_long)
    out = ImportOut.of(parsed, counts)
    audit.record(
        session=session, actor=principal.actor, action=_action(scope, "import"),
        target=f"source:{request.source}", source=source_ip,
        detail={
            "format": request.format.value, "added": out.added, "updated": out.updated,
            "rejected": out.rejected, "version": out.version,
        },
    )  # fmt: skip
    return out


def list_indicators(
    session: ScopedSession, scope: Scope, *, limit: int, cursor: str | None,
    kind: IndicatorType | None, prefix: str | None, source: str | None,
) -> IndicatorPage:  # fmt: skip
    """One page of live indicators."""
    page = intel.list_page(
        session, scope, limit=limit, cursor=cursor, kind=kind, prefix=prefix, source=source
    )
    return IndicatorPage(
        items=[IndicatorOut.of(r) for r in page.items], next_cursor=page.next_cursor
    )


def get_indicator(session: ScopedSession, scope: Scope, indicator_id: uuid.UUID) -> IndicatorOut:
    """One live indicator; 404 if deleted, missing, or another tenant's."""
    row = intel.get(session, scope, indicator_id)
    if row is None:
        raise NotFound("no such indicator")
    return IndicatorOut.of(row)


def delete_indicator(
    session: ScopedSession, scope: Scope, indicator_id: uuid.UUID, *, principal: Principal,
    source_ip: str,
) -> None:  # fmt: skip
    """Delete one indicator and audit it."""
    row = intel.get(session, scope, indicator_id)
    if row is None:
        raise NotFound("no such indicator")
    version = intel.remove(session, scope, row)
    audit.record(
        session=session, actor=principal.actor, action=_action(scope, "delete"),
        target=f"indicator:{indicator_id}", source=source_ip,
        detail={"type": row.type, "value": row.value[:200], "source": row.source,
                "version": version},
    )  # fmt: skip


def delete_source(
    session: ScopedSession, scope: Scope, source: str, *, principal: Principal, source_ip: str
) -> SourceDeleted:
    """Delete every indicator of a source and audit it."""
    deleted, version = intel.remove_source(session, scope, source)
    audit.record(
        session=session, actor=principal.actor, action=_action(scope, "delete_source"),
        target=f"source:{source}", source=source_ip,
        detail={"deleted": deleted, "version": version},
    )  # fmt: skip
    return SourceDeleted(deleted=deleted, version=version)


def add_warning(
    session: ScopedSession, scope: Scope, body: WarningIn, *, principal: Principal,
    source_ip: str,
) -> WarningOut:  # fmt: skip
    """Add a warning-list entry (409 if already listed) and audit it."""
    count = session.scalar(select(func.count()).select_from(scope.warnings)) or 0
    if count >= MAX_WARNINGS:
        raise InvalidInput(f"the warning list holds its maximum of {MAX_WARNINGS} entries")
    try:
        row = intel.add_warning(
            session, scope, kind=body.kind, value=body.value, note=body.note,
            actor=principal.actor,
        )  # fmt: skip
    except intel.InvalidWarning as exc:
        raise InvalidInput(str(exc)) from exc
    if row is None:
        raise Conflict("that value is already on the warning list")
    audit.record(
        session=session, actor=principal.actor, action=_action(scope, "warning.add"),
        target=f"warning:{row.id}", source=source_ip,
        detail={"kind": row.kind, "value": row.value[:200]},
    )  # fmt: skip
    return WarningOut.of(row)


def list_warnings(
    session: ScopedSession, scope: Scope, *, limit: int, cursor: str | None
) -> WarningPage:
    """One page of the warning list."""
    page = intel.list_warnings(session, scope, limit=limit, cursor=cursor)
    return WarningPage(items=[WarningOut.of(r) for r in page.items], next_cursor=page.next_cursor)


def get_warning(session: ScopedSession, scope: Scope, warning_id: uuid.UUID) -> WarningOut:
    """One warning-list entry; 404 if missing or another tenant's."""
    row = intel.get_warning(session, scope, warning_id)
    if row is None:
        raise NotFound("no such warning-list entry")
    return WarningOut.of(row)


def delete_warning(
    session: ScopedSession, scope: Scope, warning_id: uuid.UUID, *, principal: Principal,
    source_ip: str,
) -> None:  # fmt: skip
    """Delete a warning-list entry and audit it."""
    row = intel.get_warning(session, scope, warning_id)
    if row is None:
        raise NotFound("no such warning-list entry")
    intel.remove_warning(session, scope, row)
    audit.record(
        session=session, actor=principal.actor, action=_action(scope, "warning.delete"),
        target=f"warning:{warning_id}", source=source_ip,
        detail={"kind": row.kind, "value": row.value[:200]},
    )  # fmt: skip
