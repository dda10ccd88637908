"""REST API: login, problem responses, tenant isolation, pagination."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from a2z.records import Batch, Dns
from a2z.server.context import ServerContext
from a2z.server.events import service as events
from tests.server.conftest import PASSWORD, TenantFixture, login


def store(ctx: ServerContext, tenant: TenantFixture, n: int, seq: int = 1) -> None:
    records = [
        Dns(ts=1000.0 + i, uid=f"D{tenant.id.hex[:6]}-{seq}-{i}", orig_h="10.1.1.1",
            orig_p=5000, resp_h="10.1.1.53", resp_p=53, proto="udp", trans_id=i,
            query=f"q{i}.example")
        for i in range(n)
    ]  # fmt: skip
    batch = Batch(
        agent_id=str(tenant.agent_id), boot_epoch=1, seq=seq, sent_at=0.0, records=records
    )
    with ctx.sessions.tenant(tenant.id) as session:
        events.store_batch(session=session, agent_id=tenant.agent_id, batch=batch)


def test_wrong_password_is_401_problem(client: TestClient, tenant_a: TenantFixture) -> None:
    resp = client.post("/api/v1/auth/login", json={"email": tenant_a.email, "password": "nope"})
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["status"] == 401


def test_unknown_email_is_401_like_wrong_password(client: TestClient) -> None:
    resp = client.post("/api/v1/auth/login", json={"email": "ghost@x.test", "password": PASSWORD})
    assert resp.status_code == 401
    assert resp.json()["detail"] == "wrong email or password"


@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/agents"])
def test_reads_need_a_credential(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Authorization": "Bearer forged"}).status_code == 401


def test_agent_key_cannot_read_the_api(client: TestClient, tenant_a: TenantFixture) -> None:
    headers = {"Authorization": f"Bearer {tenant_a.agent_token}"}
    assert client.get("/api/v1/events", headers=headers).status_code == 403


def test_each_tenant_sees_only_its_events(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    store(ctx, tenant_a, 5)
    store(ctx, tenant_b, 2)
    a = client.get("/api/v1/events", headers=login(client, tenant_a)).json()["items"]
    b = client.get("/api/v1/events", headers=login(client, tenant_b)).json()["items"]
    assert len(a) == 5
    assert len(b) == 2
    assert {e["uid"] for e in a}.isdisjoint({e["uid"] for e in b})


def test_other_tenants_agent_is_404_not_403(
    client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    headers = login(client, tenant_a)
    assert client.get(f"/api/v1/agents/{tenant_a.agent_id}", headers=headers).status_code == 200
    resp = client.get(f"/api/v1/agents/{tenant_b.agent_id}", headers=headers)
    assert resp.status_code == 404
    assert client.get(f"/api/v1/agents/{uuid.uuid4()}", headers=headers).json() == resp.json()
    listed = client.get("/api/v1/agents", headers=headers).json()["items"]
    assert [a["id"] for a in listed] == [str(tenant_a.agent_id)]


def test_cursor_pages_through_every_event_once_newest_first(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    store(ctx, tenant_a, 25, seq=1)
    store(ctx, tenant_a, 25, seq=2)  # same timestamps as seq 1: the cursor must break ties
    headers = login(client, tenant_a)
    seen: list[dict[str, object]] = []
    url = "/api/v1/events?limit=7"
    while url:
        page = client.get(url, headers=headers).json()
        seen += page["items"]
        url = f"/api/v1/events?limit=7&cursor={page['next_cursor']}" if page["next_cursor"] else ""
    assert len(seen) == 50
    assert len({e["uid"] for e in seen}) == 50
    stamps = [e["ts"] for e in seen]
    assert stamps == sorted(stamps, reverse=True)


def test_type_filter(client: TestClient, ctx: ServerContext, tenant_a: TenantFixture) -> None:
    store(ctx, tenant_a, 3)
    headers = login(client, tenant_a)
    assert len(client.get("/api/v1/events?type=dns", headers=headers).json()["items"]) == 3
    assert client.get("/api/v1/events?type=conn", headers=headers).json()["items"] == []


@pytest.mark.parametrize("cursor", ["zzz", "1.0:not-a-uuid:1:1:1", ":" * 4])
def test_malformed_cursor_is_400_problem(
    client: TestClient, tenant_a: TenantFixture, cursor: str
) -> None:
    resp = client.get(f"/api/v1/events?cursor={cursor}", headers=login(client, tenant_a))
    assert resp.status_code == 400
    assert resp.headers["content-type"] == "application/problem+json"


def test_dashboard_page_is_served_with_csp(client: TestClient) -> None:
    resp = client.get("/")
    assert resp.status_code == 200
    assert "A2Z SOC" in resp.text
    assert "default-src 'self'" in resp.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/..%2Fviews.py").status_code == 404
