"""Tenant intel routes: the tenant's indicators and warning list, and its intel stats.

Every member reads; admins (owner, admin, operator) import, delete and edit the warning list
(``manage_intel``). Every change is audited and, once committed, signalled to the tenant's
connected agents, which get the delta on their channel (ADR 12).
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from a2z.rules.intel import IndicatorType
from a2z.server.agents.models import Agent
from a2z.server.context import ServerContext
from a2z.server.deps import Context, IntelAdmin, Reader, Source
from a2z.server.errors import InvalidInput
from a2z.server.intel import delivery
from a2z.server.intel import routes as shared
from a2z.server.intel import service as intel
from a2z.server.intel.imports import MAX_IMPORT_BYTES, CsvLayout, FeedFormat, FeedRejected
from a2z.server.intel.imports import ImportRequest as Request_
from a2z.server.intel.schemas import (
    SOURCE_PATTERN,
    ImportIn,
    ImportOut,
    IndicatorOut,
    IndicatorPage,
    SourceDeleted,
    SourceIn,
    StatsOut,
    TenantStatsOut,
    WarningIn,
    WarningOut,
    WarningPage,
)
from a2z.server.schemas import CursorParam, Limit
from a2z.server.store.session import ScopedSession

SOURCE_RE = re.compile(SOURCE_PATTERN)
router = APIRouter(prefix="/api/v1/intel", tags=["intel"])

TypeFilter = Annotated[IndicatorType | None, Query(alias="type", description="indicator type")]
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no control characters (PostgreSQL refuses NUL)
PrefixFilter = Annotated[
    str | None,
    Query(max_length=1024, pattern=_PRINTABLE, description="values starting with this"),
]
SourceFilter = Annotated[
    str | None, Query(max_length=100, pattern=_PRINTABLE, description="one source only")
]


def _agents(session: ScopedSession) -> list[uuid.UUID]:
    return list(session.scalars(select(Agent.id)))


def _notify(ctx: ServerContext, tenant_id: uuid.UUID, agent_ids: list[uuid.UUID]) -> None:
    """After the commit: the tenant's connected agents have a new intel version to fetch."""
    ctx.signals.changed(tenant_id, agent_ids)


def _import(ctx: ServerContext, principal: IntelAdmin, request: Request_, ip: str) -> ImportOut:
    with ctx.sessions.tenant(principal.tenant_id) as session:
        out = shared.import_feed(
            session, intel.TENANT, request, principal=principal, source_ip=ip,
            metrics=ctx.metrics,
        )  # fmt: skip
        agents = _agents(session)
    _notify(ctx, principal.tenant_id, agents)
    return out


@router.post("/indicators/import")
def import_indicators(
    body: ImportIn, principal: IntelAdmin, ctx: Context, source: Source
) -> ImportOut:
    """Import a plain list, a CSV or a STIX 2.1 bundle given in the body. Values that are not
    indicators are counted and listed (first 20); a feed with nothing usable is a 422 problem
    with the counts. Re-importing refreshes ``last_seen`` and changes what differs."""
    return _import(ctx, principal, shared.request_of(body), source)


@router.post("/indicators/upload")
async def upload_indicators(
    request: Request,
    principal: IntelAdmin,
    ctx: Context,
    source: Source,
    feed_source: Annotated[str, Query(alias="source", min_length=1, max_length=100)] = "upload",
    format: FeedFormat = FeedFormat.PLAIN,
    confidence: Annotated[int, Query(ge=0, le=100, description="0-100")] = 50,
    kind: TypeFilter = None,
    csv_layout: CsvLayout = CsvLayout.VALUE,
) -> ImportOut:
    """Import a feed file sent as the raw request body (UTF-8), e.g. ``curl --data-binary
    @feed.csv``; the query says how to read it. Same limits and answers as ``import``."""
    if not SOURCE_RE.fullmatch(feed_source):
        raise InvalidInput(f"source {feed_source!r}: letters, digits and ' ._:/@+-' only")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_IMPORT_BYTES:
            ctx.metrics.intel_import_rejected.labels("too_large").inc()
            raise FeedRejected(f"the feed is larger than {MAX_IMPORT_BYTES} bytes: split it")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        ctx.metrics.intel_import_rejected.labels("unreadable").inc()
        raise FeedRejected(f"the feed is not UTF-8 text: {exc}") from exc
    parsed = Request_(
        text=text, format=format, source=feed_source, confidence=confidence, type=kind,
        csv_layout=csv_layout,
    )  # fmt: skip
    return await run_in_threadpool(_import, ctx, principal, parsed, source)


