"""Event routes: search the tenant's records, count them over time or by value, and take
record batches over HTTP from agent-bound keys."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from a2z.records import MAX_FRAME_BYTES, WireError, decode_batch
from a2z.server.agents import channel
from a2z.server.auth.principal import Principal
from a2z.server.bus.base import Message, events_subject
from a2z.server.context import ServerContext
from a2z.server.deps import Context, Ingester, Reader
from a2z.server.errors import Forbidden, InvalidInput, Unavailable
from a2z.server.events import search
from a2z.server.events import service as events
from a2z.server.schemas import CursorParam, Out
from a2z.server.store.pagination import BadCursor

router = APIRouter(prefix="/api/v1/events", tags=["events"])
HTTP_STAGE = "http"

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


async def event_filter(  # async: CPU only, so no thread-pool hop (docs/adr/0016)
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


_encode_page = msgspec.json.Encoder().encode


@router.get("", response_model=EventPage)
def list_events(
    principal: Reader,
    ctx: Context,
    flt: Filter,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: CursorParam = None,
) -> Response:
    """The caller's tenant's records matching every filter, newest first, with an opaque
    cursor for the next page (pass the same filters with it). A conn record the anomaly model
    scored carries ``anomaly_score`` (0..1, higher is more unusual for the tenant)."""
    # Encoded here, as the hot read path encodes it: validating a page of free-form records
    # into EventPage and serialising it again cost ~0.7 ms of CPU per 100-record page for a
    # schema that says nothing about the records (docs/benchmarks.md, API).
    body = events_page(ctx, principal, limit=limit, cursor=cursor, flt=flt)
    return Response(_encode_page(body), media_type="application/json")


def events_page(
    ctx: ServerContext,
    principal: Principal,
    *,
    limit: int,
    cursor: str | None,
    flt: search.EventFilter,
) -> dict[str, Any]:
    """``GET /events``' body as plain values (the route and hot_reads.py both answer it)."""
    try:
        after = events.Cursor.decode(cursor) if cursor else None
    except ValueError as exc:
        raise BadCursor("cursor is malformed") from exc
    with ctx.sessions.tenant(principal.tenant_id) as session:
        search.plan_newest_first(session, flt)
        items, nxt = events.list_page_records(session=session, limit=limit, flt=flt, cursor=after)
    return {"items": items, "next_cursor": nxt.encode() if nxt else None}


class BatchAck(Out):
    """The batch is durable on the bus; it will be stored (once, however often it is sent)."""

    ack: int
    epoch: int


_FRAME_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": "one wire batch: msgpack, zstd-compressed (as on the agent channel)",
    }
}


@router.post("/batches", status_code=202, openapi_extra=_FRAME_BODY)
async def send_batch(request: Request, principal: Ingester, ctx: Context) -> BatchAck:
    """Send one record batch from an agent-bound API key (for senders that cannot hold the
    mutual-TLS channel open). Over the tenant's limits: 429 with Retry-After; re-send it then."""
    if principal.agent_id is None:
        raise Forbidden("only an agent-bound key can send batches")
    length = int(request.headers.get("content-length") or 0)
    if length > MAX_FRAME_BYTES:
        raise InvalidInput(f"a batch is at most {MAX_FRAME_BYTES} bytes")
    frame = await request.body()
    refused = channel.refused_undecoded(
        ctx, principal.tenant_id, principal.agent_id, frame, stage=HTTP_STAGE
    )
    if refused is not None:  # over the limit, known from the header: 429 without decoding
        raise refused[1]
    try:
        batch = decode_batch(frame[: MAX_FRAME_BYTES + 1])
    except WireError as exc:
        ctx.metrics.wire_errors.labels("decode").inc()
        ctx.metrics.events_dropped.labels(HTTP_STAGE, "wire").inc()
        raise InvalidInput(f"not a wire batch: {exc}") from exc
    if batch.agent_id != str(principal.agent_id):
        ctx.metrics.wire_errors.labels("agent_mismatch").inc()
        raise InvalidInput("batch agent_id does not match the key's agent")
    ctx.metrics.events_in.labels(HTTP_STAGE).inc(len(batch.records))
    await channel.admit(ctx, principal.tenant_id, len(batch.records), stage=HTTP_STAGE)
    started = time.perf_counter()
    try:
        await ctx.bus.publish(
            Message(
                subject=events_subject(str(principal.tenant_id), str(principal.agent_id)),
                payload=frame,
                msg_id=f"{principal.agent_id}:{batch.boot_epoch}:{batch.seq}",
            )
        )
    except Exception as exc:  # not durable: the sender keeps the batch and re-sends it
        raise Unavailable("the batch could not be stored now; re-send it") from exc
    ctx.metrics.publish_seconds.labels(HTTP_STAGE).observe(time.perf_counter() - started)
    ctx.metrics.events_out.labels(HTTP_STAGE).inc(len(batch.records))
    return BatchAck(ack=batch.seq, epoch=batch.boot_epoch)


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
