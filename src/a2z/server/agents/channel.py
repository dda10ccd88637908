"""The agent channel protocol, independent of transport.

Each binary frame from an agent is one wire batch. The server answers with a JSON text frame
per batch: ``{"ack": seq, "epoch": boot_epoch}`` once the batch is durable on the bus,
``{"nack": seq, "error": "...", "retry": true}`` when it could not store it (re-send),
``{"nack": seq, "error": "...", "retry": true, "retry_after": s}`` when the tenant is over a
limit (flow control: keep the batch and re-send it no sooner than ``s`` seconds later), or
``{"nack": seq, "error": "..."}`` when it refuses it for good. A bad frame is refused and
counted; the stream goes on. The tenant and agent come from the agent's certificate, never
from the frame. Text frames carry control messages (heartbeats), which get no answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import msgspec

from a2z.records import MAX_CONTROL_BYTES, Control, WireError, decode_batch
from a2z.server.agents.models import Agent
from a2z.server.bus.base import Message, events_subject
from a2z.server.context import ServerContext
from a2z.server.pki.x509 import AgentIdentity
from a2z.server.quotas.service import OverLimit
from a2z.server.store.base import utcnow

log = logging.getLogger(__name__)

STAGE = "gateway"


class Ack(msgspec.Struct, omit_defaults=True):
    """The server's answer to one batch."""

    ack: int | None = None
    nack: int | None = None
    epoch: int | None = None
    error: str | None = None
    retry: bool | None = None  # true: transient, re-send; absent: refused for good
    retry_after: float | None = None  # tenant over a limit: seconds before re-sending


_encode = msgspec.json.Encoder().encode


async def handle_frame(ctx: ServerContext, identity: AgentIdentity, frame: bytes) -> str:
    """Validate, publish and answer one batch frame from an authenticated agent."""
    metrics = ctx.metrics
    try:
        batch = decode_batch(frame)
    except WireError as exc:
        metrics.wire_errors.labels("decode").inc()
        metrics.events_dropped.labels(STAGE, "wire").inc()  # its records are unknown: count 1
        return _encode(Ack(error=str(exc))).decode()
    if batch.agent_id != str(identity.agent_id):
        metrics.wire_errors.labels("agent_mismatch").inc()
        error = "batch agent_id does not match the authenticated agent"
        return _encode(Ack(nack=batch.seq, epoch=batch.boot_epoch, error=error)).decode()
    metrics.batches.inc()
    records = len(batch.records)
    metrics.events_in.labels(STAGE).inc(records)
    try:
        await admit(ctx, identity.tenant_id, records, stage=STAGE)
    except OverLimit as exc:
        return _encode(
            Ack(
                nack=batch.seq,
                epoch=batch.boot_epoch,
                error=str(exc),
                retry=True,
                retry_after=round(exc.retry_after_s, 3),
            )
        ).decode()
    subject = events_subject(str(identity.tenant_id), str(identity.agent_id))
    msg_id = f"{identity.agent_id}:{batch.boot_epoch}:{batch.seq}"
    started = time.perf_counter()
    try:
        await ctx.bus.publish(Message(subject=subject, payload=frame, msg_id=msg_id))
    except Exception:
        # Not durable, so no ack: the agent keeps the batch and re-sends it.
        log.exception("publishing batch %s failed", msg_id)
        return _encode(
            Ack(nack=batch.seq, epoch=batch.boot_epoch, error="not stored", retry=True)
        ).decode()
    metrics.publish_seconds.labels(STAGE).observe(time.perf_counter() - started)
    metrics.events_out.labels(STAGE).inc(records)
    return _encode(Ack(ack=batch.seq, epoch=batch.boot_epoch)).decode()


async def admit(ctx: ServerContext, tenant_id: uuid.UUID, records: int, *, stage: str) -> None:
    """The tenant's limits let ``records`` in, or OverLimit; reads the store (in a thread) only
    when the cached limits are due for a reload."""
    if ctx.quotas.stale(tenant_id):
        await asyncio.to_thread(ctx.quotas.admit, tenant_id, records, stage=stage)
    else:
        ctx.quotas.admit(tenant_id, records, stage=stage)


_control = msgspec.json.Decoder(Control)


def handle_control(ctx: ServerContext, identity: AgentIdentity, text: str) -> None:
    """Apply one control message (today: a heartbeat). A bad one is counted and dropped."""
    if len(text) > MAX_CONTROL_BYTES:
        ctx.metrics.wire_errors.labels("control_too_large").inc()
        return
    try:
        beat = _control.decode(text)
    except msgspec.DecodeError:
        ctx.metrics.wire_errors.labels("control").inc()
        return
    with ctx.sessions.tenant(identity.tenant_id) as session:
        agent = session.get(Agent, (identity.tenant_id, identity.agent_id))
        if agent is None:
            return
        agent.last_heartbeat_at = utcnow()
        agent.version = beat.version[:40]
        agent.config_version = beat.config_version
        agent.health = msgspec.json.encode(beat).decode()
    ctx.metrics.heartbeats.inc()
