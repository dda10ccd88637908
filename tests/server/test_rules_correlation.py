"""Tenant correlation rules through the rules API (ADR 13): validated with the correlation
compiler against the tenant's rules, kept out of the agents' edge set, and dry-run over stored
records in time order."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from a2z.records import Conn
from a2z.server.context import ServerContext
from tests.server.conftest import TenantFixture, login
from tests.server.rule_texts import custom_rule
from tests.server.test_rules import seed

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
WINDOW = {"since": "2023-11-14T22:13:20Z", "until": "2023-11-14T22:23:20Z"}


def port_sweep(rule_id: uuid.UUID, ports: int = 5) -> str:
    """A correlation with its base rule bundled: refused connections to ``ports`` ports."""
    return (
        "title: Refused connection\nid: 9a4b3c2d-1e0f-4a5b-8c7d-6e5f4a3b2c1d\n"
        "logsource:\n  product: zeek\n  service: conn\n"
        "detection:\n  selection:\n    conn_state: REJ\n  condition: selection\n"
        "---\n"
        f"title: Small port sweep\nid: {rule_id}\n"
        "correlation:\n  type: value_count\n  rules:\n    - 9a4b3c2d-1e0f-4a5b-8c7d-6e5f4a3b2c1d\n"
        "  group-by:\n    - id.orig_h\n  timespan: 1m\n"
        f"  condition:\n    gte: {ports}\n    field: id.resp_p\n"
        "level: medium\ntags:\n  - attack.t1046\n"
    )


def referencing(rule_id: uuid.UUID, base: uuid.UUID | str) -> str:
    """A correlation over a rule of the tenant's effective set, by its id."""
    return (
        f"title: Repeated lookups\nid: {rule_id}\n"
        f"correlation:\n  type: event_count\n  rules:\n    - {base}\n"
        "  group-by:\n    - id.orig_h\n  timespan: 5m\n  condition:\n    gte: 3\n"
    )


@pytest.fixture
def owner(client: TestClient, tenant_a: TenantFixture) -> dict[str, str]:
    return login(client, tenant_a)


def validate(client: TestClient, owner: dict[str, str], text: str) -> dict[str, Any]:
    resp = client.post("/api/v1/rules/validate", json={"yaml": text}, headers=owner)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_a_correlation_validates_against_its_own_and_the_tenants_rules(
    client: TestClient, owner: dict[str, str]
) -> None:
    sweep = uuid.uuid4()
    ok = validate(client, owner, port_sweep(sweep))
    assert (ok["valid"], ok["rule_id"], ok["correlation_type"]) == (True, str(sweep), "value_count")
    assert ok["record_type"] is None
    # A reference to a rule the tenant does not have is refused with the reason ...
    base, corr = uuid.uuid4(), uuid.uuid4()
    missing = validate(client, owner, referencing(corr, base))
    assert missing["valid"] is False
    assert f"references rule '{base}', which is not loaded" in missing["error"]["message"]
    # ... and accepted once the tenant has it (its custom rule, by id).
    created = client.post("/api/v1/rules", json={"yaml": custom_rule(base)}, headers=owner)
    assert created.status_code == 201, created.text
    assert validate(client, owner, referencing(corr, base))["valid"] is True
    # Written in flow style, a correlation is not recognised as one, and does not compile.
    flow = (
        f"{{title: x, id: {uuid.uuid4()}, correlation: {{type: event_count, rules: [{base}],"
        " group-by: [id.orig_h], timespan: 1m, condition: {gte: 1}}}"
    )
    assert validate(client, owner, flow)["valid"] is False


def test_a_stored_correlation_runs_in_the_backend_only(
    client: TestClient, owner: dict[str, str]
) -> None:
    before = client.get("/api/v1/rules/effective", headers=owner).json()
    sweep = uuid.uuid4()
    resp = client.post("/api/v1/rules", json={"yaml": port_sweep(sweep)}, headers=owner)
    assert resp.status_code == 201, resp.text
    assert (resp.json()["kind"], resp.json()["title"]) == ("custom", "Small port sweep")
    after = client.get("/api/v1/rules/effective", headers=owner).json()
    assert str(sweep) in {r["rule_id"] for r in after["items"]}
    assert after["digest"] != before["digest"]
    assert after["edge_digest"] == before["edge_digest"]  # agents are not sent it
    bad = client.post(
        "/api/v1/rules", json={"yaml": referencing(uuid.uuid4(), uuid.uuid4())}, headers=owner
    )
    assert bad.status_code == 422


def refused(i: int, port: int, orig: str = "10.0.0.5") -> Conn:
    return Conn(
        ts=T0 + i, uid=f"Crej{i}", orig_h=orig, orig_p=40000 + i, resp_h="10.0.0.80",
        resp_p=port, proto="tcp", conn_state="REJ",
    )  # fmt: skip


def test_a_correlation_dry_run_replays_stored_records_in_time_order(
    client: TestClient,
    ctx: ServerContext,
    tenant_a: TenantFixture,
    tenant_b: TenantFixture,
    owner: dict[str, str],
) -> None:
    seed(ctx, tenant_a, [refused(i, 20 + i) for i in range(6)])  # 6 ports: one sweep
    seed(ctx, tenant_a, [refused(10 + i, 80, "10.0.0.6") for i in range(6)], seq=2)  # one port
    seed(ctx, tenant_b, [refused(20 + i, 100 + i, "10.0.0.7") for i in range(6)])  # b's
    sweep = uuid.uuid4()
    client.post("/api/v1/rules", json={"yaml": port_sweep(sweep)}, headers=owner)
    resp = client.post(f"/api/v1/rules/{sweep}/dry-run", json=WINDOW, headers=owner)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["record_type"], body["scanned"], body["matched"]) == ("conn", 12, 1)
    assert body["sample_uids"] == [f"Crej{i}" for i in range(5)]  # the sweep's first 5 ports
    capped = client.post(
        f"/api/v1/rules/{sweep}/dry-run", json={**WINDOW, "max_records": 4}, headers=owner
    ).json()
    assert (capped["scanned"], capped["matched"], capped["truncated"]) == (4, 0, True)
