"""The agent channel protocol, independent of transport.

Each binary frame from an agent is one wire batch. The server answers with a JSON text frame
per batch: ``{"ack": seq, "epoch": boot_epoch}`` once the batch is durable on the bus,
``{"nack": seq, "error": "...", "retry": true}`` when it could not store it (re-send),
``{"nack": seq, "error": "...", "retry": true, "retry_after": s}`` when the tenant is over a
limit (flow control: keep the batch and re-send it no sooner than ``s`` seconds later), or
``{"nack": seq, "error": "..."}`` when it refuses it for good. A bad frame is refused and
counted; the stream goes on. The tenant and agent come from the agent's certificate, never
from the frame. Text frames carry control messages, dispatched by their ``type``: heartbeats,
configuration results, command results and rule-set results. None gets a direct answer;
instead the gateway asks :func:`due` what the agent should be sent (a newer configuration,
pending commands, its tenant's edge rule set when it runs another).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass, field

import msgspec

from a2z.records import (
    AgentSettings,
    BatchHeader,
    Command,
    CommandResult,
    ConfigPush,
    ConfigResult,
    Control,
    Heartbeat,
    IntelPush,
    IntelResult,
    RulesPush,
    RulesResult,
    WireError,
    decode_batch,
    peek_header,
)
from a2z.records.control import MAX_RESULT_FRAME_BYTES
from a2z.server.agents import edge_rules
from a2z.server.agents.commands import service as commands
from a2z.server.agents.config import service as configs
from a2z.server.agents.models import Agent
from a2z.server.audit import service as audit
from a2z.server.bus.base import Message, events_subject
from a2z.server.context import ServerContext
from a2z.server.intel import delivery as intel_delivery
from a2z.server.pki.x509 import AgentIdentity
from a2z.server.quotas.service import OverLimit
from a2z.server.store.base import utcnow
from a2z.server.store.session import ScopedSession

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
    refused = refused_undecoded(ctx, identity.tenant_id, identity.agent_id, frame, stage=STAGE)
    if refused is not None:
        header, exc = refused
        metrics.batches.inc()  # counted as the decoded path counts a refused batch
        return _deferral(header.seq, header.boot_epoch, exc)
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
        return _deferral(batch.seq, batch.boot_epoch, exc)
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


def refused_undecoded(
    ctx: ServerContext, tenant_id: uuid.UUID, agent_id: uuid.UUID, frame: bytes, *, stage: str
) -> tuple[BatchHeader, OverLimit] | None:
    """The header and refusal of a frame its tenant's limits refuse, decided from the frame's
    header alone (ADR 24): a flood's excess costs neither msgpack decoding of its records nor a
    bucket transaction. None unless this process is refusing the tenant, or when the header
    cannot be read, names another agent, or the batch may pass: the frame is then decoded and
    admitted as any other. Counted as a refused batch's records are, plus as refused undecoded.
    """
    if not ctx.quotas.refusing(tenant_id):
        return None
    header = peek_header(frame)
    if header is None or header.agent_id != str(agent_id):
        return None
    try:
        ctx.quotas.refuse_early(tenant_id, header.records, stage=stage)
    except OverLimit as exc:
        ctx.metrics.events_in.labels(stage).inc(header.records)
        ctx.metrics.frames_refused_undecoded.labels(exc.limit).inc()
        return header, exc
    return None


def _deferral(seq: int, epoch: int, exc: OverLimit) -> str:
    """Flow control: keep the batch, re-send it no sooner than ``retry_after`` seconds."""
    return _encode(
        Ack(
            nack=seq,
            epoch=epoch,
            error=str(exc),
            retry=True,
            retry_after=round(exc.retry_after_s, 3),
        )
    ).decode()


async def admit(ctx: ServerContext, tenant_id: uuid.UUID, records: int, *, stage: str) -> None:
    """The tenant's limits let ``records`` in, or OverLimit; touches the store (in a thread) only
    when the cached limits are due for a reload or the rate bucket is shared (PostgreSQL) and
    not known to be short of ``records``."""
    if ctx.quotas.blocking(tenant_id, records):
        await asyncio.to_thread(ctx.quotas.admit, tenant_id, records, stage=stage)
    else:
        ctx.quotas.admit(tenant_id, records, stage=stage)


_control = msgspec.json.Decoder(Control)
_settings = msgspec.json.Decoder(AgentSettings)


@dataclass(frozen=True)
class Due:
    """What an agent should be sent now: its configuration if it runs an older one, and the
    commands it has not answered yet."""

    config: ConfigPush | None = None
    commands: list[Command] = field(default_factory=list)
    rules: RulesPush | None = None  # the tenant's edge rule set, if the agent runs another
    # Threat intel (ADR 12): the combined version the agent should reach, if it is not there,
    # and the version it matches now (the delta's base); refused: its last push was refused.
    intel_target: int | None = None
    intel_base: int = 0
    intel_refused: bool = False


def handle_control(ctx: ServerContext, identity: AgentIdentity, text: str) -> Due | None:
    """Apply one control message; return what the agent is due (None: a bad message, or no
    such agent). A bad message is counted and dropped."""
    # Heartbeats and config results are small; a command result may carry a bundle.
    if len(text) > MAX_RESULT_FRAME_BYTES:
        ctx.metrics.wire_errors.labels("control_too_large").inc()
        return None
    try:
        message = _control.decode(text)
    except msgspec.DecodeError:
        ctx.metrics.wire_errors.labels("control").inc()
        return None
    with ctx.sessions.tenant(identity.tenant_id) as session:
        agent = session.get(Agent, (identity.tenant_id, identity.agent_id))
        if agent is None:
            return None
        actor = f"agent:{identity.agent_id}"
        if isinstance(message, Heartbeat):
            agent.last_heartbeat_at = utcnow()
            agent.version = message.version[:40]
            agent.config_version = message.config_version
            if (agent.config_rejected_version or 0) <= message.config_version:
                # Running that version (or a later one) now, e.g. after a set-config command.
                agent.config_rejected_version = agent.config_rejected_reason = None
            agent.health = msgspec.json.encode(message).decode()
            edge_rules.record_heartbeat(agent=agent, digest=message.rules_digest)
            agent.intel_version = message.intel_version
            ctx.metrics.heartbeats.inc()
        elif isinstance(message, ConfigResult):
            configs.record_result(session=session, agent=agent, result=message)
            ctx.metrics.control_results.labels(
                "config", "applied" if message.applied else "rejected"
            ).inc()
            audit.record(
                session=session, actor=actor,
                action="agent.config.applied" if message.applied else "agent.config.rejected",
                target=actor, outcome="success" if message.applied else "failure",
                detail={"version": message.version, "reason": message.reason[:200]},
            )  # fmt: skip
        elif isinstance(message, RulesResult):
            _rules_result(ctx, session, agent, message)
        elif isinstance(message, IntelResult):
            _intel_result(ctx, session, agent, message)
            due = _due(ctx, session, agent)
            return dataclasses.replace(due, intel_refused=not message.applied)
        else:
            _command_result(ctx, session, agent, message)
        return _due(ctx, session, agent)


def due(ctx: ServerContext, identity: AgentIdentity) -> Due | None:
    """What the agent should be sent now (None if it no longer exists)."""
    with ctx.sessions.tenant(identity.tenant_id) as session:
        agent = session.get(Agent, (identity.tenant_id, identity.agent_id))
        return _due(ctx, session, agent) if agent is not None else None


def mark_sent(ctx: ServerContext, identity: AgentIdentity, command_id: str) -> None:
    """Note that a command went out on the agent's channel."""
    with ctx.sessions.tenant(identity.tenant_id) as session:
        commands.mark_sent(
            session=session, agent_id=identity.agent_id, command_id=uuid.UUID(command_id)
        )


