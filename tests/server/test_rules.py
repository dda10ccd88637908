"""Tenant rules API on both stores: create/validate/version/enable/archive, dry runs over stored
records, overrides of shipped rules, upstream merges, and the effective rule set."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from a2z.records import Batch, Dns, Http, Record
from a2z.rules.catalog import Catalog, catalog_of, digest_of, shipped_catalog
from a2z.rules.merge import dump_document, load_document
from a2z.server.app import create_app
from a2z.server.audit import service as audit
from a2z.server.context import ServerContext
from a2z.server.events import service as events
from a2z.server.rules import service as rules
from a2z.server.rules.models import RuleVersion
from a2z.server.tenants import service as tenants
from a2z.server.tenants.models import Role
from tests.server.conftest import PASSWORD, TenantFixture, login
from tests.server.rule_texts import custom_rule

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
B64 = "4153a907-2451-4e4f-a578-c52bb6881432"  # shipped: Suspicious DNS Query with B64 String
UNSUPPORTED = (
    "title: Cisco clear logs\nid: 00000000-0000-4000-8000-000000000001\n"
    "logsource:\n  product: cisco\n  service: aaa\n"
    "detection:\n  keywords:\n    - clear logging\n  condition: keywords\n"
)


def seed(ctx: ServerContext, tenant: TenantFixture, records: list[Record], seq: int = 1) -> None:
    batch = Batch(
        agent_id=str(tenant.agent_id), boot_epoch=1, seq=seq, sent_at=0.0, records=records
    )
    with ctx.sessions.tenant(tenant.id) as session:
        events.store_batch(session=session, agent_id=tenant.agent_id, batch=batch)


def dns(i: int, query: str, ts: float = T0) -> Dns:
    return Dns(
        ts=ts, uid=f"D{i}", orig_h="10.0.0.5", orig_p=40000 + i, resp_h="10.0.0.53", resp_p=53,
        proto="udp", trans_id=i, query=query,
    )  # fmt: skip


def create(client: TestClient, headers: dict[str, str], yaml: str, **extra: Any) -> dict[str, Any]:
    resp = client.post("/api/v1/rules", json={"yaml": yaml, **extra}, headers=headers)
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def shipped_text(rule_id: str = B64) -> str:
    found = shipped_catalog().get(rule_id)
    assert found is not None
    return found.yaml


def edited(source: str, **changes: Any) -> str:
    """The rule text with top-level keys replaced (None removes the key)."""
    doc = load_document(source)
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return dump_document(doc)


def with_shipped(rule_id: str, new_text: str | None) -> Catalog:
    """The shipped catalog as a later product version would ship it: one rule changed or
    (None) no longer shipped."""
    return catalog_of(
        (r.source, new_text if r.rule_id == rule_id else r.yaml)
        for r in shipped_catalog()
        if r.rule_id != rule_id or new_text is not None
    )


def user_headers(
    client: TestClient, ctx: ServerContext, tenant: TenantFixture, role: Role
) -> dict[str, str]:
    email = f"{role.value}@{tenant.name}.test"
    with ctx.sessions.tenant(tenant.id) as session:
        tenants.create_user(session=session, email=email, password=PASSWORD, role=role)
    return login(client, tenant, email)


@pytest.fixture
def owner(client: TestClient, tenant_a: TenantFixture) -> dict[str, str]:
    return login(client, tenant_a)


# Create, validate, version, enable, archive -----------------------------------------------


def test_create_custom_rule_is_version_1_listed_and_audited(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, owner: dict[str, str]
) -> None:
    rule_id = uuid.uuid4()
    body = create(client, owner, custom_rule(rule_id))
    assert body["id"] == str(rule_id)
    assert (body["kind"], body["version"], body["enabled"], body["archived"]) == (
        "custom", 1, True, False,
    )  # fmt: skip
    assert body["upstream"] is None and body["conflicts"] == []
    assert body["title"] == "Query for evil.test"
    assert client.get(f"/api/v1/rules/{rule_id}", headers=owner).json() == body
    listed = client.get("/api/v1/rules", headers=owner).json()
    assert [r["id"] for r in listed["items"]] == [str(rule_id)]
    with ctx.sessions.tenant(tenant_a.id) as session:
        actions = [
            (e.action, e.target)
            for e in audit.list_page(session=session, limit=50, cursor=None).items
        ]
    assert ("rule.create", f"rule:{rule_id}") in actions


@pytest.mark.parametrize(
    ("yaml", "kind", "fragment", "feature"),
    [
        (
            UNSUPPORTED,
            "unsupported",
            "logsource product=cisco service=aaa",
            "logsource product=cisco service=aaa has no record type",
        ),
        (
            custom_rule().replace("condition: selection", "condition: selection and nope"),
            "syntax",
            "nope",
            None,
        ),
        (
            custom_rule().replace("query:", "query|nosuchmodifier:"),
            "syntax",
            "nosuchmodifier",
            None,
        ),
        (
            "\n".join(line for line in custom_rule().splitlines() if not line.startswith("id:")),
            "syntax",
            "needs an id",
            None,
        ),
        ("title: [unclosed\n", "syntax", "", None),
    ],
)
def test_create_refuses_a_rule_that_does_not_compile_with_the_exact_reason(
    client: TestClient,
    ctx: ServerContext,
    owner: dict[str, str],
    yaml: str,
    kind: str,
    fragment: str,
    feature: str | None,
) -> None:
    before = ctx.metrics.rules_rejected.labels(kind)._value.get()
    resp = client.post("/api/v1/rules", json={"yaml": yaml}, headers=owner)
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    problem = resp.json()
    assert problem["title"] == "Invalid rule"
    assert problem["rule_error"]["kind"] == kind
    assert fragment in problem["rule_error"]["message"] and fragment in problem["detail"]
    assert problem["rule_error"]["feature"] == feature
    assert ctx.metrics.rules_rejected.labels(kind)._value.get() == before + 1
    assert client.get("/api/v1/rules?archived=true", headers=owner).json()["items"] == []


def test_validate_reports_without_storing(client: TestClient, owner: dict[str, str]) -> None:
    rule_id = uuid.uuid4()
    ok = client.post("/api/v1/rules/validate", json={"yaml": custom_rule(rule_id)}, headers=owner)
    assert ok.status_code == 200
    assert ok.json() == {
        "valid": True, "rule_id": str(rule_id), "title": "Query for evil.test",
        "record_type": "dns", "correlation_type": None, "overrides_shipped": False,
        "error": None,
    }  # fmt: skip
    shipped = client.post("/api/v1/rules/validate", json={"yaml": shipped_text()}, headers=owner)
    assert shipped.json()["overrides_shipped"] is True
    bad = client.post("/api/v1/rules/validate", json={"yaml": UNSUPPORTED}, headers=owner)
    assert bad.status_code == 200
    assert bad.json()["valid"] is False
    assert (
        bad.json()["error"]["feature"] == "logsource product=cisco service=aaa has no record type"
    )
    assert client.get(f"/api/v1/rules/{rule_id}", headers=owner).status_code == 404
    assert client.get("/api/v1/rules?archived=true", headers=owner).json()["items"] == []


def test_update_adds_versions_newest_first_and_keeps_the_old_ones(
    client: TestClient, owner: dict[str, str]
) -> None:
    rule_id = uuid.uuid4()
    create(client, owner, custom_rule(rule_id))
    for n, query in enumerate(["two.test", "three.test"], start=2):
        resp = client.put(
            f"/api/v1/rules/{rule_id}",
            json={"yaml": custom_rule(rule_id, query=query)},
            headers=owner,
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["version"] == n and resp.json()["title"] == f"Query for {query}"
    # The same text again is not a new version.
    again = client.put(
        f"/api/v1/rules/{rule_id}",
        json={"yaml": custom_rule(rule_id, query="three.test")},
        headers=owner,
    )
    assert again.json()["version"] == 3
    first = client.get(f"/api/v1/rules/{rule_id}/versions?limit=2", headers=owner).json()
    assert [v["version"] for v in first["items"]] == [3, 2]
    assert [v["origin"] for v in first["items"]] == ["update", "update"]
    rest = client.get(
        f"/api/v1/rules/{rule_id}/versions?limit=2&cursor={first['next_cursor']}", headers=owner
    ).json()
    assert [(v["version"], v["origin"]) for v in rest["items"]] == [(1, "create")]
    assert "evil.test" in rest["items"][0]["yaml"] and rest["next_cursor"] is None
    bad_cursor = client.get(f"/api/v1/rules/{rule_id}/versions?cursor=abc", headers=owner)
    assert bad_cursor.status_code == 400


def test_update_may_not_change_the_rule_id_and_create_may_not_reuse_one(
    client: TestClient, owner: dict[str, str]
) -> None:
    rule_id = uuid.uuid4()
    create(client, owner, custom_rule(rule_id))
    moved = client.put(
        f"/api/v1/rules/{rule_id}", json={"yaml": custom_rule(uuid.uuid4())}, headers=owner
    )
    assert moved.status_code == 422 and "cannot change" in moved.json()["detail"]
    twice = client.post("/api/v1/rules", json={"yaml": custom_rule(rule_id)}, headers=owner)
    assert twice.status_code == 409


def test_versions_are_immutable_in_the_database(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, owner: dict[str, str]
) -> None:
    create(client, owner, custom_rule())
    for statement in (
        "UPDATE tenant_rule_versions SET yaml = 'x'",
        "DELETE FROM tenant_rule_versions",
    ):
        with pytest.raises(DBAPIError, match="rule versions are immutable"):
            with ctx.sessions.tenant(tenant_a.id) as session:
                session.execute(text(statement))


def test_disable_enable_archive_and_restore(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, owner: dict[str, str]
) -> None:
    rule_id = uuid.uuid4()
    create(client, owner, custom_rule(rule_id))
    off = client.patch(f"/api/v1/rules/{rule_id}", json={"enabled": False}, headers=owner)
    assert off.status_code == 200 and off.json()["enabled"] is False and off.json()["version"] == 1
    on = client.patch(f"/api/v1/rules/{rule_id}", json={"enabled": True}, headers=owner)
    assert on.json()["enabled"] is True
    assert client.delete(f"/api/v1/rules/{rule_id}", headers=owner).status_code == 204
    assert client.get("/api/v1/rules", headers=owner).json()["items"] == []
    archived = client.get("/api/v1/rules?archived=true", headers=owner).json()["items"]
    assert [(r["id"], r["archived"], r["enabled"]) for r in archived] == [
        (str(rule_id), True, False)
    ]
    assert client.get(f"/api/v1/rules/{rule_id}", headers=owner).json()["archived"] is True
    # An archived rule cannot be switched on or re-created; a new version restores it.
    assert (
        client.patch(f"/api/v1/rules/{rule_id}", json={"enabled": True}, headers=owner).status_code
        == 409
    )
    assert (
        client.post("/api/v1/rules", json={"yaml": custom_rule(rule_id)}, headers=owner).status_code
        == 409
    )
    restored = client.put(
        f"/api/v1/rules/{rule_id}", json={"yaml": custom_rule(rule_id)}, headers=owner
    )
    assert (restored.json()["archived"], restored.json()["version"]) == (False, 2)
    with ctx.sessions.tenant(tenant_a.id) as session:
        entries = audit.list_page(session=session, limit=50, cursor=None).items
    actions = [e.action for e in entries if e.action.startswith("rule.")]
    assert actions == ["rule.create", "rule.disable", "rule.enable", "rule.archive", "rule.update"]


# Dry runs ----------------------------------------------------------------------------------


def test_dry_run_finds_a_known_record_in_the_range_and_only_the_tenants(
    client: TestClient,
    ctx: ServerContext,
    tenant_a: TenantFixture,
    tenant_b: TenantFixture,
    owner: dict[str, str],
) -> None:
    seed(ctx, tenant_a, [
        dns(1, "www.example.com", T0), dns(2, "evil.test", T0 + 10), dns(3, "evil.test", T0 + 20),
        dns(4, "evil.test", T0 + 5000),  # outside the range below
        Http(ts=T0 + 30, uid="H1", orig_h="10.0.0.5", orig_p=1, resp_h="10.0.0.80", resp_p=80, host="evil.test"),
    ])  # fmt: skip
    seed(ctx, tenant_b, [dns(9, "evil.test", T0 + 15)])  # B's match must not count for A
    rule_id = uuid.uuid4()
    create(client, owner, custom_rule(rule_id))
    window = {"since": "2023-11-14T22:13:20Z", "until": "2023-11-14T22:23:20Z"}
    resp = client.post(f"/api/v1/rules/{rule_id}/dry-run", json=window, headers=owner)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["record_type"], body["scanned"], body["matched"]) == ("dns", 3, 2)
    assert body["sample_uids"] == ["D3", "D2"]  # newest first
    assert (body["truncated"], body["undecodable"], body["version"]) == (False, 0, 1)
    assert ctx.metrics.rules_dry_run_records._value.get() == 3
    # Bounded: a scan limit below the range's size stops early and says so.
    capped = client.post(
        f"/api/v1/rules/{rule_id}/dry-run", json={**window, "max_records": 2}, headers=owner
    ).json()
    assert (capped["scanned"], capped["matched"], capped["truncated"]) == (2, 2, True)
    # An older version is dry-run by number; an unknown one is 404.
    client.put(
        f"/api/v1/rules/{rule_id}",
        json={"yaml": custom_rule(rule_id, query="www.example.com")},
        headers=owner,
    )
    v2 = client.post(f"/api/v1/rules/{rule_id}/dry-run", json=window, headers=owner).json()
    v1 = client.post(
        f"/api/v1/rules/{rule_id}/dry-run", json={**window, "version": 1}, headers=owner
    ).json()
    assert (v2["sample_uids"], v1["sample_uids"]) == (["D1"], ["D3", "D2"])
    assert (
        client.post(
            f"/api/v1/rules/{rule_id}/dry-run", json={**window, "version": 9}, headers=owner
        ).status_code
        == 404
    )


def test_dry_run_refuses_empty_and_overlong_ranges(
    client: TestClient, owner: dict[str, str]
) -> None:
    rule_id = uuid.uuid4()
    create(client, owner, custom_rule(rule_id))
    url = f"/api/v1/rules/{rule_id}/dry-run"
    backwards = client.post(
        url, json={"since": "2023-11-15T00:00:00Z", "until": "2023-11-14T00:00:00Z"}, headers=owner
    )
    assert backwards.status_code == 422
    too_long = client.post(
        url, json={"since": "2023-01-01T00:00:00Z", "until": "2023-03-01T00:00:00Z"}, headers=owner
    )
    assert too_long.status_code == 422 and "31 days" in too_long.json()["detail"]
    for far in ({"until": "0001-01-01T00:00:00Z"}, {"since": "9999-12-31T23:59:59-23:00"}):
        out_of_range = client.post(url, json=far, headers=owner)
        assert out_of_range.status_code == 422 and "out of range" in out_of_range.json()["detail"]
    default = client.post(url, json={}, headers=owner)
    assert default.status_code == 200 and default.json()["scanned"] == 0


def test_analysts_may_validate_and_dry_run_but_not_write(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, owner: dict[str, str]
) -> None:
    rule_id = uuid.uuid4()
    create(client, owner, custom_rule(rule_id))
    analyst = user_headers(client, ctx, tenant_a, Role.ANALYST)
    viewer = user_headers(client, ctx, tenant_a, Role.VIEWER)
    assert (
        client.post(f"/api/v1/rules/{rule_id}/dry-run", json={}, headers=analyst).status_code == 200
    )
    assert (
        client.post(
            "/api/v1/rules/validate", json={"yaml": custom_rule()}, headers=analyst
        ).status_code
        == 200
    )
    assert (
        client.post("/api/v1/rules", json={"yaml": custom_rule()}, headers=analyst).status_code
        == 403
    )
    assert (
        client.post(f"/api/v1/rules/{rule_id}/dry-run", json={}, headers=viewer).status_code == 403
    )
    assert client.get(f"/api/v1/rules/{rule_id}", headers=viewer).status_code == 200


# Overrides and the effective rule set --------------------------------------------------------


def effective(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    resp = client.get("/api/v1/rules/effective", headers=headers)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_effective_set_is_the_shipped_catalog_for_a_new_tenant(
    client: TestClient, owner: dict[str, str]
) -> None:
    catalog = shipped_catalog()
    found = effective(client, owner)
    assert [r["rule_id"] for r in found["items"]] == list(catalog.rules)
    assert {r["source"] for r in found["items"]} == {"shipped"}
    assert effective(client, owner) == found  # deterministic
    shipped = client.get("/api/v1/rules/shipped", headers=owner).json()
    assert shipped["digest"] == catalog.digest and len(shipped["items"]) == len(catalog)
    assert not any(r["overridden"] for r in shipped["items"])


def test_override_replaces_the_shipped_rule_and_disabling_it_silences_both(
    client: TestClient, tenant_b: TenantFixture, owner: dict[str, str]
) -> None:
    shipped_only = effective(client, owner)
    tuned = edited(shipped_text(), level="high")
    body = create(client, owner, tuned)
    assert (body["kind"], body["upstream"], body["id"]) == ("override", "current", B64)
    with_override = effective(client, owner)
    by_id = {r["rule_id"]: r for r in with_override["items"]}
    assert (by_id[B64]["source"], by_id[B64]["yaml"], by_id[B64]["version"]) == (
        "override",
        tuned,
        1,
    )
    assert len(with_override["items"]) == len(shipped_only["items"])
    assert with_override["digest"] != shipped_only["digest"]
    assert with_override["version"] != shipped_only["version"]
    overridden = [
        r["rule_id"]
        for r in client.get("/api/v1/rules/shipped", headers=owner).json()["items"]
        if r["overridden"]
    ]
    assert overridden == [B64]

    client.patch(f"/api/v1/rules/{B64}", json={"enabled": False}, headers=owner)
    silenced = effective(client, owner)
    assert B64 not in {r["rule_id"] for r in silenced["items"]}
    assert len(silenced["items"]) == len(shipped_only["items"]) - 1
    # Archiving the override puts the shipped rule back, exactly as shipped.
    client.delete(f"/api/v1/rules/{B64}", headers=owner)
    assert effective(client, owner) == shipped_only
    # Tenant B never saw any of it.
    other = login(client, tenant_b)
    assert effective(client, other) == shipped_only


def test_custom_rules_join_the_effective_set_while_enabled(
    client: TestClient, owner: dict[str, str]
) -> None:
    before = effective(client, owner)
    rule_id = uuid.uuid4()
    create(client, owner, custom_rule(rule_id))
    added = effective(client, owner)
    assert [r for r in added["items"] if r["source"] == "custom"] == [
        {"rule_id": str(rule_id), "source": "custom", "version": 1, "title": "Query for evil.test",
         "yaml": custom_rule(rule_id), "digest": digest_of(custom_rule(rule_id))}
    ]  # fmt: skip
    assert [r["rule_id"] for r in added["items"]] == sorted(r["rule_id"] for r in added["items"])
    client.patch(f"/api/v1/rules/{rule_id}", json={"enabled": False}, headers=owner)
    assert effective(client, owner) == before
    disabled_at_create = uuid.uuid4()
    create(client, owner, custom_rule(disabled_at_create), enabled=False)
    assert effective(client, owner) == before


# Upstream merges ---------------------------------------------------------------------------


def merge_now(
    ctx: ServerContext, tenant: TenantFixture, catalog: Catalog
) -> list[rules.UpstreamMerge]:
    ctx.rules_catalog = catalog
    with ctx.sessions.tenant(tenant.id) as session:
        return rules.merge_upstream(session=session, catalog=catalog)


def test_upstream_change_merges_with_the_tenants_change_without_conflict(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, owner: dict[str, str]
) -> None:
    base = shipped_text()
    create(client, owner, edited(base, level="high"))
    upstream = edited(
        base,
        description="Detects DNS queries carrying base64 text",
        references=["https://example.org/b64"],
    )
    (merge,) = merge_now(ctx, tenant_a, with_shipped(B64, upstream))
    assert (merge.version, merge.conflicts, merge.merge_error) == (2, [], None)
    body = client.get(f"/api/v1/rules/{B64}", headers=owner).json()
    doc = load_document(body["yaml"])
    assert doc["level"] == "high"  # the tenant's change kept
    assert doc["description"] == "Detects DNS queries carrying base64 text"  # upstream's taken
    assert doc["references"] == ["https://example.org/b64"]  # upstream's new field
    assert (body["version"], body["upstream"], body["conflicts"]) == (2, "current", [])
    versions = client.get(f"/api/v1/rules/{B64}/versions", headers=owner).json()["items"]
    assert (versions[0]["version"], versions[0]["origin"], versions[0]["created_by"]) == (
        2,
        "upstream",
        "system:upgrade",
    )
    assert versions[0]["base_digest"] == digest_of(upstream)
    # Merging again against the same shipped version changes nothing.
    assert merge_now(ctx, tenant_a, with_shipped(B64, upstream)) == []


def test_upstream_only_change_is_taken_verbatim(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, owner: dict[str, str]
) -> None:
    base = shipped_text()
    create(client, owner, base, enabled=False)  # "disable this shipped rule": an unchanged copy
    upstream = edited(base, level="high")
    merge_now(ctx, tenant_a, with_shipped(B64, upstream))
    body = client.get(f"/api/v1/rules/{B64}", headers=owner).json()
    assert (body["yaml"], body["enabled"], body["conflicts"]) == (upstream, False, [])
    assert B64 not in {r["rule_id"] for r in effective(client, owner)["items"]}  # still disabled


def test_conflicting_change_keeps_the_tenants_value_and_is_reported(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, owner: dict[str, str]
) -> None:
    base = shipped_text()
    create(client, owner, edited(base, level="low"))
    (merge,) = merge_now(
        ctx, tenant_a, with_shipped(B64, edited(base, level="high", status="stable"))
    )
    assert [c["path"] for c in merge.conflicts] == ["level"]
    body = client.get(f"/api/v1/rules/{B64}", headers=owner).json()
    assert body["conflicts"] == [
        {"path": "level", "base": "medium", "ours": "low", "theirs": "high"}
    ]
    doc = load_document(body["yaml"])
    assert (doc["level"], doc["status"]) == ("low", "stable")
    with ctx.sessions.tenant(tenant_a.id) as session:
        entry = audit.list_page(
            session=session, limit=50, cursor=None, action="rule.upstream_merge"
        ).items
    assert [e.actor for e in entry] == ["system:upgrade"] and '"level"' in entry[0].detail
    # The tenant resolves it with a new version: the flag goes away.
    resolved = client.put(
        f"/api/v1/rules/{B64}", json={"yaml": edited(body["yaml"], level="high")}, headers=owner
    )
    assert (resolved.json()["conflicts"], resolved.json()["upstream"]) == ([], "current")


def test_merge_that_does_not_compile_keeps_the_tenants_text(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, owner: dict[str, str]
) -> None:
    base = shipped_text()
    ours = load_document(base)
    ours["detection"]["filter"] = {"query|endswith": ".corp.example"}
    ours["detection"]["condition"] = "selection and not filter"
    create(client, owner, dump_document(ours))
    theirs = load_document(base)
    theirs["detection"] = {"sel": theirs["detection"]["selection"], "condition": "sel"}
    (merge,) = merge_now(ctx, tenant_a, with_shipped(B64, dump_document(theirs)))
    assert merge.merge_error is not None and "did not compile" in merge.merge_error
    body = client.get(f"/api/v1/rules/{B64}", headers=owner).json()
    assert body["yaml"] == dump_document(ours) and body["merge_error"] == merge.merge_error
    assert body["upstream"] == "current"  # it is merged (by hand, now), not pending


def test_rule_no_longer_shipped_keeps_running_as_the_tenants_override(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, owner: dict[str, str]
) -> None:
    tuned = edited(shipped_text(), level="high")
    create(client, owner, tuned)
    assert merge_now(ctx, tenant_a, with_shipped(B64, None)) == []
    body = client.get(f"/api/v1/rules/{B64}", headers=owner).json()
    assert (body["upstream"], body["version"]) == ("removed", 1)
    by_id = {r["rule_id"]: r for r in effective(client, owner)["items"]}
    assert by_id[B64]["yaml"] == tuned


def test_server_start_merges_every_tenants_stale_overrides(
    ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    base = shipped_text()
    upstream = edited(base, description="new upstream text")
    for tenant, level in ((tenant_a, "high"), (tenant_b, "low")):
        with ctx.sessions.tenant(tenant.id) as session:
            rules.create(
                session=session,
                catalog=ctx.rules_catalog,
                checked=rules.check(edited(base, level=level)),
                enabled=True,
                actor="test",
            )
    ctx.rules_catalog = with_shipped(B64, upstream)  # the next product version
    with TestClient(create_app(context=ctx)) as client:
        for tenant, level in ((tenant_a, "high"), (tenant_b, "low")):
            body = client.get(f"/api/v1/rules/{B64}", headers=login(client, tenant)).json()
            assert (body["version"], body["upstream"]) == (2, "current")
            doc = load_document(body["yaml"])
            assert (doc["level"], doc["description"]) == (level, "new upstream text")
    assert ctx.metrics.rules_upstream_merges.labels("clean")._value.get() == 2


def test_tenants_own_their_rule_ids_independently(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    # The same Sigma id in two tenants is two rules: B's existence is no 409 oracle for A.
    rule_id = uuid.uuid4()
    a, b = login(client, tenant_a), login(client, tenant_b)
    create(client, b, custom_rule(rule_id, query="bravo.test"))
    create(client, a, custom_rule(rule_id, query="alpha.test"))
    assert (
        client.get(f"/api/v1/rules/{rule_id}", headers=a).json()["title"] == "Query for alpha.test"
    )
    assert (
        client.get(f"/api/v1/rules/{rule_id}", headers=b).json()["title"] == "Query for bravo.test"
    )
    client.delete(f"/api/v1/rules/{rule_id}", headers=a)
    assert client.get(f"/api/v1/rules/{rule_id}", headers=b).json()["archived"] is False


def test_a_tenant_whose_merge_fails_does_not_stop_the_others(
    ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    # Two API processes starting at once both merge; the second one's version insert collides
    # with the first's. Here tenant A's next version number is taken beforehand.
    base = shipped_text()
    for tenant in (tenant_a, tenant_b):
        with ctx.sessions.tenant(tenant.id) as session:
            rules.create(
                session=session, catalog=ctx.rules_catalog, checked=rules.check(edited(base, level="high")),
                enabled=True, actor="test",
            )  # fmt: skip
    with ctx.sessions.tenant(tenant_a.id) as session:
        session.add(
            RuleVersion(
                tenant_id=tenant_a.id, rule_id=uuid.UUID(B64), version=2, title="taken",
                yaml=base, digest=digest_of(base), origin="update", created_by="other-process",
            )
        )  # fmt: skip
    merged = rules.merge_upstream_all(
        sessions=ctx.sessions,
        catalog=with_shipped(B64, edited(base, description="new")),
        metrics=ctx.metrics,
    )
    assert [m.rule_id for m in merged] == [uuid.UUID(B64)]  # B's
    assert ctx.metrics.rules_upstream_merge_errors._value.get() == 1
    with ctx.sessions.tenant(tenant_b.id) as session:
        rule_b = rules.get(session=session, rule_id=uuid.UUID(B64))
        assert rule_b is not None and rule_b.version == 2
    with ctx.sessions.tenant(tenant_a.id) as session:
        rule_a = rules.get(session=session, rule_id=uuid.UUID(B64))
        assert rule_a is not None and rule_a.version == 1  # rolled back whole, retried next start
