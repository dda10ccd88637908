"""The principal cache: a cached credential stops working the moment it is revoked, by this
process or by another one serving the same data directory (``a2z server --workers N``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from a2z.server.app import build_context, create_app
from a2z.server.auth.principal import Principal
from a2z.server.auth.principal_cache import PrincipalCache
from a2z.server.auth.revocations import RevocationCounter
from a2z.server.context import ServerContext
from a2z.server.errors import Unauthenticated
from a2z.server.tenants.models import Role
from tests.server.conftest import PASSWORD, TenantFixture, login

ME = "/api/v1/auth/me"


@pytest.fixture
def other(ctx: ServerContext) -> Iterator[TestClient]:
    """A second server process in all but the process: same settings, store and data dir."""
    twin = build_context(ctx.settings)
    try:
        with TestClient(create_app(context=twin)) as c:
            yield c
    finally:
        twin.sessions.engine.dispose()


def test_logout_in_one_process_ends_the_token_cached_by_another(
    client: TestClient, other: TestClient, tenant_a: TenantFixture
) -> None:
    owner = login(client, tenant_a)
    for _ in range(3):  # the first fills the other process's cache, the rest hit it
        assert other.get(ME, headers=owner).status_code == 200
    assert client.post("/api/v1/auth/logout", headers=owner).status_code == 204
    assert other.get(ME, headers=owner).status_code == 401
    assert client.get(ME, headers=owner).status_code == 401


def test_revoked_api_key_stops_at_once_in_every_process(
    client: TestClient, other: TestClient, tenant_a: TenantFixture
) -> None:
    owner = login(client, tenant_a)
    created = client.post("/api/v1/api-keys", json={"role": "viewer"}, headers=owner).json()
    key = {"Authorization": f"Bearer {created['key']}"}
    assert client.get("/api/v1/events", headers=key).status_code == 200
    assert other.get("/api/v1/events", headers=key).status_code == 200
    assert other.delete(f"/api/v1/api-keys/{created['id']}", headers=owner).status_code == 204
    assert client.get("/api/v1/events", headers=key).status_code == 401
    assert other.get("/api/v1/events", headers=key).status_code == 401


def test_role_change_applies_to_the_next_request_of_a_cached_member(
    client: TestClient, other: TestClient, tenant_a: TenantFixture
) -> None:
    owner = login(client, tenant_a)
    added = client.post(
        "/api/v1/users",
        json={"email": "admin@alpha.test", "password": PASSWORD, "role": "admin"},
        headers=owner,
    )
    assert added.status_code == 201
    admin = login(client, tenant_a, "admin@alpha.test")
    assert other.get("/api/v1/api-keys", headers=admin).status_code == 200  # cached as admin
    user = added.json()["id"]
    changed = client.patch(f"/api/v1/users/{user}", json={"role": "viewer"}, headers=owner)
    assert changed.status_code == 200
    assert other.get("/api/v1/api-keys", headers=admin).status_code == 403
    assert other.get(ME, headers=admin).json()["role"] == "viewer"
    assert client.delete(f"/api/v1/users/{user}", headers=owner).status_code == 204
    assert other.get(ME, headers=admin).status_code == 401


def test_key_use_bookkeeping_does_not_flush_the_cache(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    # An agent key's first use writes its last-used time: not a revocation.
    before = ctx.principals.counter.read()
    headers = {"Authorization": f"Bearer {tenant_a.agent_token}"}
    assert client.get(ME, headers=headers).status_code == 200
    assert ctx.principals.counter.read() == before


def _principal() -> Principal:
    return Principal(tenant_id=uuid.uuid4(), actor="key:x", role=Role.VIEWER)


def test_counter_file_is_shared_and_survives_reopening(tmp_path: Path) -> None:
    one, two = RevocationCounter(tmp_path / "c"), RevocationCounter(tmp_path / "c")
    one.bump()
    two.bump()
    assert one.read() == two.read() == 2
    assert RevocationCounter(tmp_path / "c").read() == 2
    local = RevocationCounter()
    local.bump()
    assert local.read() == 1


def test_entry_verified_before_a_revocation_is_never_used(tmp_path: Path) -> None:
    cache = PrincipalCache(RevocationCounter(tmp_path / "c"), ttl_s=60)
    key = cache.key("a2zk_token")
    generation = cache.generation()
    # A revocation commits while the lookup that started earlier is still running...
    PrincipalCache(RevocationCounter(tmp_path / "c"), ttl_s=60).invalidate()
    cache.put(key, _principal(), generation)  # ... so its result is stale on arrival.
    assert cache.get(key) is None


def test_entries_expire_with_the_ttl_or_the_token(tmp_path: Path) -> None:
    cache = PrincipalCache(RevocationCounter(), ttl_s=0.05)
    key, who = cache.key("t"), _principal()
    cache.put(key, who, cache.generation())
    assert cache.get(key) is who
    time.sleep(0.06)
    assert cache.get(key) is None
    cache.put(key, who, cache.generation(), expires_at=time.time() - 1)  # token expired
    assert cache.get(key) is None
    assert PrincipalCache(RevocationCounter(), ttl_s=0).get(key) is None


def test_cache_is_bounded_dropping_the_oldest() -> None:
    cache = PrincipalCache(RevocationCounter(), ttl_s=60, max_entries=2)
    keys = [cache.key(str(i)) for i in range(3)]
    for key in keys:
        cache.put(key, _principal(), cache.generation())
    assert cache.get(keys[0]) is None
    assert cache.get(keys[1]) is not None and cache.get(keys[2]) is not None


class _Verifier:
    """A credential check that counts its runs and finishes when the test says so."""

    def __init__(self, outcome: Principal | Exception) -> None:
        self.outcome = outcome
        self.runs = 0
        self.release = asyncio.Event()

    async def __call__(self) -> tuple[Principal, float | None]:
        self.runs += 1
        await self.release.wait()
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome, None


async def test_requests_missing_together_share_one_verification() -> None:
    cache = PrincipalCache(RevocationCounter(), ttl_s=60)
    key, who = cache.key("t"), _principal()
    verify = _Verifier(who)
    waiting = [asyncio.create_task(cache.verify_shared(key, verify)) for _ in range(50)]
    await asyncio.sleep(0)
    verify.release.set()
    assert await asyncio.gather(*waiting) == [who] * 50
    assert verify.runs == 1
    assert cache.get(key) is who  # and the result is cached for the next request


async def test_a_revocation_during_a_verification_is_not_shared_with_later_requests() -> None:
    cache = PrincipalCache(RevocationCounter(), ttl_s=60)
    key = cache.key("t")
    before = _Verifier(_principal())
    first = asyncio.create_task(cache.verify_shared(key, before))
    await asyncio.sleep(0)
    cache.invalidate()  # e.g. the credential revoked while the first lookup runs
    after = _Verifier(Unauthenticated("revoked"))
    second = asyncio.create_task(cache.verify_shared(key, after))
    await asyncio.sleep(0)
    before.release.set()
    after.release.set()
    await first
    with pytest.raises(Unauthenticated):
        await second
    assert (before.runs, after.runs) == (1, 1)
    assert cache.get(key) is None  # the pre-revocation result was not kept


async def test_a_failed_verification_fails_every_request_sharing_it() -> None:
    cache = PrincipalCache(RevocationCounter(), ttl_s=60)
    key = cache.key("t")
    verify = _Verifier(Unauthenticated("unknown credential"))
    waiting = [asyncio.create_task(cache.verify_shared(key, verify)) for _ in range(3)]
    await asyncio.sleep(0)
    verify.release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, Unauthenticated) for r in results) and verify.runs == 1
    again = _Verifier(_principal())  # nothing cached: the next request verifies afresh
    again.release.set()
    await cache.verify_shared(key, again)
    assert again.runs == 1


async def test_a_client_going_away_does_not_cancel_the_others_verification() -> None:
    cache = PrincipalCache(RevocationCounter(), ttl_s=60)
    key, who = cache.key("t"), _principal()
    verify = _Verifier(who)
    leaver = asyncio.create_task(cache.verify_shared(key, verify))
    stayer = asyncio.create_task(cache.verify_shared(key, verify))
    await asyncio.sleep(0)
    leaver.cancel()
    await asyncio.sleep(0)
    verify.release.set()
    assert await stayer is who
    assert leaver.cancelled() and verify.runs == 1
