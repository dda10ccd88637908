"""Global intel routes (MSSP operators): indicators and a warning list every tenant gets.

Only operators (``manage_tenants``) reach them; anyone else gets 403 on the collection routes
and 404 on an object, exactly as for a missing one. Changes are audited in the operator's
current tenant, in a session opened to change global intel (the only kind the database lets
write it). Agents pick a global change up at their next heartbeat (ADR 12).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from a2z.server.auth.policy import Permission, allows
from a2z.server.auth.principal import Principal
from a2z.server.deps import Authenticated, Context, Operator, Source
from a2z.server.errors import NotFound
from a2z.server.intel import routes as shared
from a2z.server.intel import service as intel
from a2z.server.intel.schemas import (
    ImportIn,
    ImportOut,
    IndicatorPage,
    SourceDeleted,
    SourceIn,
    StatsOut,
    WarningIn,
    WarningOut,
    WarningPage,
)
from a2z.server.intel.views import PrefixFilter, SourceFilter, TypeFilter
from a2z.server.schemas import CursorParam, Limit

router = APIRouter(prefix="/api/v1/intel/global", tags=["intel"])


def _operator_or_404(principal: Authenticated) -> Principal:
    # An object route answers a non-operator as if the object did not exist (no oracle).
    if not allows(principal.role, Permission.MANAGE_TENANTS):
        raise NotFound("no such object")
    return principal


ObjectOperator = Annotated[Principal, Depends(_operator_or_404)]


@router.post("/indicators/import")
def import_global(body: ImportIn, principal: Operator, ctx: Context, source: Source) -> ImportOut:
    """Import indicators every tenant is matched against (body as the tenant import)."""
    with ctx.sessions.tenant(principal.tenant_id, global_intel=True) as session:
        return shared.import_feed(
            session, intel.GLOBAL, shared.request_of(body), principal=principal,
            source_ip=source, metrics=ctx.metrics,
        )  # fmt: skip


@router.get("/indicators")
def list_global(
    principal: Operator,
    ctx: Context,
    limit: Limit = 50,
    cursor: CursorParam = None,
    kind: TypeFilter = None,
    prefix: PrefixFilter = None,
    source: SourceFilter = None,
) -> IndicatorPage:
    """Global indicators, oldest first, filtered by type, value prefix and source."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        return shared.list_indicators(
            session, intel.GLOBAL, limit=limit, cursor=cursor, kind=kind, prefix=prefix,
            source=source,
        )  # fmt: skip


@router.delete("/indicators/{global_indicator_id:uuid}", status_code=204)
def delete_global(
    global_indicator_id: uuid.UUID, principal: ObjectOperator, ctx: Context, source: Source
) -> Response:
    """Delete one global indicator."""
    with ctx.sessions.tenant(principal.tenant_id, global_intel=True) as session:
        try:
            shared.delete_indicator(
                session, intel.GLOBAL, global_indicator_id, principal=principal,
                source_ip=source,
            )  # fmt: skip
        except NotFound as exc:
            raise NotFound("no such object") from exc
    return Response(status_code=204)


@router.post("/indicators/delete-by-source")
def delete_global_source(
    body: SourceIn, principal: Operator, ctx: Context, source: Source
) -> SourceDeleted:
    """Delete every global indicator of one source."""
    with ctx.sessions.tenant(principal.tenant_id, global_intel=True) as session:
        return shared.delete_source(
            session, intel.GLOBAL, body.source, principal=principal, source_ip=source
        )


@router.get("/warnings")
def list_global_warnings(
    principal: Operator, ctx: Context, limit: Limit = 50, cursor: CursorParam = None
) -> WarningPage:
    """The global warning list."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        return shared.list_warnings(session, intel.GLOBAL, limit=limit, cursor=cursor)


@router.post("/warnings", status_code=201)
def add_global_warning(
    body: WarningIn, principal: Operator, ctx: Context, source: Source
) -> WarningOut:
    """Mark a value benign for every tenant."""
    with ctx.sessions.tenant(principal.tenant_id, global_intel=True) as session:
        return shared.add_warning(
            session, intel.GLOBAL, body, principal=principal, source_ip=source
        )


@router.delete("/warnings/{global_warning_id:uuid}", status_code=204)
def delete_global_warning(
    global_warning_id: uuid.UUID, principal: ObjectOperator, ctx: Context, source: Source
) -> Response:
    """Take a value off the global warning list."""
    with ctx.sessions.tenant(principal.tenant_id, global_intel=True) as session:
        try:
            shared.delete_warning(
                session, intel.GLOBAL, global_warning_id, principal=principal,
                source_ip=source,
            )  # fmt: skip
        except NotFound as exc:
            raise NotFound("no such object") from exc
    return Response(status_code=204)


@router.get("/stats")
def global_stats(principal: Operator, ctx: Context) -> StatsOut:
    """Global indicators by type and source, and the global intel version."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        return StatsOut.of(intel.stats(session, intel.GLOBAL))