def _due(ctx: ServerContext, session: ScopedSession, agent: Agent) -> Due:
    desired = agent.desired_config_version or 0
    settings = _settings.decode(agent.desired_config) if agent.desired_config else AgentSettings()
    rules = edge_rules.due(
        session=session, agent=agent, settings=settings, catalog=ctx.rules_catalog
    )
    config = None
    if (
        desired > 0
        and agent.desired_config
        and desired != agent.config_version
        and desired != agent.config_rejected_version  # refused: pushing again would not help
    ):
        config = ConfigPush(version=desired, config=settings)
    intel = intel_delivery.current(session)
    applied = agent.intel_version or 0
    return Due(
        config=config,
        commands=commands.pending(session=session, agent_id=agent.id),
        rules=rules,
        intel_target=intel if intel != applied else None,
        intel_base=applied,
    )


def _rules_result(
    ctx: ServerContext, session: ScopedSession, agent: Agent, message: RulesResult
) -> None:
    edge_rules.record_result(agent=agent, result=message)
    ctx.metrics.control_results.labels("rules", "applied" if message.applied else "rejected").inc()
    actor = f"agent:{agent.id}"
    audit.record(
        session=session, actor=actor,
        action="agent.rules.applied" if message.applied else "agent.rules.rejected",
        target=actor, outcome="success" if message.applied else "failure",
        detail={
            "digest": message.digest[:64], "version": message.version, "rules": message.rules,
            "reason": message.reason[:200],
        },
    )  # fmt: skip


def intel_pushes(ctx: ServerContext, identity: AgentIdentity, base: int) -> list[IntelPush]:
    """The intel messages taking the agent from ``base`` to its tenant's current set."""
    with ctx.sessions.tenant(identity.tenant_id) as session:
        return intel_delivery.pushes(session, base)


def _intel_result(
    ctx: ServerContext, session: ScopedSession, agent: Agent, message: IntelResult
) -> None:
    agent.intel_version = message.intel_version
    agent.intel_rejected_reason = None if message.applied else message.reason[:1000]
    outcome = "applied" if message.applied else "rejected"
    ctx.metrics.control_results.labels("intel", outcome).inc()
    if not message.applied:  # applied deltas are routine; a refusal is worth a person's look
        actor = f"agent:{agent.id}"
        audit.record(
            session=session, actor=actor, action="agent.intel.rejected", target=actor,
            outcome="failure",
            detail={"version": message.version, "reason": message.reason[:200]},
        )  # fmt: skip


def _command_result(
    ctx: ServerContext, session: ScopedSession, agent: Agent, message: CommandResult
) -> None:
    row = commands.settle(session=session, agent_id=agent.id, result=message)
    if row is None:  # a re-answer of a settled command, or an id that is not this agent's
        ctx.metrics.control_results.labels("command", "ignored").inc()
        return
    ctx.metrics.control_results.labels("command", row.status).inc()
    audit.record(
        session=session, actor=f"agent:{agent.id}", action="agent.command.result",
        target=f"command:{row.id}", outcome="success" if message.ok else "failure",
        detail={"kind": row.kind, "status": row.status, "error": (row.error or "")[:200]},
    )  # fmt: skip
