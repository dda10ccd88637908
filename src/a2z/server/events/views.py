"""Event routes: search the tenant's records, and count them over time or by value."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from a2z.server.deps import Context, Reader
from a2z.server.errors import InvalidInput
from a2z.server.events import search
from a2z.server.events import service as events
from a2z.server.schemas import CursorParam, Out
from a2z.server.store.pagination import BadCursor

router = APIRouter(prefix="/api/v1/events", tags=["events"])

_TIME = r"^[0-9][0-9T:.+Z-]{0,39}$"
_NUMBER = re.compile(r"^[0-9]{1,12}(\.[0-9]{0,9})?$")
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
_ADDRESS = r"^[0-9A-Fa-f:.]{2,45}(/[0-9]{1,3})?$"
_FILTER_HELP = "exact value, or a prefix when it ends in '*'"
_ADDRESS_HELP = "an address or a CIDR block (10.0.0.0/8, 2001:db8::/32)"


def _when(name: str, text: str | None) -> float | None:
    """Epoch seconds or ISO 8601 (a time without an offset is UTC)."""
    if text is None:
        return None
    if _NUMBER.match(text):
        return float(text)
    try:
        stamp = datetime.fromisoformat(text)
        seconds = (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError) as exc:
        raise InvalidInput(f"{name}: not epoch seconds or an ISO 8601 time") from exc
    if not math.isfinite(seconds):
        raise InvalidInput(f"{name}: out of range")
    return seconds


def _text(value: str | None) -> search.TextMatch | None:
    return search.TextMatch.parse(value) if value is not None else None


def _address(value: str | None) -> search.AddressMatch | None:
    return search.AddressMatch.parse(value) if value is not None else None


def event_filter(
    since: Annotated[
        str | None,
        Query(max_length=40, pattern=_TIME, description="from (inclusive): epoch s or ISO 8601"),
    ] = None,
    until: Annotated[
        str | None,
        Query(max_length=40, pattern=_TIME, description="to (exclusive): epoch s or ISO 8601"),
    ] = None,
    type: Annotated[
        str | None, Query(max_length=32, pattern="^[a-z_]+$", description="record type")
    ] = None,
    uid: Annotated[
        str | None, Query(max_length=64, pattern=_PRINTABLE, description=_FILTER_HELP)
    ] = None,
    orig_h: Annotated[
        str | None, Query(max_length=49, pattern=_ADDRESS, description=_ADDRESS_HELP)
    ] = None,
    resp_h: Annotated[
        str | None, Query(max_length=49, pattern=_ADDRESS, description=_ADDRESS_HELP)
    ] = None,
    orig_p: Annotated[int | None, Query(ge=0, le=65535)] = None,
    resp_p: Annotated[int | None, Query(ge=0, le=65535)] = None,
    query: Annotated[
        str | None, Query(max_length=256, pattern=_PRINTABLE, description="dns: " + _FILTER_HELP)
    ] = None,
    host: Annotated[
        str | None, Query(max_length=256, pattern=_PRINTABLE, description="http: " + _FILTER_HELP)
    ] = None,
    uri: Annotated[
        str | None, Query(max_length=1024, pattern=_PRINTABLE, description="http: " + _FILTER_HELP)
    ] = None,
    server_name: Annotated[
        str | None, Query(max_length=256, pattern=_PRINTABLE, description="ssl: " + _FILTER_HELP)
    ] = None,
    user_agent: Annotated[
        str | None, Query(max_length=512, pattern=_PRINTABLE, description="http: " + _FILTER_HELP)
    ] = None,
    status_code: Annotated[int | None, Query(ge=100, le=999)] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=2,
            max_length=100,
            pattern=_PRINTABLE,
            description="case-insensitive substring of query, host, uri, server_name, "
            "user_agent or title",
        ),
    ] = None,
) -> search.EventFilter:
    """The filters every event route shares; all of them must hold."""
    return search.EventFilter(
        since=_when("since", since),
        until=_when("until", until),
        path=type,
        uid=_text(uid),
        orig_h=_address(orig_h),
        resp_h=_address(resp_h),
        orig_p=orig_p,
        resp_p=resp_p,
        query=_text(query),
        host=_text(host),
        uri=_text(uri),
        server_name=_text(server_name),
        user_agent=_text(user_agent),
        status_code=status_code,
        q=q,
    )


Filter = Annotated[search.EventFilter, Depends(event_filter)]


class EventPage(BaseModel):
    """One page of records (Zeek field names), newest first."""

    items: list[dict[str, Any]]
    next_cursor: str | None


class HistogramBucket(Out):
    """Events with ``start <= ts < start + bucket``."""

    start: float
    count: int


class Histogram(Out):
    """Non-empty time buckets, oldest first."""

    bucket: int
    items: list[HistogramBucket]


class TopValue(Out):
    """One value of the field and how many matching events carry it."""

    value: str | int
    count: int


class TopValues(Out):
    """The most frequent values of ``field``, most frequent first."""

    field: search.TopField
    items: list[TopValue]


@router.get("")
def list_events(
    principal: Reader,
    ctx: Context,
    flt: Filter,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: CursorParam = None,
) -> EventPage:
    """The caller's tenant's records matching every filter, newest first, with an opaque
    cursor for the next page (pass the same filters with it)."""
    try:
        after = events.Cursor.decode(cursor) if cursor else None
    except ValueError as exc:
        raise BadCursor("cursor is malformed") from exc
    with ctx.sessions.tenant(principal.tenant_id) as session:
        rows, nxt = events.list_recent(session=session, limit=limit, flt=flt, cursor=after)
        items = [msgspec.json.decode(row.data) for row in rows]
    return EventPage(items=items, next_cursor=nxt.encode() if nxt else None)


@router.get("/histogram")
def event_histogram(
    principal: Reader,
    ctx: Context,
    flt: Filter,
    bucket: Annotated[int, Query(ge=1, le=31 * 86400, description="bucket size, seconds")] = 3600,
) -> Histogram:
    """Counts of the matching records per time bucket, for dashboards."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        rows = search.histogram(session=session, flt=flt, bucket=bucket)
    return Histogram(
        bucket=bucket, items=[HistogramBucket(start=b.start, count=b.count) for b in rows]
    )


@router.get("/top")
def event_top(
    principal: Reader,
    ctx: Context,
    flt: Filter,
    field: search.TopField = search.TopField.TYPE,
    n: Annotated[int, Query(ge=1, le=100, description="how many values")] = 10,
) -> TopValues:
    """The ``n`` most frequent values of ``field`` among the matching records."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        rows = search.top(session=session, flt=flt, field=field, n=n)
    return TopValues(field=field, items=[TopValue(value=t.value, count=t.count) for t in rows])
