"""Threat-intel API: imports (plain, CSV, STIX, raw upload), listing, deletes, warning list,
stats, global indicators for operators, and the deltas agents are sent."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from a2z.rules.intel import IndicatorType
from a2z.server.audit.models import AuditEvent
from a2z.server.context import ServerContext
from a2z.server.intel import delivery
from a2z.server.intel import service as intel
from a2z.server.intel.models import TOMBSTONE_VERSIONS
from a2z.server.tenants import service as tenants
from a2z.server.tenants.models import Role
from tests.server.conftest import PASSWORD, TenantFixture, login

BASE = "/api/v1/intel"
PLAIN = "203.0.113.50\n# a comment\nevil.example\nhttp://bad.example/x\nnot a value!\n10.9.0.0/16\n"
FEODO = (
    "# abuse.ch Feodo Tracker\n"
    "# first_seen_utc,dst_ip,dst_port,c2_status,last_online,malware\n"
    "# first_seen_utc,DstIP,DstPort,C2Status,LastOnline,Malware\n"
    "2024-01-01 00:00:00,198.51.100.7,443,online,2024-01-02,QakBot\n"
    "2024-01-01 00:00:00,999.1.1.1,443,online,2024-01-02,QakBot\n"
)


def stix_bundle(*patterns: str) -> str:
    objects = [
        {
            "type": "indicator",
            "spec_version": "2.1",
            "id": f"indicator--{uuid.uuid4()}",
            "created": "2024-01-01T00:00:00.000Z",
            "modified": "2024-01-01T00:00:00.000Z",
            "pattern": p,
            "pattern_type": "stix",
            "valid_from": "2024-01-01T00:00:00Z",
            "confidence": 90,
        }
        for p in patterns
    ]
    return json.dumps({"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects})


def imported(
    client: TestClient, headers: dict[str, str], content: str, **fields: Any
) -> dict[str, Any]:
    body = {"content": content, "source": "feed-a", **fields}
    resp = client.post(f"{BASE}/indicators/import", json=body, headers=headers)
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


def operator_headers(
    client: TestClient, ctx: ServerContext, tenant: TenantFixture
) -> dict[str, str]:
    email = f"op-{uuid.uuid4().hex[:6]}@{tenant.name}.test"
    with ctx.sessions.tenant(tenant.id) as session:
        tenants.create_user(session=session, email=email, password=PASSWORD, role=Role.OPERATOR)
    return login(client, tenant, email)


def test_plain_import_counts_rejects_and_lists_with_filters_and_cursor(
    client: TestClient, tenant_a: TenantFixture
) -> None:
    headers = login(client, tenant_a)
    out = imported(client, headers, PLAIN, confidence=90)
    assert (out["added"], out["rejected"], out["version"]) == (4, 1, 1)
    assert "line 5" in out["messages"][0]
    again = imported(client, headers, PLAIN, confidence=90)
    assert (again["added"], again["unchanged"], again["version"]) == (0, 4, 2)
    changed = imported(client, headers, "203.0.113.50", confidence=10)
    assert changed["updated"] == 1

    items = client.get(f"{BASE}/indicators", headers=headers).json()["items"]
    assert {(i["type"], i["value"]) for i in items} == {
        ("ip", "203.0.113.50"), ("domain", "evil.example"),
        ("url", "http://bad.example/x"), ("ip", "10.9.0.0/16"),
    }  # fmt: skip
    only_ip = client.get(f"{BASE}/indicators?type=ip", headers=headers).json()["items"]
    assert {i["value"] for i in only_ip} == {"203.0.113.50", "10.9.0.0/16"}
    prefix = client.get(f"{BASE}/indicators?prefix=203.0", headers=headers).json()["items"]
    assert [i["confidence"] for i in prefix] == [10]
    assert client.get(f"{BASE}/indicators?source=other", headers=headers).json()["items"] == []
    first = client.get(f"{BASE}/indicators?limit=3", headers=headers).json()
    rest = client.get(
        f"{BASE}/indicators?limit=3&cursor={first['next_cursor']}", headers=headers
    ).json()
    assert len(first["items"]) == 3 and len(rest["items"]) == 1 and rest["next_cursor"] is None
    assert client.get(f"{BASE}/indicators?tyep=ip", headers=headers).status_code == 422

    stats = client.get(f"{BASE}/stats", headers=headers).json()
    assert stats["by_type"] == {"ip": 2, "domain": 1, "url": 1}
    assert stats["version"] == 3 and stats["agent_version"] == delivery.combine(0, 3)


def test_csv_stix_and_raw_upload_imports(client: TestClient, tenant_a: TenantFixture) -> None:
    headers = login(client, tenant_a)
    feodo = imported(client, headers, FEODO, format="csv", csv_layout="feodo", source="feodo")
    assert (feodo["added"], feodo["rejected"]) == (1, 1)
    generic = imported(
        client, headers, "value,comment\nc2.example,x\n198.51.100.9,y\n", format="csv"
    )
    assert generic["added"] == 2
    stix = imported(
        client, headers,
        stix_bundle("[domain-name:value = 'stix.example']", "[process:name = 'evil.exe']"),
        format="stix", source="stix",
    )  # fmt: skip
    assert stix["added"] == 1 and stix["unsupported"] == {"object path process:name": 1}
    [row] = client.get(f"{BASE}/indicators?source=stix", headers=headers).json()["items"]
    assert row["confidence"] == 90 and row["ref"].startswith("indicator--")

    upload = client.post(
        f"{BASE}/indicators/upload?source=uploaded&format=plain&confidence=70",
        content=b"\xef\xbb\xbf203.0.113.77\nupload.example\n",
        headers={**headers, "Content-Type": "text/plain"},
    )
    assert upload.status_code == 200, upload.text
    assert upload.json()["added"] == 2
    bad = client.post(
        f"{BASE}/indicators/upload?source=uploaded", content=b"\xff\xfe\x00", headers=headers
    )
    assert bad.status_code == 422 and "UTF-8" in bad.json()["detail"]
    nul = client.post(
        f"{BASE}/indicators/upload?source=uploaded&type=ip",
        content=b"10.0.0\x001\n",
        headers=headers,
    )
    assert nul.status_code == 422 and nul.json()["rejected"] == 1


def test_unusable_feeds_are_422_problems_with_counts(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    headers = login(client, tenant_a)
    before = ctx.metrics.intel_import_rejected.labels("rejected")._value.get()
    resp = client.post(
        f"{BASE}/indicators/import",
        json={"content": "not valid!\nalso bad?\n", "source": "junk"},
        headers=headers,
    )
    assert resp.status_code == 422
    problem = resp.json()
    assert problem["title"] == "Feed rejected" and problem["rejected"] == 2
    assert len(problem["messages"]) == 2
    assert ctx.metrics.intel_import_rejected.labels("rejected")._value.get() == before + 2
    for body in (
        {"content": "{not json", "source": "s", "format": "stix"},
        {"content": "a,b\n1,2\n", "source": "s", "format": "csv", "csv_layout": "feodo"},
    ):
        resp = client.post(f"{BASE}/indicators/import", json=body, headers=headers)
        assert resp.status_code == 422 and resp.json()["title"] == "Feed rejected", resp.text
    for body in (
        {"content": "x.example", "source": "bad source!"},
        {"content": "x.example", "source": "s", "confidence": 101},
        {"content": "x.example", "source": "s", "tenant_id": str(uuid.uuid4())},
    ):
        assert (
            client.post(f"{BASE}/indicators/import", json=body, headers=headers).status_code == 422
        )
    assert client.get(f"{BASE}/stats", headers=headers).json()["total"] == 0


def test_deletes_are_tombstones_agents_get_as_deltas(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    headers = login(client, tenant_a)
    imported(client, headers, "203.0.113.1\n203.0.113.2\n")  # version 1
    imported(client, headers, "other.example", source="feed-b")  # version 2
    items = client.get(f"{BASE}/indicators?source=feed-a", headers=headers).json()["items"]
    victim = next(i for i in items if i["value"] == "203.0.113.1")
    url = f"{BASE}/indicators/{victim['id']}"
    assert client.get(url, headers=headers).status_code == 200
    assert client.delete(url, headers=headers).status_code == 204  # version 3
    assert client.get(url, headers=headers).status_code == 404
    assert client.delete(url, headers=headers).status_code == 404

    with ctx.sessions.tenant(tenant_a.id) as session:
        change = delivery.delta(session, delivery.combine(0, 2))
        full = delivery.delta(session, 0)
    assert not change.full and change.base == delivery.combine(0, 2)
    assert [(k.type, k.value) for k in change.removed] == [(IndicatorType.IP, "203.0.113.1")]
    assert change.added == [] and change.version == delivery.combine(0, 3)
    assert full.full and {i.value for i in full.added} == {"203.0.113.2", "other.example"}

    gone = client.post(
        f"{BASE}/indicators/delete-by-source", json={"source": "feed-b"}, headers=headers
    ).json()
    assert gone == {"deleted": 1, "version": 4}
    assert client.get(f"{BASE}/stats", headers=headers).json()["total"] == 1
    back = imported(client, headers, "203.0.113.1")  # a deleted indicator comes back
    assert back["added"] == 1
    with ctx.sessions.tenant(tenant_a.id) as session:
        actions = list(session.scalars(select(AuditEvent.action).where(
            AuditEvent.action.like("intel.%")).order_by(AuditEvent.at)))  # fmt: skip
    assert actions == [
        "intel.import", "intel.import", "intel.delete", "intel.delete_source", "intel.import",
    ]  # fmt: skip


def test_old_tombstones_are_purged_and_older_agents_get_the_whole_set(
    ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    from a2z.rules.intel import make

    with ctx.sessions.tenant(tenant_a.id) as session:
        intel.import_indicators(
            session, intel.TENANT, [make(IndicatorType.DOMAIN, "a.example", source="s")]
        )
        row = intel.list_page(session, intel.TENANT, limit=1, cursor=None).items[0]
        intel.remove(session, intel.TENANT, row)
        for _ in range(TOMBSTONE_VERSIONS):
            intel.bump(session, intel.TENANT)
        state = intel.TENANT.state(session)
        assert state.floor == state.version - TOMBSTONE_VERSIONS > 0
        assert intel.changes(session, intel.TENANT, 0) == ([], [])  # the tombstone is gone
        assert delivery.delta(session, delivery.combine(0, 1)).full


def test_warning_list_crud(client: TestClient, tenant_a: TenantFixture) -> None:
    headers = login(client, tenant_a)
    made = client.post(
        f"{BASE}/warnings", json={"kind": "cidr", "value": "203.0.113.7/24", "note": "lab"},
        headers=headers,
    )  # fmt: skip
    assert made.status_code == 201, made.text
    assert made.json()["value"] == "203.0.113.0/24"
    dup = client.post(
        f"{BASE}/warnings", json={"kind": "cidr", "value": "203.0.113.0/24"}, headers=headers
    )
    assert dup.status_code == 409
    bad = client.post(f"{BASE}/warnings", json={"kind": "cidr", "value": "nope"}, headers=headers)
    assert bad.status_code == 422
    client.post(
        f"{BASE}/warnings", json={"kind": "domain", "value": "CDN.Example."}, headers=headers
    )
    listed = client.get(f"{BASE}/warnings", headers=headers).json()["items"]
    assert [(w["kind"], w["value"]) for w in listed] == [
        ("cidr", "203.0.113.0/24"), ("domain", "cdn.example"),
    ]  # fmt: skip
    url = f"{BASE}/warnings/{made.json()['id']}"
    assert client.get(url, headers=headers).json()["note"] == "lab"
    assert client.delete(url, headers=headers).status_code == 204
    assert client.get(url, headers=headers).status_code == 404
    assert client.get(f"{BASE}/stats", headers=headers).json()["warnings"] == 1


def test_viewers_read_but_do_not_change_intel(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    email = f"viewer@{tenant_a.name}.test"
    with ctx.sessions.tenant(tenant_a.id) as session:
        tenants.create_user(session=session, email=email, password=PASSWORD, role=Role.VIEWER)
    viewer = login(client, tenant_a, email)
    assert client.get(f"{BASE}/indicators", headers=viewer).status_code == 200
    resp = client.post(
        f"{BASE}/indicators/import", json={"content": "x.example", "source": "s"}, headers=viewer
    )
    assert resp.status_code == 403


@pytest.mark.parametrize("route", ["indicators", "warnings"])
def test_global_routes_are_for_operators_and_reach_every_tenant(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture,
    route: str,
) -> None:  # fmt: skip
    operator = operator_headers(client, ctx, tenant_a)
    owner = login(client, tenant_a)
    if route == "indicators":
        resp = client.post(
            f"{BASE}/global/indicators/import",
            json={"content": "198.51.100.66", "source": "mssp"}, headers=operator,
        )  # fmt: skip
        assert resp.status_code == 200, resp.text
        [row] = client.get(f"{BASE}/global/indicators", headers=operator).json()["items"]
        with ctx.sessions.tenant(tenant_b.id) as session:  # another tenant's agents get it
            full = delivery.delta(session, 0)
        assert [(i.value, i.source) for i in full.added] == [("198.51.100.66", "global:mssp")]
    else:
        resp = client.post(
            f"{BASE}/global/warnings", json={"kind": "domain", "value": "ok.example"},
            headers=operator,
        )  # fmt: skip
        assert resp.status_code == 201, resp.text
        row = resp.json()
        with ctx.sessions.tenant(tenant_b.id) as session:
            assert delivery.warnings(session).domains == ["ok.example"]
    assert client.get(f"{BASE}/global/{route}", headers=owner).status_code == 403
    object_url = f"{BASE}/global/{route}/{row['id']}"
    missing_url = f"{BASE}/global/{route}/{uuid.uuid4()}"
    denied, missing = (
        client.delete(object_url, headers=owner),
        client.delete(missing_url, headers=owner),
    )
    assert denied.status_code == missing.status_code == 404
    assert denied.json() == missing.json()
    b_stats = client.get(f"{BASE}/stats", headers=login(client, tenant_b)).json()
    assert b_stats["global_version"] == 1 and b_stats["version"] == 0
    assert b_stats["agent_version"] == delivery.combine(1, 0)
    assert client.delete(object_url, headers=operator).status_code == 204
    stats = client.get(f"{BASE}/global/stats", headers=operator).json()
    assert stats["version"] == 2 and stats["total"] == 0
    with ctx.sessions.tenant(tenant_a.id) as session:
        actions = set(session.scalars(select(AuditEvent.action).where(
            AuditEvent.action.like("intel.global.%"))))  # fmt: skip
    assert len(actions) == 2
