"""Group commit (ADR 0027): batches that arrive while the ingest writers are busy are stored
in one transaction that takes each batch's tenant in turn; each handler still returns only once
its batch is committed, and a batch the store refuses fails alone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError

from a2z.records import Batch, Conn, Record
from a2z.server.agents import service as agents
from a2z.server.app import build_context
from a2z.server.bus.base import Message, PoisonMessage
from a2z.server.config import Settings
from a2z.server.context import ServerContext
from a2z.server.events import usage
from a2z.server.events.models import Event, StoredUsage
from a2z.server.ingest.worker import IngestWorker
from tests.server.conftest import TenantFixture, make_tenant, message
from tests.services import pg_url, scratch_database

TS = 1_700_000_000.0


def batch(tenant: TenantFixture, seq: int, n: int = 10, uid: str = "C") -> Batch:
    records: list[Record] = [
        Conn(ts=TS + seq + i / 100, uid=f"{uid}{seq}-{i}", orig_h="10.0.0.1", orig_p=40000 + i,
             resp_h="10.0.0.2", resp_p=443, proto="tcp", conn_state="SF")
        for i in range(n)
    ]  # fmt: skip
    return Batch(agent_id=str(tenant.agent_id), boot_epoch=1, seq=seq, sent_at=TS, records=records)


def sample(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value(name) or 0.0


def stored(ctx: ServerContext, tenant: TenantFixture) -> int:
    with ctx.sessions.tenant(tenant.id) as session:
        return session.scalar(select(func.count(Event.idx))) or 0


async def deliver_together(worker: IngestWorker, messages: list[Message]) -> list[object]:
    """Hand the worker every message at once, as the bus does with many in flight."""
    return await asyncio.gather(*(worker.handle(m) for m in messages), return_exceptions=True)


async def test_batches_arriving_together_are_stored_in_one_transaction(
    ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    # One writer: the first batch finds it idle and goes alone; the others arrive while it
    # writes and go in the next transaction together, both tenants' batches interleaved.
    worker = IngestWorker(ctx.sessions, ctx.metrics, writers=1)
    messages = [message(t, batch(t, seq)) for seq in range(1, 6) for t in (tenant_a, tenant_b)]
    messages.append(message(tenant_a, batch(tenant_a, 3)))  # a re-sent copy in the same group
    outcomes = await deliver_together(worker, messages)
    assert outcomes == [None] * len(messages)

    registry = ctx.metrics.registry
    assert sample(registry, "a2z_ingest_group_batches_count") == 2
    assert sample(registry, "a2z_ingest_group_batches_sum") == len(messages)
    assert sample(registry, "a2z_events_stored_total") == 100
    assert sample(registry, "a2z_events_duplicate_total") == 10
    for tenant in (tenant_a, tenant_b):
        assert stored(ctx, tenant) == 50
        with ctx.sessions.tenant(tenant.id) as session:
            assert usage.totals(session=session)[0] == 50  # the copy added no usage
            agent = agents.get(session=session, agent_id=tenant.agent_id)
            assert agent is not None
            assert (agent.boot_epoch, agent.last_seq) == (1, 5)


@pytest.fixture
def pg_ctx(pg_template: str, tmp_path: Path) -> Iterator[ServerContext]:
    with scratch_database(pg_template) as name:
        ctx = build_context(Settings(data_dir=tmp_path, db_url=pg_url(name), pool_size=3))
        yield ctx
        ctx.sessions.engine.dispose()


async def test_a_batch_the_store_refuses_fails_alone(pg_ctx: ServerContext) -> None:
    tenant_a, tenant_b = make_tenant(pg_ctx, "alpha"), make_tenant(pg_ctx, "bravo")
    worker = IngestWorker(pg_ctx.sessions, pg_ctx.metrics, writers=1)
    poison = batch(tenant_b, 2, uid="C\x00")  # PostgreSQL text holds no NUL: refused for good
    messages = [
        message(tenant_a, batch(tenant_a, 1)),
        message(tenant_a, batch(tenant_a, 2)),
        message(tenant_b, poison),
        message(tenant_b, batch(tenant_b, 3)),
    ]
    outcomes = await deliver_together(worker, messages)

    assert outcomes[:2] == [None, None] and outcomes[3] is None
    assert isinstance(outcomes[2], PoisonMessage)  # a ValueError: the bus dead-letters it
    assert f"{tenant_b.agent_id}:1:2" in str(outcomes[2])
    registry = pg_ctx.metrics.registry
    assert sample(registry, "a2z_ingest_group_retried_total") == 1
    assert (
        registry.get_sample_value(
            "a2z_events_dropped_total", {"stage": "ingest", "reason": "poison"}
        )
        == 10
    )
    assert (stored(pg_ctx, tenant_a), stored(pg_ctx, tenant_b)) == (20, 10)


def test_each_turn_runs_in_its_own_tenants_scope(pg_ctx: ServerContext) -> None:
    tenant_a, tenant_b = make_tenant(pg_ctx, "alpha"), make_tenant(pg_ctx, "bravo")
    heard: list[uuid.UUID | None] = []
    pg_ctx.sessions.watch_writes(heard.append)
    with pg_ctx.sessions.tenants_in_turn() as turns:
        session = turns.scope(tenant_a.id)
        session.connection().execute(
            insert(StoredUsage), [{"tenant_id": tenant_a.id, "day": 1, "events": 1, "bytes": 7}]
        )
        session.add(StoredUsage(day=3, events=2, bytes=5))  # pending, filled in as A's at flush
        session = turns.scope(tenant_b.id)
        setting = session.scalar(text("SELECT current_setting('app.tenant_id')"))
        assert setting == str(tenant_b.id)
        assert session.scalars(select(StoredUsage.tenant_id)).all() == []  # A's row: not B's
        assert heard == []  # nothing is announced before the commit
    assert sorted(heard, key=str) == sorted([tenant_a.id, tenant_b.id], key=str)

    # Row-level security follows the turn: in B's turn a row of A is refused.
    with pytest.raises(DBAPIError, match="row-level security"):  # noqa: PT012
        with pg_ctx.sessions.tenants_in_turn() as turns:
            turns.scope(tenant_a.id)
            session = turns.scope(tenant_b.id)
            session.connection().execute(
                insert(StoredUsage),
                [{"tenant_id": tenant_a.id, "day": 2, "events": 1, "bytes": 7}],
            )
    with pg_ctx.sessions.tenant(tenant_a.id) as session:
        assert usage.totals(session=session) == (3, 12)  # the refused turn rolled back
