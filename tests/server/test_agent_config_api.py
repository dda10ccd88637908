"""Agent configuration through the API: groups, layers, versions, rollback, the effective
configuration and its version, validation (422), roles and the audit log."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from a2z.records import AgentSettings, ConfigLayer, effective_settings
from a2z.server.audit.models import AuditEvent
from a2z.server.context import ServerContext
from tests.server.conftest import TenantFixture, login
from tests.server.test_role_matrix import headers_for


def test_effective_config_is_defaults_then_group_then_agent() -> None:
    group = ConfigLayer(bpf="tcp", batch_size=100, protocols=["dns"])
    agent = ConfigLayer(batch_size=50)
    merged = effective_settings(group, agent)
    assert merged.bpf == "tcp"  # from the group
    assert merged.batch_size == 50  # the agent's layer wins
    assert merged.protocols == ["dns"]
    assert merged.spool_max_bytes == AgentSettings().spool_max_bytes  # a default
    assert effective_settings(ConfigLayer(bpf="tcp"), ConfigLayer(bpf="")).bpf == ""  # explicit


def test_group_and_agent_layers_version_and_roll_back(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    headers = login(client, tenant_a)
    agent_url = f"/api/v1/agents/{tenant_a.agent_id}"
    fresh = client.get(f"{agent_url}/config", headers=headers).json()
    assert fresh["desired_version"] == 0
    assert fresh["layer"]["version"] == 0
    assert fresh["effective"]["batch_size"] == 500

    group = client.post("/api/v1/agent-groups", json={"name": "edge"}, headers=headers).json()
    assert (
        client.post("/api/v1/agent-groups", json={"name": "edge"}, headers=headers).status_code
        == 409
    )
    group_url = f"/api/v1/agent-groups/{group['id']}"
    v1 = client.put(f"{group_url}/config", json={"bpf": "tcp", "batch_size": 100}, headers=headers)
    assert v1.status_code == 200, v1.text
    assert v1.json()["version"] == 1
    # Not in the group yet: its effective config did not move.
    assert client.get(f"{agent_url}/config", headers=headers).json()["desired_version"] == 0

    joined = client.put(f"{agent_url}/group", json={"group_id": group["id"]}, headers=headers)
    assert joined.status_code == 200, joined.text
    assert joined.json()["desired_version"] == 1
    assert joined.json()["effective"]["bpf"] == "tcp"

    own = client.put(f"{agent_url}/config", json={"batch_size": 50}, headers=headers).json()
    assert own["desired_version"] == 2
    assert (own["effective"]["bpf"], own["effective"]["batch_size"]) == ("tcp", 50)
    assert own["applied_version"] is None and own["in_sync"] is False

    v2 = client.put(f"{group_url}/config", json={"bpf": "udp"}, headers=headers).json()
    assert v2["version"] == 2
    after: dict[str, Any] = client.get(f"{agent_url}/config", headers=headers).json()
    assert after["desired_version"] == 3
    assert (after["effective"]["bpf"], after["effective"]["batch_size"]) == ("udp", 50)

    # The same body again changes nothing effective: the version stays.
    client.put(f"{group_url}/config", json={"bpf": "udp"}, headers=headers)
    assert client.get(f"{agent_url}/config", headers=headers).json()["desired_version"] == 3

    back = client.post(f"{group_url}/config/rollback", json={"version": 1}, headers=headers)
    assert back.status_code == 200, back.text
    assert back.json()["version"] == 4
    assert back.json()["rolled_back_from"] == 1
    assert back.json()["body"] == {"bpf": "tcp", "batch_size": 100}
    rolled = client.get(f"{agent_url}/config", headers=headers).json()
    assert (rolled["desired_version"], rolled["effective"]["bpf"]) == (4, "tcp")
    missing = client.post(f"{group_url}/config/rollback", json={"version": 99}, headers=headers)
    assert missing.status_code == 404

    versions = client.get(f"{group_url}/config/versions", headers=headers).json()["items"]
    assert [v["version"] for v in versions] == [1, 2, 3, 4]
    assert versions[0]["body"] == {"bpf": "tcp", "batch_size": 100}  # immutable
    agent_versions = client.get(f"{agent_url}/config/versions", headers=headers).json()["items"]
    assert [v["body"] for v in agent_versions] == [{"batch_size": 50}]

    left = client.put(f"{agent_url}/group", json={"group_id": None}, headers=headers).json()
    assert left["group_id"] is None
    assert left["effective"]["bpf"] == ""

    with ctx.sessions.tenant(tenant_a.id) as session:
        actions = list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.at)))
    for action in (
        "agent_group.create", "agent_group.config.set", "agent.group.assign", "agent.config.set",
        "agent_group.config.rollback",
    ):  # fmt: skip
        assert action in actions, action


def test_bad_configuration_is_a_422_problem_and_stores_nothing(
    client: TestClient, tenant_a: TenantFixture
) -> None:
    headers = login(client, tenant_a)
    url = f"/api/v1/agents/{tenant_a.agent_id}/config"
    for body in (
        {"batch_size": 0},
        {"batch_size": "many"},
        {"protocols": ["smtp"]},
        {"spool_max_bytes": 10},
        {"ruleset_version": "bad version!"},
        {"bpf": "x" * 5000},
        {"unknown": 1},
        {"tenant_id": "b"},
    ):
        resp = client.put(url, json=body, headers=headers)
        assert resp.status_code == 422, (body, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
    assert client.get(f"{url}/versions", headers=headers).json()["items"] == []


def test_readers_see_configuration_but_only_admins_change_it(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    url = f"/api/v1/agents/{tenant_a.agent_id}/config"
    for role in ("analyst", "viewer"):
        headers = headers_for(client, ctx, tenant_a, role)
        assert client.get(url, headers=headers).status_code == 200
        assert client.put(url, json={"bpf": "tcp"}, headers=headers).status_code == 403
    admin = headers_for(client, ctx, tenant_a, "admin")
    assert client.put(url, json={"bpf": "tcp"}, headers=admin).status_code == 200
