"""The hot read path (hot_reads.py) answers exactly what the FastAPI routes answer, and only
requests the routes would answer with a page."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from a2z.records import Batch, Conn, Dns
from a2z.server.agents import service as agents
from a2z.server.context import ServerContext
from a2z.server.events import scores
from a2z.server.events import service as events
from a2z.server.hot_reads import ROUTES
from a2z.server.store.base import utcnow
from tests.server.conftest import TenantFixture, login

EVENTS, AGENTS = "/api/v1/events", "/api/v1/agents"


def _hot_count(ctx: ServerContext) -> float:
    return sum(
        sample.value
        for metric in ctx.metrics.hot_reads.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def _populate(ctx: ServerContext, tenant: TenantFixture) -> None:
    """Events (conn and dns, some conns scored) and agents with every shown field set."""
    records: list[Any] = []
    for i in range(7):
        common = {"ts": 1_700_000_000.0 + i // 2, "uid": f"U{tenant.name}{i}", "orig_p": 40000 + i}
        common |= {"orig_h": "10.0.0.1", "resp_h": "192.0.2.9"}
        if i % 3:
            records.append(Conn(**common, resp_p=443, proto="tcp", conn_state="SF"))
        else:
            records.append(Dns(**common, resp_p=53, proto="udp", trans_id=i, query=f"h{i}.example"))
    batch = Batch(agent_id=str(tenant.agent_id), boot_epoch=1, seq=1, sent_at=0.0, records=records)
    with ctx.sessions.tenant(tenant.id) as session:
        events.store_batch(session=session, agent_id=tenant.agent_id, batch=batch)
        scores.store(session=session, scores=[(f"U{tenant.name}1", 1.0, 0.25)])
        for n in range(3):
            agents.create(session=session, name=f"{tenant.name}-extra-{n}")
        agent = agents.get(session=session, agent_id=tenant.agent_id)
        assert agent is not None
        agent.last_heartbeat_at = agent.last_seen_at = utcnow()
        agent.health = '{"cpu_percent": 12.5, "rss_bytes": 1000}'
        agent.version, agent.config_version, agent.intel_version = "1.2.3", 4, 5
        agent.rules_digest = "0123456789abcdef" * 4
        agent.rules_rejected_reason = "too big"


def _route_then_hot(
    client: TestClient, ctx: ServerContext, tenant: TenantFixture, path: str
) -> tuple[Any, Any]:
    """The same request answered by the route (a new credential: not cached yet) and by the hot
    path (the same credential again), each checked by the hot-read counter."""
    headers = login(client, tenant)
    before = _hot_count(ctx)
    by_route = client.get(path, headers=headers)
    assert _hot_count(ctx) == before
    by_hot = client.get(path, headers=headers)
    assert _hot_count(ctx) == before + 1
    assert by_route.status_code == by_hot.status_code == 200
    assert by_route.headers["content-type"] == by_hot.headers["content-type"]
    return by_route.json(), by_hot.json()


@pytest.mark.parametrize(
    "path",
    [EVENTS, f"{EVENTS}?limit=3", f"{EVENTS}?limit=1000", AGENTS, f"{AGENTS}?limit=2"],
)
def test_hot_read_answers_exactly_what_the_route_answers(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, path: str
) -> None:
    _populate(ctx, tenant_a)
    by_route, by_hot = _route_then_hot(client, ctx, tenant_a, path)
    assert by_hot == by_route
    assert by_hot["items"]


def test_hot_read_follows_cursors_like_the_route(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    _populate(ctx, tenant_a)
    for base in (f"{EVENTS}?limit=2", f"{AGENTS}?limit=2"):
        path, pages = base, 0
        while True:
            by_route, by_hot = _route_then_hot(client, ctx, tenant_a, path)
            assert by_hot == by_route
            pages += 1
            if by_hot["next_cursor"] is None:
                break
            path = f"{base}&cursor={by_hot['next_cursor']}"
        assert pages >= 2


def test_scores_are_joined_to_their_conn_records_only(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    _populate(ctx, tenant_a)
    _populate(ctx, tenant_b)
    with ctx.sessions.tenant(tenant_b.id) as session:  # B scores A's uid: must not show in A
        scores.store(session=session, scores=[(f"U{tenant_a.name}2", 1.0, 0.5)])
    _, page = _route_then_hot(client, ctx, tenant_a, EVENTS)
    scored = {
        item["uid"]: item["anomaly_score"] for item in page["items"] if "anomaly_score" in item
    }
    assert scored == {f"U{tenant_a.name}1": 0.25}
    assert {item["uid"][: len("U" + tenant_a.name)] for item in page["items"]} == {
        "U" + tenant_a.name
    }


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("?type=dns", 200),  # a filter: the route's business
        ("?limit=0", 422),
        ("?limit=01", 200),  # the route parses it; we leave such spellings to it
        ("?limit=5000", 422),
        ("?limit=3&limit=4", 200),
        ("?bogus=1", 422),
        ("?cursor=garbage", 400),  # passes the pattern, but not a cursor the API issued
        ("?cursor=", 422),
    ],
)
def test_requests_the_hot_path_does_not_take_get_the_routes_answer(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, query: str, status: int
) -> None:
    _populate(ctx, tenant_a)
    headers = login(client, tenant_a)
    client.get(AGENTS, headers=headers)  # now the credential is cached
    before = _hot_count(ctx)
    resp = client.get(EVENTS + query, headers=headers)
    assert resp.status_code == status, resp.text
    if status >= 400:
        assert resp.headers["content-type"] == "application/problem+json"
    assert _hot_count(ctx) == before


def test_hot_path_keeps_roles_tenants_and_revocation(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    _populate(ctx, tenant_a)
    _populate(ctx, tenant_b)
    # An agent-bound key may not read: refused by the route the second time too (cached).
    agent_key = {"Authorization": f"Bearer {tenant_a.agent_token}"}
    for _ in range(2):
        assert client.get(AGENTS, headers=agent_key).status_code == 403
    # Each tenant's cached credential sees its own agents only.
    for tenant in (tenant_a, tenant_b):
        _, page = _route_then_hot(client, ctx, tenant, AGENTS)
        assert {a["name"].split("-")[0] for a in page["items"]} == {tenant.name}
    # A logout ends the credential at once, hot path included.
    headers = login(client, tenant_a)
    assert client.get(AGENTS, headers=headers).status_code == 200
    assert client.get(AGENTS, headers=headers).status_code == 200
    assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    assert client.get(AGENTS, headers=headers).status_code == 401


def test_hot_limits_are_the_documented_ones(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path, route in ROUTES.items():
        params = {p["name"]: p for p in spec["paths"][path]["get"]["parameters"]}
        schema = params["limit"]["schema"]
        assert (schema["default"], schema["maximum"]) == (route.default_limit, route.max_limit)
