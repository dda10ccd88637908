"""The session factory scopes every ORM query to one tenant, refuses cross-tenant writes, and
writes global intel only in a session opened for it."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import delete, insert, select, update

from a2z.server.agents.models import Agent
from a2z.server.context import ServerContext
from a2z.server.errors import TenantScopeError
from a2z.server.intel import service as intel
from a2z.server.intel.models import GlobalIndicator, GlobalWarning
from a2z.server.store.session import OperatorRowsError
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


def test_global_intel_is_changed_only_in_a_session_opened_for_it(
    ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    """Every tenant reads global intel; a tenant session (a bug in any of its queries) cannot
    change it, by unit of work or by statement. Operators' routes open the session for it."""
    indicator = dict(type="domain", value="c2.example", source="feed", confidence=90, version=1)
    attempts = [
        lambda s: (
            s.add(GlobalWarning(kind="domain", value="ok.example", created_by="t")),
            s.flush(),
        ),
        lambda s: s.execute(insert(GlobalIndicator).values(id=uuid.uuid4(), **indicator)),
        lambda s: s.execute(update(GlobalIndicator).values(confidence=1)),
        lambda s: s.execute(delete(GlobalWarning)),
        lambda s: intel.bump(s, intel.GLOBAL),
    ]
    for attempt in attempts:
        with pytest.raises(OperatorRowsError), ctx.sessions.tenant(tenant_a.id) as session:
            attempt(session)
    with ctx.sessions.tenant(tenant_a.id, global_intel=True) as session:
        session.add(GlobalWarning(kind="domain", value="ok.example", created_by="t"))
        intel.bump(session, intel.GLOBAL)
    with ctx.sessions.tenant(tenant_a.id) as session:  # and every tenant session reads it
        assert session.scalars(select(GlobalWarning.value)).all() == ["ok.example"]
        assert intel.GLOBAL.state(session).version == 1
