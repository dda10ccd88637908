"""The agent channel: a WebSocket over which an agent streams record batches and gets acks.

Each binary frame is one wire batch. The server answers with a JSON text frame per batch:
``{"ack": seq, "epoch": boot_epoch}`` once the batch is durable on the bus, or
``{"nack": seq, "error": "...", "retry": true}`` when it could not store it (re-send), or
``{"nack": seq, "error": "..."}`` when it refuses it for good. A bad frame is refused and
counted; the stream goes on. The tenant and agent come from the credential, never from the frame.
"""

from __future__ import annotations

import logging

import msgspec
from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status

from a2z.records import WireError, decode_batch
from a2z.server.auth.principal import Principal
from a2z.server.bus.base import Message, events_subject
from a2z.server.context import ServerContext
from a2z.server.deps import authenticate_bearer
from a2z.server.errors import Unauthenticated
from a2z.server.tenants.models import Role

log = logging.getLogger(__name__)
router = APIRouter()


class Ack(msgspec.Struct, omit_defaults=True):
    """The server's answer to one batch."""

    ack: int | None = None
    nack: int | None = None
    epoch: int | None = None
    error: str | None = None
    retry: bool | None = None  # true: transient, re-send; absent: refused for good


_encode = msgspec.json.Encoder().encode


@router.websocket("/api/v1/agent/channel")
async def agent_channel(websocket: WebSocket) -> None:
    """Authenticate the agent, then ack every durable batch until it disconnects."""
    ctx: ServerContext = websocket.app.state.ctx
    try:
        principal = authenticate_bearer(ctx, websocket.headers.get("authorization"))
    except Unauthenticated:
        principal = None
    if principal is None or principal.role is not Role.AGENT or principal.agent_id is None:
        ctx.metrics.auth_failures.labels("agent").inc()
        # Closing before accept makes the server refuse the HTTP upgrade (403).
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION)
        return
    await websocket.accept()
    try:
        while True:
            frame = await websocket.receive_bytes()
            await websocket.send_text(await _handle_frame(ctx, principal, frame))
    except WebSocketDisconnect:
        return


async def _handle_frame(ctx: ServerContext, principal: Principal, frame: bytes) -> str:
    metrics = ctx.metrics
    try:
        batch = decode_batch(frame)
    except WireError as exc:
        metrics.wire_errors.labels("decode").inc()
        return _encode(Ack(error=str(exc))).decode()
    if batch.agent_id != str(principal.agent_id):
        metrics.wire_errors.labels("agent_mismatch").inc()
        error = "batch agent_id does not match the authenticated agent"
        return _encode(Ack(nack=batch.seq, error=error)).decode()
    metrics.batches.inc()
    subject = events_subject(str(principal.tenant_id), str(principal.agent_id))
    msg_id = f"{principal.agent_id}:{batch.boot_epoch}:{batch.seq}"
    try:
        await ctx.bus.publish(Message(subject=subject, payload=frame, msg_id=msg_id))
    except Exception:
        # Not durable, so no ack: the agent keeps the batch and re-sends it.
        log.exception("publishing batch %s failed", msg_id)
        return _encode(Ack(nack=batch.seq, error="not stored", retry=True)).decode()
    return _encode(Ack(ack=batch.seq, epoch=batch.boot_epoch)).decode()
