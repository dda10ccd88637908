"""The hot read path's page cache (page_cache.py, ADR 0022): a hit answers exactly what the route
answers, a committed write (in this process or another one on the data directory) is seen on
the next read, revocations still act on the next request, tenants never share pages, a TTL of
0 turns it off, and concurrent misses share one render."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import Counter
from sqlalchemy import select, update

from a2z.cli import build_parser, server_settings
from a2z.records import Batch, Conn
from a2z.server.agents import service as agents
from a2z.server.agents.models import Agent
from a2z.server.app import build_context, create_app
from a2z.server.config import Settings
from a2z.server.context import ServerContext
from a2z.server.events import service as events
from a2z.server.events import usage
from a2z.server.hot_reads import ROUTES, HotRead
from a2z.server.page_cache import Page, PageCache, PageGenerations, PageKey
from tests.server.conftest import PASSWORD, TenantFixture, login, make_tenant
from tests.server.test_hot_reads import _populate

EVENTS, AGENTS = "/api/v1/events", "/api/v1/agents"
LONG_TTL_MS = 600_000  # so only a write (not the TTL) can explain a fresh page


def _total(counter: Counter) -> float:
    return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))


def _hits(ctx: ServerContext) -> float:
    return _total(ctx.metrics.page_cache_hits)


def _misses(ctx: ServerContext) -> float:
    return _total(ctx.metrics.page_cache_misses)


def _context(store_url: str, data_dir: Path, ttl_ms: int) -> ServerContext:
    settings = Settings(
        data_dir=data_dir, db_url=store_url, pool_size=2, agent_port=None, hot_read_ttl_ms=ttl_ms
    )
    return build_context(settings)


@pytest.fixture
def cached(store_url: str, tmp_path: Path) -> Iterator[tuple[ServerContext, TestClient]]:
    """A server whose pages would live ten minutes: only invalidation can make them fresh."""
    ctx = _context(store_url, tmp_path, LONG_TTL_MS)
    with TestClient(create_app(context=ctx)) as client:
        yield ctx, client
    ctx.sessions.engine.dispose()


def _primed(client: TestClient, ctx: ServerContext, path: str, headers: dict[str, str]) -> Any:
    """Request ``path`` until it is a cache hit (route, then render, then hit); the hit's body."""
    client.get(path, headers=headers)  # the route: caches the credential
    client.get(path, headers=headers)  # the hot path renders and keeps the page
    before = _hits(ctx)
    resp = client.get(path, headers=headers)
    assert resp.status_code == 200, resp.text
    assert _hits(ctx) == before + 1
    return resp.json()


def _batch(tenant: TenantFixture, seq: int, uid: str) -> Batch:
    record = Conn(
        ts=1_800_000_000.0 + seq, uid=uid, orig_h="10.9.9.9", orig_p=1234,
        resp_h="192.0.2.1", resp_p=443, proto="tcp", conn_state="SF",
    )  # fmt: skip
    return Batch(
        agent_id=str(tenant.agent_id), boot_epoch=1, seq=seq, sent_at=0.0, records=[record]
    )


# --- what a hit answers ------------------------------------------------------------------------


@pytest.mark.parametrize("path", [EVENTS, f"{EVENTS}?limit=3", AGENTS, f"{AGENTS}?limit=2"])
def test_a_hit_is_byte_for_byte_the_routes_answer(
    cached: tuple[ServerContext, TestClient], tenant_a: TenantFixture, path: str
) -> None:
    ctx, client = cached
    _populate(ctx, tenant_a)
    headers = login(client, tenant_a)
    hot_before = _total(ctx.metrics.hot_reads)
    by_route = client.get(path, headers=headers)  # a new credential: FastAPI answers
    assert _total(ctx.metrics.hot_reads) == hot_before
    rendered = client.get(path, headers=headers)
    hits = _hits(ctx)
    hit = client.get(path, headers=headers)
    assert _hits(ctx) == hits + 1
    assert by_route.status_code == rendered.status_code == hit.status_code == 200
    assert by_route.content == rendered.content == hit.content
    assert by_route.headers["content-type"] == hit.headers["content-type"]
    assert int(hit.headers["content-length"]) == len(hit.content)


def test_each_cursor_page_is_its_own_entry(
    cached: tuple[ServerContext, TestClient], tenant_a: TenantFixture
) -> None:
    ctx, client = cached
    _populate(ctx, tenant_a)
    headers = login(client, tenant_a)
    first = _primed(client, ctx, f"{EVENTS}?limit=2", headers)
    second = _primed(client, ctx, f"{EVENTS}?limit=2&cursor={first['next_cursor']}", headers)
    assert {i["uid"] for i in first["items"]}.isdisjoint({i["uid"] for i in second["items"]})


