"""The session factory scopes every ORM query to one tenant and refuses cross-tenant writes."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from a2z.server.agents.models import Agent
from a2z.server.context import ServerContext
from a2z.server.errors import TenantScopeError
from tests.server.conftest import TenantFixture


def test_select_sees_only_the_scoped_tenant(
    ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    with ctx.sessions.tenant(tenant_a.id) as session:
        assert [a.id for a in session.scalars(select(Agent))] == [tenant_a.agent_id]
        assert session.get(Agent, (tenant_b.id, tenant_b.agent_id)) is None


def test_bulk_update_cannot_touch_another_tenant(
    ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    with ctx.sessions.tenant(tenant_a.id) as session:
        session.execute(update(Agent).values(name="renamed"))
    with ctx.sessions.tenant(tenant_b.id) as session:
        assert session.scalars(select(Agent.name)).one() == "bravo-sensor"


def test_query_without_tenant_raises(ctx: ServerContext, tenant_a: TenantFixture) -> None:
    maker = ctx.sessions._make
    with maker() as session, pytest.raises(TenantScopeError):
        session.scalars(select(Agent)).all()


def test_writing_a_row_for_another_tenant_raises(
    ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    with pytest.raises(TenantScopeError), ctx.sessions.tenant(tenant_a.id) as session:
        session.add(Agent(tenant_id=tenant_b.id, name="smuggled"))
    with ctx.sessions.tenant(tenant_b.id) as session:
        assert session.scalars(select(Agent.name)).all() == ["bravo-sensor"]
