"""Event routes: the tenant's recent records."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Query
from pydantic import BaseModel

from a2z.server.deps import Context, Reader
from a2z.server.events import service as events
from a2z.server.schemas import CursorParam
from a2z.server.store.pagination import BadCursor

router = APIRouter(prefix="/api/v1/events", tags=["events"])


class EventPage(BaseModel):
    """One page of records (Zeek field names), newest first."""

    items: list[dict[str, Any]]
    next_cursor: str | None


@router.get("")
def list_events(
    principal: Reader,
    ctx: Context,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    type: Annotated[str | None, Query(max_length=32, pattern="^[a-z_]+$")] = None,
    cursor: CursorParam = None,
) -> EventPage:
    """The caller's tenant's records, newest first, with an opaque cursor for the next page."""
    try:
        after = events.Cursor.decode(cursor) if cursor else None
    except ValueError as exc:
        raise BadCursor("cursor is malformed") from exc
    with ctx.sessions.tenant(principal.tenant_id) as session:
        rows, nxt = events.list_recent(session=session, limit=limit, path=type, cursor=after)
        items = [msgspec.json.decode(row.data) for row in rows]
    return EventPage(items=items, next_cursor=nxt.encode() if nxt else None)
