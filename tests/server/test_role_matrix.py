"""BFLA matrix: every role against every route the server publishes; 2xx only where allowed.

The expectations are written out here, independently of the server's policy table, so a
change of either shows up as a failure.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

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
from tests.server.test_channel import frame

HUMANS = {"owner", "admin", "analyst", "viewer", "operator"}
READERS = HUMANS
ADMINS = {"owner", "admin", "operator"}
RULE_TESTERS = ADMINS | {"analyst"}
EVERYONE = HUMANS | {"agent"}

EXPECTED: dict[tuple[str, str], set[str]] = {
    ("get", "/api/v1/auth/me"): EVERYONE,
    ("post", "/api/v1/auth/switch"): set(),  # to a tenant the caller is not in: 404 for all
    ("get", "/api/v1/tenants"): {"operator"},
    ("post", "/api/v1/tenants"): {"operator"},
    ("get", "/api/v1/tenants/{tenant_id}"): {"operator"},
    ("patch", "/api/v1/tenants/{tenant_id}"): {"operator"},
    ("get", "/api/v1/users"): ADMINS,
    ("post", "/api/v1/users"): ADMINS,
    ("get", "/api/v1/users/{user_id}"): ADMINS,
    ("patch", "/api/v1/users/{user_id}"): ADMINS,
    ("delete", "/api/v1/users/{user_id}"): ADMINS,
    ("get", "/api/v1/api-keys"): ADMINS,
    ("post", "/api/v1/api-keys"): ADMINS,
    ("get", "/api/v1/api-keys/{key_id}"): ADMINS,
    ("delete", "/api/v1/api-keys/{key_id}"): ADMINS,
    ("get", "/api/v1/agents"): READERS,
    ("get", "/api/v1/agents/{agent_id}"): READERS,
    ("patch", "/api/v1/agents/{agent_id}"): ADMINS,
    ("delete", "/api/v1/agents/{agent_id}"): ADMINS,
    ("get", "/api/v1/agents/{agent_id}/config"): READERS,
    ("put", "/api/v1/agents/{agent_id}/config"): ADMINS,
    ("get", "/api/v1/agents/{agent_id}/config/versions"): READERS,
    ("post", "/api/v1/agents/{agent_id}/config/rollback"): ADMINS,
    ("put", "/api/v1/agents/{agent_id}/group"): ADMINS,
    ("get", "/api/v1/agents/{agent_id}/commands"): READERS,
    ("post", "/api/v1/agents/{agent_id}/commands"): ADMINS,
    ("get", "/api/v1/agents/{agent_id}/commands/{command_id}"): READERS,
    ("get", "/api/v1/agent-groups"): READERS,
    ("post", "/api/v1/agent-groups"): ADMINS,
    ("get", "/api/v1/agent-groups/{group_id}"): READERS,
    ("get", "/api/v1/agent-groups/{group_id}/config"): READERS,
    ("put", "/api/v1/agent-groups/{group_id}/config"): ADMINS,
    ("get", "/api/v1/agent-groups/{group_id}/config/versions"): READERS,
    ("post", "/api/v1/agent-groups/{group_id}/config/rollback"): ADMINS,
    ("get", "/api/v1/releases"): READERS,
    ("get", "/api/v1/enrollment-tokens"): ADMINS,
    ("post", "/api/v1/enrollment-tokens"): ADMINS,
    ("get", "/api/v1/enrollment-tokens/{token_id}"): ADMINS,
    ("delete", "/api/v1/enrollment-tokens/{token_id}"): ADMINS,
    ("get", "/api/v1/audit"): ADMINS,
    ("get", "/api/v1/system/audit"): {"operator"},  # releases: the operators' trail
    ("get", "/api/v1/events"): READERS,
    ("get", "/api/v1/events/histogram"): READERS,
    ("get", "/api/v1/events/top"): READERS,
    ("post", "/api/v1/events/batches"): {"agent"},  # agent-bound keys send record batches
    ("get", "/api/v1/rules"): READERS,
    ("post", "/api/v1/rules"): ADMINS,
    ("post", "/api/v1/rules/validate"): RULE_TESTERS,
    ("get", "/api/v1/rules/shipped"): READERS,
    ("get", "/api/v1/rules/effective"): READERS,
    ("get", "/api/v1/rules/{rule_id}"): READERS,
    ("put", "/api/v1/rules/{rule_id}"): ADMINS,
    ("patch", "/api/v1/rules/{rule_id}"): ADMINS,
    ("delete", "/api/v1/rules/{rule_id}"): ADMINS,
    ("get", "/api/v1/rules/{rule_id}/versions"): READERS,
    ("post", "/api/v1/rules/{rule_id}/dry-run"): RULE_TESTERS,
    ("post", "/api/v1/intel/indicators/import"): ADMINS,
    ("post", "/api/v1/intel/indicators/upload"): ADMINS,
    ("get", "/api/v1/intel/indicators"): READERS,
    ("get", "/api/v1/intel/indicators/{indicator_id}"): READERS,
    ("delete", "/api/v1/intel/indicators/{indicator_id}"): ADMINS,
    ("post", "/api/v1/intel/indicators/delete-by-source"): ADMINS,
    ("get", "/api/v1/intel/warnings"): READERS,
    ("post", "/api/v1/intel/warnings"): ADMINS,
    ("get", "/api/v1/intel/warnings/{warning_id}"): READERS,
    ("delete", "/api/v1/intel/warnings/{warning_id}"): ADMINS,
    ("get", "/api/v1/intel/stats"): READERS,
    ("post", "/api/v1/intel/global/indicators/import"): {"operator"},
    ("get", "/api/v1/intel/global/indicators"): {"operator"},
    ("delete", "/api/v1/intel/global/indicators/{global_indicator_id}"): {"operator"},
    ("post", "/api/v1/intel/global/indicators/delete-by-source"): {"operator"},
    ("get", "/api/v1/intel/global/warnings"): {"operator"},
    ("post", "/api/v1/intel/global/warnings"): {"operator"},
    ("delete", "/api/v1/intel/global/warnings/{global_warning_id}"): {"operator"},
    ("get", "/api/v1/intel/global/stats"): {"operator"},
}
BATCHES = "/api/v1/events/batches"
# Not in the matrix: login and refresh take no principal; logout ends the caller's own session.
UNAUTHENTICATED = {"/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/auth/logout"}


def headers_for(
    client: TestClient, ctx: ServerContext, tenant: TenantFixture, role: str
) -> dict[str, str]:
    """Credentials of a principal holding ``role`` in ``tenant``."""
    if role == "owner":
        return login(client, tenant)
    if role == "agent":
        return {"Authorization": f"Bearer {tenant.agent_token}"}
    email = f"{role}@{tenant.name}.test"
    with ctx.sessions.tenant(tenant.id) as session:
        tenants.create_user(session=session, email=email, password=PASSWORD, role=Role(role))
    return login(client, tenant, email)


def fresh_objects(
    ctx: ServerContext, tenant: TenantFixture, params: tuple[str, ...]
) -> dict[str, str]:
    """New objects to act on, so one role's DELETE does not spoil the next role's call."""
    out = {}
    if "tenant_id" in params:
        out["tenant_id"] = str(tenant.id)
    # Opened to change global intel too: global objects are made as an operator would.
    with ctx.sessions.tenant(tenant.id, global_intel=True) as session:
        if "agent_id" in params:
            agent = agents.create(session=session, name="matrix")
            out["agent_id"] = str(agent.id)
            # A first config version (for rollback) and a command (for the command routes).
            configs.set_layer(
                session=session, scope=ConfigScope.AGENT, subject_id=agent.id,
                layer=ConfigLayer(batch_size=100), actor="t",
            )  # fmt: skip
            if "command_id" in params:
                command = commands.create(
                    session=session, agent=agent, kind="reload-rules", args={}, actor="t"
                )
                out["command_id"] = str(command.id)
        if "group_id" in params:
            group = configs.create_group(session=session, name=f"g-{uuid.uuid4().hex[:8]}")
            configs.set_layer(
                session=session, scope=ConfigScope.GROUP, subject_id=group.id,
                layer=ConfigLayer(batch_size=100), actor="t",
            )  # fmt: skip
            out["group_id"] = str(group.id)
        if "key_id" in params:
            out["key_id"] = str(create_api_key(session=session, role=Role.VIEWER)[0].id)
        if "user_id" in params:
            email = f"m-{uuid.uuid4().hex[:8]}@x.test"
            user = tenants.create_user(
                session=session, email=email, password=PASSWORD, role=Role.VIEWER
            )
            out["user_id"] = str(user.id)
        if "token_id" in params:
            token, _ = agents.create_enrollment_token(
                session=session, ttl=timedelta(hours=1), uses=1, created_by="t"
            )
            out["token_id"] = str(token.id)
        if "rule_id" in params:
            checked = rules.check(custom_rule())
            rule = rules.create(
                session=session,
                catalog=ctx.rules_catalog,
                checked=checked,
                enabled=True,
                actor="test",
            )
            out["rule_id"] = str(rule.id)
        for param, scope in (("indicator_id", intel.TENANT), ("global_indicator_id", intel.GLOBAL)):
            if param in params:
                value = f"{uuid.uuid4().hex[:12]}.example"
                intel.import_indicators(
                    session, scope, [make(IndicatorType.DOMAIN, value, source="matrix")]
                )
                out[param] = str(intel.list_page(session, scope, limit=1, cursor=None,
                                                 prefix=value).items[0].id)  # fmt: skip
        for param, scope in (("warning_id", intel.TENANT), ("global_warning_id", intel.GLOBAL)):
            if param in params:
                warning = intel.add_warning(
                    session, scope, kind=WarningKind.DOMAIN,
                    value=f"{uuid.uuid4().hex[:12]}.example", note="", actor="t",
                )  # fmt: skip
                assert warning is not None
                out[param] = str(warning.id)
    assert set(out) == set(params), f"teach fresh_objects about {set(params) - set(out)}"
    return out


def test_every_published_route_is_in_the_matrix(client: TestClient) -> None:
    published = {(r.method, r.path) for r in routes(client.get("/openapi.json").json())}
    published = {(m, p) for m, p in published if p not in UNAUTHENTICATED}
    assert published == set(EXPECTED)


@pytest.mark.parametrize("role", sorted(EVERYONE))
def test_role_gets_2xx_only_where_allowed(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, role: str
) -> None:
    spec: dict[str, Any] = client.get("/openapi.json").json()
    headers = headers_for(client, ctx, tenant_a, role)
    for route in routes(spec):
        if route.path in UNAUTHENTICATED:
            continue
        ids = fresh_objects(ctx, tenant_a, route.params)
        overrides = {
            "role": "viewer",
            "email": f"n-{uuid.uuid4().hex[:8]}@x.test",
            "name": f"n-{uuid.uuid4().hex[:8]}",
            "group_id": None,  # PUT /agents/{id}/group: take the agent out of any group
            # A rule text that compiles; an update must keep the rule's id.
            "yaml": custom_rule(ids.get("rule_id")),
            # Intel: a plain list with one valid value; a fresh warning-list value each time.
            "content": "203.0.113.200",
            "source": "matrix",
            "value": f"{uuid.uuid4().hex[:12]}.example",
        }
        body = example(spec, route.body, overrides) if route.body else None
        if route.path == BATCHES:  # a wire frame, not JSON: a valid one of the tenant's agent
            content = frame(str(tenant_a.agent_id), seq=1)
            resp = client.post(route.path, content=content, headers=headers)
        else:
            resp = client.request(route.method, fill(route.path, ids), json=body, headers=headers)
        allowed = role in EXPECTED[(route.method, route.path)]
        if allowed:
            assert 200 <= resp.status_code < 300, (
                role,
                route.method,
                route.path,
                resp.status_code,
                resp.text,
            )
        else:
            assert resp.status_code in (403, 404), (
                role,
                route.method,
                route.path,
                resp.status_code,
                resp.text,
            )