# --- writes are seen on the next read ----------------------------------------------------------


def test_ingested_events_are_seen_on_the_next_read(
    cached: tuple[ServerContext, TestClient], tenant_a: TenantFixture
) -> None:
    ctx, client = cached
    headers = login(client, tenant_a)
    before = _primed(client, ctx, EVENTS, headers)
    with ctx.sessions.tenant(tenant_a.id) as session:  # ingest's write: array insert or ORM,
        # then the agent's progress and the usage upsert (single Core statements)
        events.store_batch(
            session=session, agent_id=tenant_a.agent_id, batch=_batch(tenant_a, 1, "NEW1")
        )
    after = client.get(EVENTS, headers=headers).json()
    assert [i["uid"] for i in after["items"]][:1] == ["NEW1"]
    assert len(after["items"]) == len(before["items"]) + 1


def test_agent_changes_through_the_api_are_seen_on_the_next_read(
    cached: tuple[ServerContext, TestClient], tenant_a: TenantFixture
) -> None:
    ctx, client = cached
    headers = login(client, tenant_a)
    listed = _primed(client, ctx, AGENTS, headers)
    agent_id = listed["items"][0]["id"]
    assert (
        client.patch(f"{AGENTS}/{agent_id}", json={"name": "renamed"}, headers=headers).status_code
        == 200
    )
    assert [a["name"] for a in client.get(AGENTS, headers=headers).json()["items"]] == ["renamed"]
    _primed(client, ctx, AGENTS, headers)
    assert client.delete(f"{AGENTS}/{agent_id}", headers=headers).status_code == 204
    assert client.get(AGENTS, headers=headers).json()["items"] == []


