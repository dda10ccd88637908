"""Agent registry and enrollment-token operations."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import Row, Table, bindparam, case, delete, func, select, update
from sqlalchemy.orm import InstrumentedAttribute

from a2z.server.agents.models import Agent, EnrollmentToken
from a2z.server.auth import credentials
from a2z.server.pki.models import AgentCert
from a2z.server.store.base import utcnow
from a2z.server.store.pagination import Page, paginate, paginate_rows
from a2z.server.store.session import ScopedSession


def create(*, session: ScopedSession, name: str) -> Agent:
    """Register an agent in the session's tenant."""
    agent = Agent(tenant_id=session.tenant_id, name=name)
    session.add(agent)
    session.flush()
    return agent


# What the API shows of an agent (agents/views.py, AgentOut): the list reads only these.
SHOWN: tuple[InstrumentedAttribute[Any], ...] = (
    Agent.id, Agent.name, Agent.created_at, Agent.last_seen_at, Agent.boot_epoch,
    Agent.last_seq, Agent.last_heartbeat_at, Agent.version, Agent.config_version,
    Agent.intel_version, Agent.intel_rejected_reason, Agent.health, Agent.clone_suspected_at,
    Agent.rules_digest, Agent.rules_rejected_digest, Agent.rules_rejected_reason,
)  # fmt: skip


class ShownAgent(Protocol):
    """An ``Agent`` or a row of ``SHOWN``: what the API's view of an agent is made from."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def name(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def last_seen_at(self) -> datetime | None: ...
    @property
    def boot_epoch(self) -> int | None: ...
    @property
    def last_seq(self) -> int | None: ...
    @property
    def last_heartbeat_at(self) -> datetime | None: ...
    @property
    def version(self) -> str | None: ...
    @property
    def config_version(self) -> int | None: ...
    @property
    def intel_version(self) -> int | None: ...
    @property
    def intel_rejected_reason(self) -> str | None: ...
    @property
    def health(self) -> str | None: ...
    @property
    def clone_suspected_at(self) -> datetime | None: ...
    @property
    def rules_digest(self) -> str | None: ...
    @property
    def rules_rejected_digest(self) -> str | None: ...
    @property
    def rules_rejected_reason(self) -> str | None: ...


def list_page(*, session: ScopedSession, limit: int, cursor: str | None) -> Page[Row[Any]]:
    """The tenant's agents, oldest first: the ``SHOWN`` columns, as rows (no ORM objects)."""
    return paginate_rows(
        session, select(*SHOWN), at=Agent.created_at, row_id=Agent.id, limit=limit, cursor=cursor
    )


def ids(*, session: ScopedSession) -> list[uuid.UUID]:
    """Every agent id of the session's tenant (e.g. to tell them their rules changed)."""
    return list(session.scalars(select(Agent.id)))


def get(*, session: ScopedSession, agent_id: uuid.UUID) -> Agent | None:
    """One agent of the session's tenant, or None (also for another tenant's agent)."""
    return session.get(Agent, (session.tenant_id, agent_id))


def delete_agent(*, session: ScopedSession, agent: Agent) -> None:
    """Remove an agent and revoke its certificates; its stored events stay (they are evidence).

    Its open connections close at their next certificate re-check.
    """
    session.execute(
        update(AgentCert)
        .where(AgentCert.agent_id == agent.id, AgentCert.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    session.execute(delete(Agent).where(Agent.id == agent.id))


_AGENTS = cast(Table, Agent.__table__)
_LAST_SEQ = func.coalesce(_AGENTS.c.last_seq, 0)
# Epochs only grow (the agent's spool hands out one above every epoch it has seen), but a
# spooled batch of an older epoch can be stored after the new epoch's first batches: it must
# not move the agent's progress back.
_NEWER_EPOCH = _AGENTS.c.boot_epoch.is_(None) | (bindparam("epoch") > _AGENTS.c.boot_epoch)
_SAME_EPOCH = _AGENTS.c.boot_epoch == bindparam("epoch")
_RECORD_BATCH = (
    update(_AGENTS)
    .where(_AGENTS.c.tenant_id == bindparam("tenant"), _AGENTS.c.id == bindparam("agent"))
    .values(
        last_seen_at=bindparam("now"),
        boot_epoch=case((_NEWER_EPOCH, bindparam("epoch")), else_=_AGENTS.c.boot_epoch),
        last_seq=case((_NEWER_EPOCH, bindparam("seq")),
                      (_SAME_EPOCH & (bindparam("seq") > _LAST_SEQ), bindparam("seq")),
                      else_=_AGENTS.c.last_seq),
    )
)  # fmt: skip


def record_batch(*, session: ScopedSession, agent_id: uuid.UUID, boot_epoch: int, seq: int) -> None:
    """Note that a batch from this agent was stored: last seen, epoch, highest seq.

    Ingest runs this for every batch, so it is one UPDATE built once (the SET expressions read
    the row's old values): a new epoch restarts the seq, within the same epoch the highest
    stays, a late batch of an older epoch (spooled before a restart) only counts as seen, and
    an agent that is gone is no row to note. It is executed on the session's
    connection, not through the ORM, whose per-statement tenant scoping (``with_loader_criteria``)
    cost ~1 ms of CPU per batch (docs/benchmarks.md, 2026-11-28): the tenant is in the WHERE
    clause explicitly, and row-level security still applies underneath on PostgreSQL.
    """
    record_batches(session=session, keys=[(agent_id, boot_epoch, seq)])


def record_batches(*, session: ScopedSession, keys: Iterable[tuple[uuid.UUID, int, int]]) -> None:
    """``record_batch`` for several ``(agent_id, boot_epoch, seq)`` of the session's tenant.

    Noting an agent's batches one by one in any order ends where noting only its highest
    ``(epoch, seq)`` does (epochs restart the seq, the highest seq of an epoch stays), so each
    agent's row is updated once, agents in id order (one lock order for concurrent writers).
    """
    highest: dict[uuid.UUID, tuple[int, int]] = {}
    for agent_id, boot_epoch, seq in keys:
        highest[agent_id] = max(highest.get(agent_id, (boot_epoch, seq)), (boot_epoch, seq))
    now = utcnow()
    session.connection().execute(
        _RECORD_BATCH,
        [
            {"tenant": session.tenant_id, "agent": agent_id, "now": now, "epoch": epoch,
             "seq": seq}
            for agent_id, (epoch, seq) in sorted(highest.items())
        ],
    )  # fmt: skip


def create_enrollment_token(
    *, session: ScopedSession, ttl: timedelta, uses: int, created_by: str
) -> tuple[EnrollmentToken, str]:
    """A new token; returns the row and the only copy of the secret."""
    row_id = uuid.uuid4()
    token, token_hash = credentials.mint(credentials.ENROLLMENT_TOKEN, session.tenant_id, row_id)
    row = EnrollmentToken(
        tenant_id=session.tenant_id,
        id=row_id,
        secret_hash=token_hash,
        uses_left=uses,
        expires_at=utcnow() + ttl,
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return row, token


def list_enrollment_tokens(
    *, session: ScopedSession, limit: int, cursor: str | None
) -> Page[EnrollmentToken]:
    """The tenant's enrollment tokens, oldest first."""
    return paginate(
        session,
        select(EnrollmentToken),
        at=EnrollmentToken.created_at,
        row_id=EnrollmentToken.id,
        limit=limit,
        cursor=cursor,
    )


def get_enrollment_token(*, session: ScopedSession, token_id: uuid.UUID) -> EnrollmentToken | None:
    """One enrollment token of the session's tenant."""
    return session.get(EnrollmentToken, (session.tenant_id, token_id))
