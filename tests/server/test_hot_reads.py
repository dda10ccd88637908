"""The hot read path (hot_reads.py) answers exactly what the FastAPI routes answer, and only
requests the routes would answer with a page."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from a2z.records import Batch, Conn, Dns
from a2z.server.agents import service as agents
from a2z.server.context import ServerContext
from a2z.server.events import scores
from a2z.server.events import service as events
from a2z.server.hot_reads import ROUTES, HotReads
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
    [
        EVENTS,
        f"{EVENTS}?limit=3",
        f"{EVENTS}?limit=1000",
        f"{EVENTS}?type=dns",
        f"{EVENTS}?type=conn&since=1700000001&until=1700000003&limit=2",
        f"{EVENTS}?since=2023-11-14T22:13:21Z",
        f"{EVENTS}?orig_h=10.0.0.0/8&resp_p=443",
        f"{EVENTS}?resp_h=192.0.2.9&orig_p=40003",
        f"{EVENTS}?query=h3*",
        f"{EVENTS}?q=example",
        AGENTS,
        f"{AGENTS}?limit=2",
    ],
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
    for base in (f"{EVENTS}?limit=2", f"{EVENTS}?limit=2&type=conn", f"{AGENTS}?limit=2"):
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
        ("?limit=0", 422),
        ("?limit=01", 200),  # the route parses it; we leave such spellings to it
        ("?limit=5000", 422),
        ("?limit=3&limit=4", 200),
        ("?bogus=1", 422),
        ("?cursor=garbage", 400),  # passes the pattern, but not a cursor the API issued
        ("?cursor=", 422),
        ("?type=DNS", 422),  # the route's pattern refuses it
        ("?type=", 422),
        ("?orig_p=0443", 200),  # the route parses it; we leave such spellings to it
        ("?orig_p=70000", 422),
        ("?since=5&until=4", 422),  # both plain, but the route's dependency refuses the pair
        ("?orig_h=10.0.0.300", 422),
        ("?type=dns&type=conn", 200),
        ("?q=x", 422),  # shorter than the route allows
        ("?type=dns&tyep=dns", 422),  # a misspelt filter is not ignored
        ("?type=dns&since=1700000000&limit=2", 200),  # hot after the first parse only
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
    assert _hot_count(ctx) == before + (1 if query.endswith("limit=2") else 0)


# Values of every kind the events route takes, valid and not, in plain and other spellings.
_VALUES = {
    "type": ["dns", "conn", "DNS", "", "d ns", "x" * 33],
    "since": ["1700000001", "1700000001.5", "2023-11-14T22:13:21Z", "2023-13-01", "-5", "1e9"],
    "until": ["1700000003", "2023-11-14T22:13:23+00:00", "0", "99999999999999"],
    "uid": ["Ualpha1", "Ualpha*", "*", "U\x00", "x" * 65],
    "orig_h": ["10.0.0.1", "10.0.0.0/8", "::/0", "10.0.0.0/33", "example", "1"],
    "resp_h": ["192.0.2.9", "192.0.2.0/24", "2001:db8::/32", "192.0.2.9/"],
    "orig_p": ["40003", "0", "040003", "+1", "-1", "65536", " 5", "1.0"],
    "resp_p": ["53", "443", "65535", "", "0x35"],
    "query": ["h3.example", "h*", "h\t", ""],
    "status_code": ["200", "99", "1000"],
    "q": ["example", "x", "EXAMPLE", "50%", "a_b", "y" * 101],
    "limit": ["2", "1000", "1001", "0", "02"],
    "cursor": ["garbage", ""],
    "tyep": ["dns"],
}
_PARAMS = st.lists(
    st.sampled_from(sorted(_VALUES)).flatmap(
        lambda name: st.tuples(st.just(name), st.sampled_from(_VALUES[name]) | st.text(max_size=8))
    ),
    max_size=4,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(params=_PARAMS)
def test_any_query_gets_the_routes_answer(
    client: TestClient,
    ctx: ServerContext,
    tenant_a: TenantFixture,
    hot_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    params: list[tuple[str, str]],
) -> None:
    """Whatever the query, the answer with the hot path is the route's own answer (status and
    body), and the hot path answers only pages."""
    path = EVENTS + "?" + "&".join(f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in params)
    with monkeypatch.context() as routed:
        routed.setattr(HotReads, "_reader", lambda _self, _scope: None)
        by_route = client.get(path, headers=hot_headers)
    before = _hot_count(ctx)
    answer = client.get(path, headers=hot_headers)
    assert (answer.status_code, answer.json()) == (by_route.status_code, by_route.json()), path
    if _hot_count(ctx) > before:
        assert answer.status_code == 200


@pytest.fixture
def hot_headers(client: TestClient, ctx: ServerContext, tenant_a: TenantFixture) -> dict[str, str]:
    """tenant A populated, and a credential the hot path knows."""
    _populate(ctx, tenant_a)
    headers = login(client, tenant_a)
    assert client.get(AGENTS, headers=headers).status_code == 200
    return headers


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
