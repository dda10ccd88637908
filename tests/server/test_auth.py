"""Authentication: tokens, refresh rotation, logout, throttling, API keys, operators."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from fastapi.testclient import TestClient

from a2z.server.app import build_context, create_app
from a2z.server.auth.throttle import LoginThrottle
from a2z.server.auth.tokens import AUDIENCE, ISSUER
from a2z.server.context import ServerContext
from a2z.server.errors import RateLimited
from a2z.server.tenants import service as tenants
from a2z.server.tenants.models import Role
from tests.server.conftest import PASSWORD, TenantFixture, login

LOGIN = "/api/v1/auth/login"


def tokens(client: TestClient, tenant: TenantFixture) -> dict[str, str]:
    resp = client.post(LOGIN, json={"email": tenant.email, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    body: dict[str, str] = resp.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_refresh_rotates_and_reuse_revokes_the_session(
    client: TestClient, tenant_a: TenantFixture
) -> None:
    first = tokens(client, tenant_a)
    second = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert client.get("/api/v1/auth/me", headers=bearer(rotated["access_token"])).status_code == 200

    # The first refresh token was already used: presenting it again means it leaked.
    reuse = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401
    # ... so the whole session is gone, including the newest tokens.
    again = client.post("/api/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert again.status_code == 401
    assert client.get("/api/v1/auth/me", headers=bearer(rotated["access_token"])).status_code == 401


def test_logout_ends_access_and_refresh(client: TestClient, tenant_a: TenantFixture) -> None:
    t = tokens(client, tenant_a)
    assert client.post("/api/v1/auth/logout", headers=bearer(t["access_token"])).status_code == 204
    assert client.get("/api/v1/auth/me", headers=bearer(t["access_token"])).status_code == 401
    resp = client.post("/api/v1/auth/refresh", json={"refresh_token": t["refresh_token"]})
    assert resp.status_code == 401


def _forge(
    ctx: ServerContext, claims: dict[str, object], *, key: bytes | None = None, alg: str = "HS256"
) -> str:
    now = int(time.time())
    base: dict[str, object] = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600}
    return jwt.encode({**base, **claims}, key if key is not None else ctx.secret, algorithm=alg)


def test_tampered_access_tokens_are_401(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    good = jwt.decode(tokens(client, tenant_a)["access_token"], options={"verify_signature": False})
    ident = {k: good[k] for k in ("sub", "tid", "sid")}
    now = int(time.time())
    forged = [
        _forge(ctx, ident, key=b"x" * 32),  # wrong key
        _forge(ctx, {**ident, "aud": "someone-else"}),
        _forge(ctx, {**ident, "iss": "someone-else"}),
        _forge(ctx, {**ident, "iat": now - 7200, "exp": now - 3600}),  # expired
        jwt.encode(
            {**ident, "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600}, None, algorithm="none"
        ),
        _forge(ctx, {**ident, "sid": str(uuid.uuid4())}),  # no such session
    ]
    for token in forged:
        assert client.get("/api/v1/auth/me", headers=bearer(token)).status_code == 401, token


def test_token_of_tenant_b_signed_by_us_cannot_name_tenant_a(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    # Even a validly signed token that claims another tenant needs a live session *there*.
    b = jwt.decode(tokens(client, tenant_b)["access_token"], options={"verify_signature": False})
    token = _forge(ctx, {"sub": b["sub"], "sid": b["sid"], "tid": str(tenant_a.id)})
    assert client.get("/api/v1/auth/me", headers=bearer(token)).status_code == 401


def test_login_is_throttled_per_account_with_retry_after(
    client: TestClient, tenant_a: TenantFixture
) -> None:
    for _ in range(10):
        resp = client.post(LOGIN, json={"email": tenant_a.email, "password": "wrong"})
        assert resp.status_code == 401
    resp = client.post(LOGIN, json={"email": tenant_a.email, "password": PASSWORD})
    assert resp.status_code == 429
    assert int(resp.headers["retry-after"]) > 0
    # Another account from the same address is not locked by this one's failures.
    assert (
        client.post(LOGIN, json={"email": "owner@bravo.test", "password": "x"}).status_code == 401
    )


def test_failed_logins_are_audited(client: TestClient, tenant_a: TenantFixture) -> None:
    client.post(LOGIN, json={"email": tenant_a.email, "password": "wrong"})
    entries = client.get("/api/v1/audit?action=auth.login", headers=login(client, tenant_a)).json()[
        "items"
    ]
    assert [e["outcome"] for e in entries] == ["failure", "success"]


def test_api_key_lifecycle(client: TestClient, tenant_a: TenantFixture) -> None:
    owner = login(client, tenant_a)
    created = client.post(
        "/api/v1/api-keys", json={"name": "siem", "role": "viewer"}, headers=owner
    )
    assert created.status_code == 201
    key = created.json()["key"]
    assert client.get("/api/v1/events", headers=bearer(key)).status_code == 200
    listed = client.get("/api/v1/api-keys", headers=owner).json()["items"]
    assert all("key" not in k and "secret_hash" not in k for k in listed)
    mine = next(k for k in listed if k["id"] == created.json()["id"])
    assert mine["last_used_at"] is not None
    assert client.delete(f"/api/v1/api-keys/{mine['id']}", headers=owner).status_code == 204
    assert client.get("/api/v1/events", headers=bearer(key)).status_code == 401


def test_viewer_key_cannot_create_keys(client: TestClient, tenant_a: TenantFixture) -> None:
    owner = login(client, tenant_a)
    key = client.post("/api/v1/api-keys", json={"role": "viewer"}, headers=owner).json()["key"]
    assert (
        client.post("/api/v1/api-keys", json={"role": "owner"}, headers=bearer(key)).status_code
        == 403
    )


def test_admin_cannot_mint_owner_keys_or_promote_to_owner(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    with ctx.sessions.tenant(tenant_a.id) as session:
        tenants.create_user(
            session=session, email="adm@alpha.test", password=PASSWORD, role=Role.ADMIN
        )
        viewer = tenants.create_user(
            session=session, email="v@alpha.test", password=PASSWORD, role=Role.VIEWER
        )
    admin = login(client, tenant_a, "adm@alpha.test")
    assert client.post("/api/v1/api-keys", json={"role": "owner"}, headers=admin).status_code == 403
    resp = client.patch(f"/api/v1/users/{viewer.id}", json={"role": "owner"}, headers=admin)
    assert resp.status_code == 403
    assert (
        client.patch(
            f"/api/v1/users/{viewer.id}", json={"role": "analyst"}, headers=admin
        ).status_code
        == 200
    )


def test_operator_switches_between_granted_tenants_only(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    with ctx.sessions.system() as session:
        tenant_c = tenants.create_tenant(session=session, name="charlie")
    for tid in (tenant_a.id, tenant_b.id):
        with ctx.sessions.tenant(tid) as session:
            user = tenants.ensure_user(session=session, email="soc@mssp.test", password=PASSWORD)
            tenants.add_member(session=session, user=user, role=Role.OPERATOR)
    resp = client.post(
        LOGIN, json={"email": "soc@mssp.test", "password": PASSWORD, "tenant_id": str(tenant_b.id)}
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["tenant_id"] == str(tenant_b.id)
    assert {t["name"] for t in body["tenants"]} == {"alpha", "bravo"}
    headers = bearer(body["access_token"])
    assert {t["name"] for t in client.get("/api/v1/tenants", headers=headers).json()["items"]} == {
        "alpha",
        "bravo",
    }

    switched = client.post(
        "/api/v1/auth/switch", json={"tenant_id": str(tenant_a.id)}, headers=headers
    )
    assert switched.status_code == 200
    me = client.get("/api/v1/auth/me", headers=bearer(switched.json()["access_token"])).json()
    assert me["tenant_id"] == str(tenant_a.id)
    assert (
        client.post(
            "/api/v1/auth/switch", json={"tenant_id": str(tenant_c.id)}, headers=headers
        ).status_code
        == 404
    )

    created = client.post("/api/v1/tenants", json={"name": "delta"}, headers=headers)
    assert created.status_code == 201
    names = {
        t["name"] for t in client.get("/api/v1/tenants?limit=500", headers=headers).json()["items"]
    }
    assert names == {"alpha", "bravo", "delta"}


def test_owner_is_not_an_operator(client: TestClient, tenant_a: TenantFixture) -> None:
    headers = login(client, tenant_a)
    assert client.get("/api/v1/tenants", headers=headers).status_code == 403
    assert client.post("/api/v1/tenants", json={"name": "x"}, headers=headers).status_code == 403


@pytest.mark.parametrize("field", ["tenant_id", "role", "owner", "created_by", "id"])
def test_mass_assignment_is_refused(
    client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture, field: str
) -> None:
    headers = login(client, tenant_a)
    smuggled = {
        "tenant_id": str(tenant_b.id),
        "role": "owner",
        "owner": True,
        "created_by": "x",
        "id": str(uuid.uuid4()),
    }
    bodies = {
        f"/api/v1/agents/{tenant_a.agent_id}": ("patch", {"name": "renamed"}),
        "/api/v1/enrollment-tokens": ("post", {"uses": 1}),
    }
    for url, (method, body) in bodies.items():
        resp = client.request(method, url, json={**body, field: smuggled[field]}, headers=headers)
        assert resp.status_code == 422, (url, resp.text)
    # The key route takes a role, but not a tenant or an owner:
    if field != "role":
        resp = client.post(
            "/api/v1/api-keys", json={"role": "viewer", field: smuggled[field]}, headers=headers
        )
        assert resp.status_code == 422


def test_login_throttle_is_shared_by_server_processes(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    # Two API processes on one store (``--workers 2``): failures on either count once, so the
    # limit is not multiplied by the number of processes.
    twin = build_context(ctx.settings)
    try:
        with TestClient(create_app(context=twin)) as other:
            for i in range(10):
                app = client if i % 2 else other
                resp = app.post(LOGIN, json={"email": tenant_a.email, "password": "wrong"})
                assert resp.status_code == 401
            for app in (client, other):
                resp = app.post(LOGIN, json={"email": tenant_a.email, "password": PASSWORD})
                assert resp.status_code == 429
    finally:
        twin.sessions.engine.dispose()


def test_throttle_window_slides_and_success_clears_the_account(ctx: ServerContext) -> None:
    throttle = LoginThrottle(ctx.sessions, per_account=2, per_source=3, window_s=0.5)
    throttle.failed("a@x.test", "10.0.0.1")
    throttle.failed("a@x.test", "10.0.0.1")
    with pytest.raises(RateLimited) as refused:
        throttle.check("a@x.test", "10.0.0.2")
    assert refused.value.retry_after == 1
    throttle.check("b@x.test", "10.0.0.2")  # another account, another address
    throttle.succeeded("a@x.test")
    throttle.check("a@x.test", "10.0.0.2")
    throttle.failed("b@x.test", "10.0.0.1")
    with pytest.raises(RateLimited):
        throttle.check("c@x.test", "10.0.0.1")  # the address's third failure
    time.sleep(0.6)
    throttle.check("c@x.test", "10.0.0.1")  # the window has passed