def test_single_statement_writes_bump_the_generation(
    ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    """The agent's batch progress and the usage upsert run on the connection, past the ORM."""
    seen: list[uuid.UUID | None] = []
    ctx.sessions.watch_writes(seen.append)
    with ctx.sessions.tenant(tenant_a.id) as session:
        agents.record_batch(session=session, agent_id=tenant_a.agent_id, boot_epoch=1, seq=7)
    with ctx.sessions.tenant(tenant_a.id) as session:
        usage.add(session=session, rows=[(1_800_000_000.0, 100)])
    assert seen == [tenant_a.id, tenant_a.id]


def test_what_counts_as_a_write(ctx: ServerContext, tenant_a: TenantFixture) -> None:
    seen: list[uuid.UUID | None] = []
    ctx.sessions.watch_writes(seen.append)
    with ctx.sessions.tenant(tenant_a.id) as session:  # a read: nothing
        session.scalars(select(Agent)).all()
    assert seen == []

    def create_then_fail() -> None:
        with ctx.sessions.tenant(tenant_a.id) as session:
            agents.create(session=session, name="rolled-back")
            session.flush()
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        create_then_fail()
    assert seen == []  # rolled back: nothing changed
    with ctx.sessions.tenant(tenant_a.id) as session:
        agents.create(session=session, name="kept")
    assert seen == [tenant_a.id]
    with ctx.sessions.system() as session:  # a system write of tenant rows: every tenant
        session.execute(update(Agent).where(Agent.id == uuid.uuid4()).values(name="x"))
    assert seen == [tenant_a.id, None]


_OTHER_PROCESS = """
import sys, uuid
from pathlib import Path
from a2z.server.agents import service as agents
from a2z.server.config import Settings
from a2z.server.page_cache import PageGenerations
from a2z.server.store.engine import open_store
from a2z.server.store.session import SessionFactory

url, data_dir, tenant = sys.argv[1:4]
settings = Settings(data_dir=Path(data_dir), db_url=url)
engine = open_store(settings.database_url, app_role=settings.app_role, pool_size=1)
sessions = SessionFactory(engine)
sessions.watch_writes(PageGenerations(settings.page_generations_path).bump)
with sessions.tenant(uuid.UUID(tenant)) as session:
    agents.create(session=session, name="from-another-process")
engine.dispose()
"""


def test_a_write_by_another_process_on_the_data_directory_is_seen(
    cached: tuple[ServerContext, TestClient], tenant_a: TenantFixture, store_url: str
) -> None:
    ctx, client = cached
    headers = login(client, tenant_a)
    before = _primed(client, ctx, AGENTS, headers)
    subprocess.run(
        [
            sys.executable,
            "-c",
            _OTHER_PROCESS,
            store_url,
            str(ctx.settings.data_dir),
            str(tenant_a.id),
        ],
        check=True,
        timeout=120,
    )
    names = {a["name"] for a in client.get(AGENTS, headers=headers).json()["items"]}
    assert names == {a["name"] for a in before["items"]} | {"from-another-process"}


def test_two_caches_on_one_generation_file(tmp_path: Path) -> None:
    """What --workers relies on: a bump through one mapping is read through another."""
    one, two = PageGenerations(tmp_path / "g"), PageGenerations(tmp_path / "g")
    a, b = uuid.uuid4(), uuid.uuid4()
    start_a, start_b = two.read(a), two.read(b)
    one.bump(a)
    assert two.read(a) == start_a + 1
    one.bump(None)  # every tenant
    assert two.read(a) == start_a + 2 and two.read(b) > start_b


# --- authentication still acts on every request ------------------------------------------------


def test_logout_and_revoked_keys_end_a_hit_at_once(
    cached: tuple[ServerContext, TestClient], tenant_a: TenantFixture
) -> None:
    ctx, client = cached
    owner = login(client, tenant_a)
    _primed(client, ctx, AGENTS, owner)
    assert client.post("/api/v1/auth/logout", headers=owner).status_code == 204
    assert client.get(AGENTS, headers=owner).status_code == 401

    owner = login(client, tenant_a)
    created = client.post(
        "/api/v1/api-keys", json={"name": "poller", "role": "viewer"}, headers=owner
    )
    assert created.status_code == 201, created.text
    key = {"Authorization": f"Bearer {created.json()['key']}"}
    _primed(client, ctx, AGENTS, key)
    revoked = client.delete(f"/api/v1/api-keys/{created.json()['id']}", headers=owner)
    assert revoked.status_code == 204
    assert client.get(AGENTS, headers=key).status_code == 401


def test_role_changes_and_removal_act_on_the_next_request(
    cached: tuple[ServerContext, TestClient], tenant_a: TenantFixture
) -> None:
    ctx, client = cached
    owner = login(client, tenant_a)
    email = "viewer@alpha.test"
    made = client.post(
        "/api/v1/users",
        json={"email": email, "password": PASSWORD, "role": "viewer"},
        headers=owner,
    )
    assert made.status_code == 201, made.text
    viewer = login(client, tenant_a, email)
    _primed(client, ctx, AGENTS, viewer)
    changed = client.patch(
        f"/api/v1/users/{made.json()['id']}", json={"role": "analyst"}, headers=owner
    )
    assert changed.status_code == 200
    hits = _hits(ctx)
    assert client.get(AGENTS, headers=viewer).status_code == 200  # verified again, by the route
    assert _hits(ctx) == hits
    assert client.get("/api/v1/auth/me", headers=viewer).json()["role"] == "analyst"
    _primed(client, ctx, AGENTS, viewer)
    assert client.delete(f"/api/v1/users/{made.json()['id']}", headers=owner).status_code == 204
    assert client.get(AGENTS, headers=viewer).status_code in (401, 403)


def test_tenants_never_share_a_page(
    cached: tuple[ServerContext, TestClient], tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    ctx, client = cached
    _populate(ctx, tenant_a)
    _populate(ctx, tenant_b)
    b_headers = login(client, tenant_b)
    for path in (EVENTS, AGENTS):
        _primed(client, ctx, path, b_headers)  # B's pages are in the cache first
    a_headers = login(client, tenant_a)
    for path in (EVENTS, AGENTS):
        page = _primed(client, ctx, path, a_headers)
        assert page["items"]
        assert "bravo" not in repr(page) and "Ubravo" not in repr(page)


# --- the TTL ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "ttl_ms", "access_log"),
    [
        ([], 1000, True),
        (["--bus", "nats://n:4222"], 0, True),  # other hosts may write: off unless asked
        (["--bus", "nats://n:4222", "--hot-read-ttl-ms", "300"], 300, True),
        (["--hot-read-ttl-ms", "0", "--no-access-log"], 0, False),
    ],
)
def test_server_options(argv: list[str], ttl_ms: int, access_log: bool) -> None:
    settings = server_settings(build_parser().parse_args(["server", *argv]))
    assert (settings.hot_read_ttl_ms, settings.access_log, settings.freeze_gc) == (
        ttl_ms,
        access_log,
        True,
    )


def test_ttl_zero_turns_the_cache_off(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _context(store_url, tmp_path, 0)
    tenant = make_tenant(ctx, "alpha")
    calls = _count_renders(monkeypatch, AGENTS)
    try:
        with TestClient(create_app(context=ctx)) as client:
            headers = login(client, tenant)
            for _ in range(4):
                assert client.get(AGENTS, headers=headers).status_code == 200
        assert calls == [1, 1, 1]  # the route answered the first; the hot path the others
        assert _hits(ctx) == _misses(ctx) == 0
    finally:
        ctx.sessions.engine.dispose()


def test_a_page_older_than_the_ttl_is_rendered_again(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _context(store_url, tmp_path, 200)
    tenant = make_tenant(ctx, "alpha")
    calls = _count_renders(monkeypatch, AGENTS)
    try:
        with TestClient(create_app(context=ctx)) as client:
            headers = login(client, tenant)
            client.get(AGENTS, headers=headers)  # the route
            client.get(AGENTS, headers=headers)  # rendered
            client.get(AGENTS, headers=headers)  # a hit, unless this host is very slow
            time.sleep(0.25)
            client.get(AGENTS, headers=headers)  # too old: rendered again
        assert len(calls) in (2, 3)
        assert _hits(ctx) == 3 - len(calls)
    finally:
        ctx.sessions.engine.dispose()


def _count_renders(monkeypatch: pytest.MonkeyPatch, path: str, delay: float = 0.0) -> list[int]:
    """Replace ``path``'s hot page function by one that counts (and optionally waits)."""
    calls: list[int] = []
    route = ROUTES[path]

    def counted(*args: Any) -> dict[str, Any]:
        calls.append(1)
        time.sleep(delay)
        return route.page(*args)

    monkeypatch.setitem(ROUTES, path, HotRead(counted, route.default_limit, route.max_limit))
    return calls


# --- stampedes ----------------------------------------------------------------------------------


def test_concurrent_misses_share_one_render(
    cached: tuple[ServerContext, TestClient],
    tenant_a: TenantFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctx, client = cached
    headers = login(client, tenant_a)
    assert client.get(AGENTS, headers=headers).status_code == 200  # credential cached
    calls = _count_renders(monkeypatch, AGENTS, delay=0.3)

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await asyncio.gather(*(http.get(AGENTS, headers=headers) for _ in range(20)))

    answers = asyncio.run(burst())
    assert {r.status_code for r in answers} == {200}
    assert len({r.content for r in answers}) == 1
    assert calls == [1]
    assert _total(ctx.metrics.page_cache_coalesced) == 19


def test_an_expired_page_is_served_while_its_renewal_runs_but_not_after_a_write() -> None:
    generations = PageGenerations()
    cache = PageCache(generations, ttl_s=0.05)
    tenant = uuid.uuid4()
    key: PageKey = (tenant, AGENTS, 50, None)

    async def run() -> list[bytes]:
        release = asyncio.Event()
        seen: list[bytes] = []

        async def render(body: bytes) -> Page:
            await release.wait()
            return Page.of(body)

        release.set()
        old = await cache.page(key, lambda: render(b"old"))
        assert old is not None
        await asyncio.sleep(0.06)  # older than the TTL
        release.clear()
        renewal = asyncio.create_task(cache.page(key, lambda: render(b"new")))
        await asyncio.sleep(0)
        during = await cache.page(key, lambda: render(b"unused"))  # does not wait
        assert during is not None
        seen.append(cast(bytes, during.body["body"]))
        generations.bump(tenant)  # a write: the old page must not be served any more
        after_write = asyncio.create_task(cache.page(key, lambda: render(b"written")))
        await asyncio.sleep(0)
        assert not after_write.done()
        release.set()
        for task in (renewal, after_write):
            page = await task
            assert page is not None
            seen.append(cast(bytes, page.body["body"]))
        return seen

    assert asyncio.run(run()) == [b"old", b"new", b"written"]


def test_a_render_started_before_a_write_is_not_shared_after_it() -> None:
    generations = PageGenerations()
    cache = PageCache(generations, ttl_s=60)
    tenant = uuid.uuid4()
    key: PageKey = (tenant, AGENTS, 50, None)
    renders: list[int] = []

    async def run() -> tuple[Page | None, Page | None]:
        release = asyncio.Event()

        async def render() -> Page:
            renders.append(1)
            n = len(renders)
            await release.wait()
            return Page.of(b'{"n":%d}' % n)

        first = asyncio.create_task(cache.page(key, render))
        await asyncio.sleep(0)
        generations.bump(tenant)  # a write commits while the first render runs
        second = asyncio.create_task(cache.page(key, render))
        await asyncio.sleep(0)
        release.set()
        return await first, await second

    first, second = asyncio.run(run())
    assert renders == [1, 1]
    assert first is not None and second is not None and first.body != second.body
