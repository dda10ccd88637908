"""BOLA sweep: tenant A's credentials on tenant B's objects, for every route the server publishes.

Every route with an object id answers 404 (never 403) for B's object and changes nothing of
B's; every list route shows nothing of B's. A database snapshot of B's rows is compared
before and after the whole sweep.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import MetaData, select

from a2z.records import ConfigLayer
from a2z.rules.intel import IndicatorType, make
from a2z.server.agents import service as agents
from a2z.server.agents.commands import service as commands
from a2z.server.agents.config import service as configs
from a2z.server.agents.config.models import ConfigScope
from a2z.server.auth.keys import create_api_key
from a2z.server.context import ServerContext
from a2z.server.intel import service as intel
from a2z.server.intel.models import WarningKind
from a2z.server.rules import service as rules
from a2z.server.tenants import service as tenants
from a2z.server.tenants.models import Role
from tests.server.conftest import PASSWORD, TenantFixture, login
from tests.server.openapi_walk import example, fill, routes
from tests.server.rule_texts import custom_rule

# Routes without object ids whose subject is the caller itself, not a tenant's objects.
SELF_ROUTES = {
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
    "/api/v1/auth/logout",
    "/api/v1/auth/me",
}


HOT_PAGES = ("/api/v1/events", "/api/v1/agents")  # answered from the page cache


def _page_hits(ctx: ServerContext) -> float:
    counter = ctx.metrics.page_cache_hits
    return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))


def objects_of(ctx: ServerContext, tenant: TenantFixture) -> dict[str, str]:
    """One object of each kind in ``tenant``, by the path parameter that names it."""
    # Opened to change global intel too: the seed makes global objects as an operator would.
    with ctx.sessions.tenant(tenant.id, global_intel=True) as session:
        key, _ = create_api_key(session=session, role=Role.VIEWER, name="sweep")
        user = tenants.create_user(
            session=session, email=f"viewer@{tenant.name}.test", password=PASSWORD, role=Role.VIEWER
        )
        token, _ = agents.create_enrollment_token(
            session=session, ttl=__import__("datetime").timedelta(hours=1), uses=1, created_by="t"
        )
        agent = agents.get(session=session, agent_id=tenant.agent_id)
        assert agent is not None
        group = configs.create_group(session=session, name="sweep")
        for scope, subject in ((ConfigScope.GROUP, group.id), (ConfigScope.AGENT, agent.id)):
            configs.set_layer(
                session=session, scope=scope, subject_id=subject,
                layer=ConfigLayer(bpf="tcp"), actor="t",
            )  # fmt: skip
        configs.assign_group(session=session, agent=agent, group=group)
        command = commands.create(
            session=session, agent=agent, kind="reload-rules", args={}, actor="t"
        )
        rule = rules.create(
            session=session,
            catalog=ctx.rules_catalog,
            checked=rules.check(custom_rule()),
            enabled=True,
            actor="t",
        )
        value = f"{tenant.name}-secret.example"
        intel.import_indicators(
            session, intel.TENANT, [make(IndicatorType.DOMAIN, value, source=f"{tenant.name}-feed")]
        )
        indicator = intel.list_page(session, intel.TENANT, limit=1, cursor=None).items[0]
        warning = intel.add_warning(
            session, intel.TENANT, kind=WarningKind.DOMAIN, value=f"{tenant.name}-ok.example",
            note="", actor="t",
        )  # fmt: skip
        assert warning is not None
        # Global objects belong to no tenant: an owner (not an operator) gets 404 on them.
        intel.import_indicators(
            session, intel.GLOBAL, [make(IndicatorType.DOMAIN, f"g-{value}", source="mssp")]
        )
        global_indicator = intel.list_page(
            session, intel.GLOBAL, limit=1, cursor=None, prefix=f"g-{value}"
        ).items[0]
        global_warning = intel.add_warning(
            session, intel.GLOBAL, kind=WarningKind.DOMAIN, value=f"g-{tenant.name}-ok.example",
            note="", actor="t",
        )  # fmt: skip
        assert global_warning is not None
    return {
        "indicator_id": str(indicator.id),
        "warning_id": str(warning.id),
        "global_indicator_id": str(global_indicator.id),
        "global_warning_id": str(global_warning.id),
        "tenant_id": str(tenant.id),
        "rule_id": str(rule.id),
        "agent_id": str(tenant.agent_id),
        "group_id": str(group.id),
        "command_id": str(command.id),
        "key_id": str(key.id),
        "user_id": str(user.id),
        "token_id": str(token.id),
    }


def snapshot(ctx: ServerContext, tenant_id: uuid.UUID) -> dict[str, str]:
    """A digest of every row of the tenant, per table (Core query, explicit tenant filter)."""
    meta = MetaData()
    meta.reflect(ctx.sessions.engine)
    out = {}
    with ctx.sessions.tenant(tenant_id) as session:
        for name, table in sorted(meta.tables.items()):
            if "tenant_id" not in table.c:
                continue
            stmt = select(table).where(table.c.tenant_id == tenant_id)
            rows = session.execute(stmt.order_by(*table.primary_key.columns)).all()
            out[name] = hashlib.sha256(repr(rows).encode()).hexdigest()
    return out


def test_tenant_a_cannot_reach_tenant_b(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    spec: dict[str, Any] = client.get("/openapi.json").json()
    a_ids, b_ids = objects_of(ctx, tenant_a), objects_of(ctx, tenant_b)
    b_secrets = set(b_ids.values()) | {str(tenant_b.id), tenant_b.name, tenant_b.email}
    # B's hot pages sit in the page cache before A probes (ADR 0022): A must get its own.
    b_headers = login(client, tenant_b)
    for path in HOT_PAGES:
        for _ in range(3):  # the route, the hot path's render, a hit
            assert client.get(path, headers=b_headers).status_code == 200
    hits = _page_hits(ctx)
    headers = login(client, tenant_a)
    before = snapshot(ctx, tenant_b.id)
    swept = 0
    for route in routes(spec):
        if route.path in SELF_ROUTES:
            continue
        overrides = {
            "role": "viewer",
            "tenant_id": str(tenant_b.id),
            "email": f"new-{uuid.uuid4().hex[:8]}@alpha.test",
            "name": f"sweep-{uuid.uuid4().hex[:8]}",
            "yaml": custom_rule(),  # compiles: a create lands in A, never 422
            "content": "203.0.113.201",  # an intel import that lands in A
            "source": "sweep",
            "value": f"sweep-{uuid.uuid4().hex[:8]}.example",
        }
        body = example(spec, route.body, overrides) if route.body else None
        if route.params:
            unknown = set(route.params) - b_ids.keys()
            assert not unknown, f"{route.path}: teach the sweep about {unknown}"
            resp = client.request(route.method, fill(route.path, b_ids), json=body, headers=headers)
            assert resp.status_code == 404, (route, resp.status_code, resp.text)
            # Identical to a missing object: no oracle.
            missing = {p: str(uuid.uuid4()) for p in route.params}
            twin = client.request(
                route.method, fill(route.path, missing), json=body, headers=headers
            )
            assert (twin.status_code, twin.json()) == (resp.status_code, resp.json()), route
        else:
            resp = client.request(route.method, route.path, json=body, headers=headers)
            # Own-tenant lists succeed; creates land in A; operator-only routes are 403 for an owner;
            # switching to a tenant one is not a member of is 404.
            assert resp.status_code in (200, 201, 403, 404, 409), (
                route,
                resp.status_code,
                resp.text,
            )
        leaked = [s for s in b_secrets if s in resp.text]
        assert not leaked, (route, leaked)
        swept += 1
    assert swept >= 20
    # A's own hot pages, now from the cache as well, still show nothing of B's.
    for path in HOT_PAGES:
        for _ in range(2):
            resp = client.get(path, headers=headers)
            assert resp.status_code == 200
            leaked = [s for s in b_secrets if s in resp.text]
            assert not leaked, (path, leaked)
    assert _page_hits(ctx) > hits  # the sweep did meet the cache
    assert snapshot(ctx, tenant_b.id) == before
    # And A's own objects are reachable with the same routes (the sweep is not vacuous).
    assert client.get(fill("/api/v1/agents/{agent_id}", a_ids), headers=headers).status_code == 200
    assert client.get(fill("/api/v1/users/{user_id}", a_ids), headers=headers).status_code == 200
    assert client.get(fill("/api/v1/rules/{rule_id}", a_ids), headers=headers).status_code == 200
    intel_url = "/api/v1/intel/indicators/{indicator_id}"
    assert client.get(fill(intel_url, a_ids), headers=headers).status_code == 200
    listed = client.get("/api/v1/intel/indicators", headers=headers).json()["items"]
    assert {i["value"] for i in listed} >= {"alpha-secret.example"}
    assert "bravo" not in repr(listed)
