"""Fixtures: an embedded server on a temporary SQLite store, and tenants to populate it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from a2z.server.agents import service as agents
from a2z.server.app import build_context, create_app
from a2z.server.auth.keys import create_api_key
from a2z.server.config import Settings
from a2z.server.context import ServerContext
from a2z.server.tenants import service as tenants
from a2z.server.tenants.models import Role

PASSWORD = "correct horse battery staple"


@dataclass
class TenantFixture:
    """A tenant with an owner who can log in and an agent that can stream."""

    id: uuid.UUID
    email: str
    agent_id: uuid.UUID
    agent_token: str


@pytest.fixture
def ctx(tmp_path: Path) -> ServerContext:
    return build_context(Settings(data_dir=tmp_path))


@pytest.fixture
def client(ctx: ServerContext) -> Iterator[TestClient]:
    with TestClient(create_app(context=ctx)) as c:
        yield c


def make_tenant(ctx: ServerContext, name: str) -> TenantFixture:
    with ctx.sessions.system() as session:
        tenant = tenants.create_tenant(session=session, name=name)
    email = f"owner@{name}.test"
    with ctx.sessions.tenant(tenant.id) as session:
        tenants.create_user(session=session, email=email, password=PASSWORD, role=Role.OWNER)
        agent = agents.create(session=session, name=f"{name}-sensor")
        _, token = create_api_key(session=session, role=Role.AGENT, agent_id=agent.id)
    return TenantFixture(tenant.id, email, agent.id, token)


@pytest.fixture
def tenant_a(ctx: ServerContext) -> TenantFixture:
    return make_tenant(ctx, "alpha")


@pytest.fixture
def tenant_b(ctx: ServerContext) -> TenantFixture:
    return make_tenant(ctx, "bravo")


def login(client: TestClient, tenant: TenantFixture) -> dict[str, str]:
    resp = client.post("/api/v1/auth/login", json={"email": tenant.email, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}