@router.get("/indicators")
def list_indicators(
    principal: Reader,
    ctx: Context,
    limit: Limit = 50,
    cursor: CursorParam = None,
    kind: TypeFilter = None,
    prefix: PrefixFilter = None,
    source: SourceFilter = None,
) -> IndicatorPage:
    """The tenant's live indicators, oldest first, filtered by type, value prefix, source."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        return shared.list_indicators(
            session, intel.TENANT, limit=limit, cursor=cursor, kind=kind, prefix=prefix,
            source=source,
        )  # fmt: skip


@router.get("/indicators/{indicator_id:uuid}")
def get_indicator(indicator_id: uuid.UUID, principal: Reader, ctx: Context) -> IndicatorOut:
    """One indicator; a deleted one, or another tenant's, is 404."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        return shared.get_indicator(session, intel.TENANT, indicator_id)


@router.delete("/indicators/{indicator_id:uuid}", status_code=204)
def delete_indicator(
    indicator_id: uuid.UUID, principal: IntelAdmin, ctx: Context, source: Source
) -> Response:
    """Delete one indicator; agents drop it with their next delta."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        shared.delete_indicator(
            session, intel.TENANT, indicator_id, principal=principal, source_ip=source
        )
        agents = _agents(session)
    _notify(ctx, principal.tenant_id, agents)
    return Response(status_code=204)


@router.post("/indicators/delete-by-source")
def delete_source(
    body: SourceIn, principal: IntelAdmin, ctx: Context, source: Source
) -> SourceDeleted:
    """Delete every indicator of one source (e.g. a feed you stopped trusting)."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        out = shared.delete_source(
            session, intel.TENANT, body.source, principal=principal, source_ip=source
        )
        agents = _agents(session)
    if out.deleted:
        _notify(ctx, principal.tenant_id, agents)
    return out


@router.get("/warnings")
def list_warnings(
    principal: Reader, ctx: Context, limit: Limit = 50, cursor: CursorParam = None
) -> WarningPage:
    """The tenant's warning list (besides the global one and the built-in benign values)."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        return shared.list_warnings(session, intel.TENANT, limit=limit, cursor=cursor)


@router.post("/warnings", status_code=201)
def add_warning(body: WarningIn, principal: IntelAdmin, ctx: Context, source: Source) -> WarningOut:
    """Mark a value benign: indicators it covers raise no alert (a CIDR, a domain with its
    subdomains, or an exact value)."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        out = shared.add_warning(session, intel.TENANT, body, principal=principal, source_ip=source)
        agents = _agents(session)
    _notify(ctx, principal.tenant_id, agents)
    return out


@router.get("/warnings/{warning_id:uuid}")
def get_warning(warning_id: uuid.UUID, principal: Reader, ctx: Context) -> WarningOut:
    """One warning-list entry."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        return shared.get_warning(session, intel.TENANT, warning_id)


@router.delete("/warnings/{warning_id:uuid}", status_code=204)
def delete_warning(
    warning_id: uuid.UUID, principal: IntelAdmin, ctx: Context, source: Source
) -> Response:
    """Take a value off the warning list."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        shared.delete_warning(
            session, intel.TENANT, warning_id, principal=principal, source_ip=source
        )
        agents = _agents(session)
    _notify(ctx, principal.tenant_id, agents)
    return Response(status_code=204)


@router.get("/stats")
def intel_stats(principal: Reader, ctx: Context) -> TenantStatsOut:
    """Live indicators by type and source, the tenant's intel version, and the version its
    agents report once they match the current set (global plus tenant)."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        found = intel.stats(session, intel.TENANT)
        global_version = intel.GLOBAL.state(session).version
    return TenantStatsOut(
        **StatsOut.of(found).model_dump(),
        global_version=global_version,
        agent_version=delivery.combine(global_version, found.version),
    )
