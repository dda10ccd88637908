"""Fixtures: an embedded server on SQLite and on PostgreSQL, and tenants to populate it.

Every test that takes ``ctx`` (or ``client``) runs once per store. The PostgreSQL store is a
fresh database cloned from a template migrated once per session, reached as the unprivileged
application role, so row-level security is what the tests exercise.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from a2z.agent.config import AgentConfig
from a2z.agent.enroll import enroll
from a2z.records import Batch, encode_batch
from a2z.server.agents import service as agents
from a2z.server.app import build_context, create_app
from a2z.server.auth.keys import create_api_key
from a2z.server.bus.base import Message, events_subject
from a2z.server.config import Settings
from a2z.server.context import ServerContext
from a2z.server.store.engine import open_store
from a2z.server.tenants import service as tenants
from a2z.server.tenants.models import Role
from tests.services import pg_url, scratch_database

PASSWORD = "correct horse battery staple"
APP_ROLE = "a2z_app"


@dataclass
class TenantFixture:
    """A tenant with an owner who can log in and an agent that can stream."""

    id: uuid.UUID
    name: str
    email: str
    agent_id: uuid.UUID
    agent_token: str


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated database to clone per test (migrating each time would be slow)."""
    with scratch_database() as name:
        open_store(pg_url(name), app_role=APP_ROLE).dispose()
        yield name


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'a2z.db'}"
        return
    template = request.getfixturevalue("pg_template")
    with scratch_database(template) as name:
        yield pg_url(name)


@pytest.fixture
def ctx(store_url: str, tmp_path: Path) -> Iterator[ServerContext]:
    settings = Settings(
        data_dir=tmp_path, db_url=store_url, pool_size=2, agent_port=0, cert_recheck_s=0.5
    )
    context = build_context(settings)
    yield context
    context.sessions.engine.dispose()


@pytest.fixture
def client(ctx: ServerContext) -> Iterator[TestClient]:
    with TestClient(create_app(context=ctx)) as c:
        yield c


def message(tenant: TenantFixture, batch: Batch) -> Message:
    """What the agent channel publishes on the bus for ``tenant``'s agent's ``batch``."""
    return Message(
        subject=events_subject(str(tenant.id), str(tenant.agent_id)),
        payload=encode_batch(batch),
        msg_id=f"{tenant.agent_id}:{batch.boot_epoch}:{batch.seq}",
    )


def make_tenant(ctx: ServerContext, name: str) -> TenantFixture:
    with ctx.sessions.system() as session:
        tenant = tenants.create_tenant(session=session, name=name)
    email = f"owner@{name}.test"
    with ctx.sessions.tenant(tenant.id) as session:
        tenants.create_user(session=session, email=email, password=PASSWORD, role=Role.OWNER)
        agent = agents.create(session=session, name=f"{name}-sensor")
        _, token = create_api_key(session=session, role=Role.AGENT, agent_id=agent.id)
    return TenantFixture(tenant.id, name, email, agent.id, token)


@pytest.fixture
def tenant_a(ctx: ServerContext) -> TenantFixture:
    return make_tenant(ctx, "alpha")


@pytest.fixture
def tenant_b(ctx: ServerContext) -> TenantFixture:
    return make_tenant(ctx, "bravo")


def login(client: TestClient, tenant: TenantFixture, email: str | None = None) -> dict[str, str]:
    resp = client.post(
        "/api/v1/auth/login", json={"email": email or tenant.email, "password": PASSWORD}
    )
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


@pytest.fixture
def gateway(client: TestClient) -> str:
    """URL of the running app's agent gateway (mutual TLS, ephemeral port)."""
    port = client.app.state.gateway.port  # type: ignore[attr-defined]
    return f"wss://127.0.0.1:{port}"


def token_for(
    ctx: ServerContext,
    tenant: TenantFixture,
    *,
    uses: int = 1,
    ttl: timedelta = timedelta(minutes=5),
) -> str:
    """A new enrollment token of ``tenant``."""
    with ctx.sessions.tenant(tenant.id) as session:
        _, token = agents.create_enrollment_token(
            session=session, ttl=ttl, uses=uses, created_by="test"
        )
    return token


def enrolled(
    ctx: ServerContext, tenant: TenantFixture, gateway: str, tmp_path: Path, name: str = "sensor-1"
) -> AgentConfig:
    """An agent enrolled the way an operator does it (token + pinned CA), its config returned."""
    return enroll(gateway, token_for(ctx, tenant), ctx.root.pin, tmp_path / name, name)
