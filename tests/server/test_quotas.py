"""Per-tenant limits: the token bucket, operator settings (API and CLI, audited), and flow
control on the agent channel: an over-quota tenant is deferred and spools, others flow."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import event, select

from a2z.agent.identity import IdentityFiles
from a2z.agent.ship.channel import ChannelClient
from a2z.records import Batch, decode_batch
from a2z.server.agents import channel
from a2z.server.audit.models import AuditEvent
from a2z.server.context import ServerContext
from a2z.server.events import views as event_views
from a2z.server.events.maintenance import stored_rows
from a2z.server.metrics import ServerMetrics
from a2z.server.quotas.limiter import TokenBucket
from a2z.server.quotas.service import OverLimit, Quotas
from a2z.server.tenants import service as tenants
from a2z.server.tenants.models import Role
from tests.server.conftest import PASSWORD, TenantFixture, enrolled, login
from tests.server.test_admin_cli import admin
from tests.server.test_channel import conn, exchange, frame


def test_bucket_spends_burst_then_refills_at_rate() -> None:
    bucket = TokenBucket.full(rate=10, burst=20, now=0.0)
    assert bucket.take(15, now=0.0) == 0.0
    assert bucket.take(10, now=0.0) == pytest.approx(0.5)  # 5 left, 5 more at 10/s
    assert bucket.take(10, now=0.5) == 0.0
    assert bucket.take(1, now=0.5) == pytest.approx(0.1)
    assert bucket.take(20, now=100.0) == 0.0  # never more than the burst saved up
    assert bucket.take(1, now=100.0) > 0


def test_bucket_lets_an_oversize_request_through_when_full_and_keeps_the_debt() -> None:
    bucket = TokenBucket.full(rate=10, burst=20, now=0.0)
    assert bucket.take(50, now=0.0) == 0.0  # bigger than the bucket: passes once, in debt
    assert bucket.take(1, now=0.0) == pytest.approx(3.1)  # 30 owed + 1, at 10/s
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket.full(rate=0, burst=1, now=0.0)


def operator_headers(
    client: TestClient, ctx: ServerContext, tenant: TenantFixture
) -> dict[str, str]:
    email = f"operator@{tenant.name}.test"
    with ctx.sessions.tenant(tenant.id) as session:
        tenants.create_user(session=session, email=email, password=PASSWORD, role=Role.OPERATOR)
    return login(client, tenant, email)


def test_operator_sets_limits_retention_and_region_audited(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    headers = operator_headers(client, ctx, tenant_a)
    url = f"/api/v1/tenants/{tenant_a.id}"
    body = client.get(url, headers=headers).json()
    assert body["retention_days"] == 30 and body["events_per_second"] is None
    assert (body["stored_events"], body["stored_bytes"]) == (0, 0)
    changes = {"retention_days": 7, "region": "eu-west-1", "events_per_second": 100,
               "burst_events": 300, "max_stored_bytes": 10**9}  # fmt: skip
    resp = client.patch(url, json=changes, headers=headers)
    assert resp.status_code == 200, resp.text
    assert {k: resp.json()[k] for k in changes} == changes
    # Only what is sent changes; null lifts a limit.
    resp = client.patch(url, json={"events_per_second": None}, headers=headers)
    assert resp.json()["events_per_second"] is None and resp.json()["retention_days"] == 7
    assert ctx.quotas.policy(tenant_a.id).events_per_second is None  # applied at once here
    with ctx.sessions.tenant(tenant_a.id) as session:
        updates = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "tenant.update").order_by(AuditEvent.at)
        ).all()
    assert [json.loads(u.detail)["events_per_second"] for u in updates] == [
        [None, 100],
        [100, None],
    ]
    for bad in ({"retention_days": 0}, {"retention_days": None}, {"region": "EU WEST"},
                {"events_per_second": 0}, {"tenant_id": str(tenant_b.id)}):  # fmt: skip
        assert client.patch(url, json=bad, headers=headers).status_code == 422, bad
    # Not granted (another tenant), or not an operator: the tenant does not exist for them.
    assert client.get(f"/api/v1/tenants/{tenant_b.id}", headers=headers).status_code == 404
    owner = login(client, tenant_a)
    assert client.patch(url, json={"retention_days": 1}, headers=owner).status_code == 404


def test_admin_cli_sets_and_clears_tenant_settings(tmp_path: Path) -> None:
    admin(tmp_path, "tenant", "create", "acme")
    done = admin(tmp_path, "tenant", "set", "acme", "--retention-days", "3", "--region", "eu-1",
                 "--events-per-second", "50", "--max-stored-bytes", "1000000")  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["retention_days"], out["region"], out["events_per_second"]) == ("3", "eu-1", "50")
    out = json.loads(admin(tmp_path, "tenant", "set", "acme", "--events-per-second", "none").stdout)
    assert out["events_per_second"] == "None" and out["max_stored_bytes"] == "1000000"
    bad = admin(tmp_path, "tenant", "set", "acme", "--region", "Not A Region")
    assert bad.returncode == 2 and "region" in bad.stderr
    out = json.loads(admin(tmp_path, "tenant", "set", "acme", "--anomaly-threshold", "0.9").stdout)
    assert out["anomaly_threshold"] == "0.9"
    bad = admin(tmp_path, "tenant", "set", "acme", "--anomaly-threshold", "1.5")
    assert bad.returncode == 2 and "anomaly-threshold" in bad.stderr


def test_operator_sets_the_anomaly_threshold_within_zero_to_one(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    headers = operator_headers(client, ctx, tenant_a)
    url = f"/api/v1/tenants/{tenant_a.id}"
    assert client.get(url, headers=headers).json()["anomaly_threshold"] is None  # the default
    resp = client.patch(url, json={"anomaly_threshold": 0.95}, headers=headers)
    assert resp.status_code == 200 and resp.json()["anomaly_threshold"] == 0.95
    for bad in (0, 1.01, -0.5, "high"):
        resp = client.patch(url, json={"anomaly_threshold": bad}, headers=headers)
        assert resp.status_code == 422, bad
    assert client.patch(url, json={"anomaly_threshold": None}, headers=headers).status_code == 200
    assert client.get(url, headers=headers).json()["anomaly_threshold"] is None


def set_limits(ctx: ServerContext, tenant: TenantFixture, **changes: int | None) -> None:
    with ctx.sessions.system() as session:
        tenants.update_settings(session=session, tenant_id=tenant.id, changes=dict(changes))
    ctx.quotas.reload(tenant.id)


def test_channel_defers_an_over_rate_batch_with_retry_after(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, gateway: str, tmp_path: Path
) -> None:
    set_limits(ctx, tenant_a, events_per_second=1, burst_events=5)
    config = enrolled(ctx, tenant_a, gateway, tmp_path)
    files = IdentityFiles(Path(config.identity_dir))
    # The first batch empties the bucket; the second needs 5 s of refill, far more than a
    # loaded machine takes between two frames.
    replies = exchange(
        f"{gateway}/channel", files, [frame(config.agent_id, s, n=5) for s in (1, 2)]
    )
    assert replies[0] == {"ack": 1, "epoch": 1}
    assert replies[1]["nack"] == 2 and replies[1]["retry"] is True
    assert 0 < float(replies[1]["retry_after"]) <= 5  # type: ignore[arg-type]
    assert stored_rows(ctx.sessions, tenant_a.id) == 5
    value = ctx.metrics.registry.get_sample_value
    assert value("a2z_events_throttled_total", {"stage": "gateway", "limit": "rate"}) == 5


def test_over_storage_limit_is_deferred_until_the_limit_allows(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, gateway: str, tmp_path: Path
) -> None:
    config = enrolled(ctx, tenant_a, gateway, tmp_path)
    files = IdentityFiles(Path(config.identity_dir))
    assert exchange(f"{gateway}/channel", files, [frame(config.agent_id, 1)])[0]["ack"] == 1
    set_limits(ctx, tenant_a, max_stored_bytes=10)  # already over it
    reply = exchange(f"{gateway}/channel", files, [frame(config.agent_id, 2)])[0]
    assert reply["nack"] == 2 and reply["retry_after"] == 60
    with pytest.raises(OverLimit):
        ctx.quotas.admit(tenant_a.id, 1, stage="test")
    set_limits(ctx, tenant_a, max_stored_bytes=None)
    assert exchange(f"{gateway}/channel", files, [frame(config.agent_id, 2)])[0]["ack"] == 2
    assert stored_rows(ctx.sessions, tenant_a.id) == 6


async def batches(agent_id: str, count: int, size: int) -> AsyncIterator[Batch]:
    for seq in range(1, count + 1):
        records = [conn(seq * 1000 + i) for i in range(size)]
        yield Batch(agent_id=agent_id, boot_epoch=1, seq=seq, sent_at=time.time(), records=records)


def test_rate_limit_holds_across_server_processes(
    ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    """Two API processes admitting one tenant's batches (here: two ``Quotas`` over one store)
    share its bucket on PostgreSQL, so the tenant gets its rate once, not once per process. The
    embedded server (SQLite) is one process; its bucket lives in memory."""
    set_limits(ctx, tenant_a, events_per_second=1, burst_events=100)
    set_limits(ctx, tenant_b, events_per_second=1, burst_events=100)
    other = Quotas(ctx.sessions, ServerMetrics())  # the second process
    ctx.quotas.admit(tenant_a.id, 80, stage="test")
    if ctx.sessions.engine.dialect.name == "postgresql":
        assert ctx.quotas.blocking(tenant_a.id)  # each admission is a database round trip
        with pytest.raises(OverLimit) as refused:
            other.admit(tenant_a.id, 80, stage="test")
        assert 50 <= refused.value.retry_after_s <= 61  # 60 tokens short at 1/s
        other.admit(tenant_a.id, 20, stage="test")  # what is left, from either process
        with pytest.raises(OverLimit):
            ctx.quotas.admit(tenant_a.id, 5, stage="test")
    else:
        other.admit(tenant_a.id, 80, stage="test")  # its own bucket
    # Another tenant's bucket is its own.
    other.admit(tenant_b.id, 100, stage="test")
    # A changed limit starts a full bucket everywhere.
    set_limits(ctx, tenant_a, events_per_second=1, burst_events=200)
    other.reload(tenant_a.id)
    other.admit(tenant_a.id, 150, stage="test")


def test_a_refusal_proven_by_the_last_one_costs_no_database_round_trip(
    ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    """A tenant over its rate keeps offering batches; on PostgreSQL (shared bucket) those the
    last refusal proves short are refused from memory, the rest still ask the store."""
    set_limits(ctx, tenant_a, events_per_second=1, burst_events=100)
    ctx.quotas.admit(tenant_a.id, 60, stage="test")  # 40 tokens left
    with pytest.raises(OverLimit):
        ctx.quotas.admit(tenant_a.id, 50, stage="test")
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(ctx.sessions.engine, "before_cursor_execute", count)
    try:
        with pytest.raises(OverLimit) as refused:
            ctx.quotas.admit(tenant_a.id, 45, stage="test")
        assert 4 <= refused.value.retry_after_s <= 5  # 5 tokens short at 1/s
        if ctx.sessions.engine.dialect.name == "postgresql":
            assert not ctx.quotas.blocking(tenant_a.id, 45)
            assert statements == []
        ctx.quotas.admit(tenant_a.id, 30, stage="test")  # fits the 40: the store admits it
    finally:
        event.remove(ctx.sessions.engine, "before_cursor_execute", count)


def test_two_admitters_sharing_one_bucket_stay_within_rate_burst_and_their_blocks(
    ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    """Two processes (two ``Quotas`` in two threads) admitting one tenant's batches as fast as
    they can: each leases blocks from the shared bucket and admits from them in memory, and
    together they never admit more than ``rate * t + burst + N * block`` (ADR 24; from the
    bucket's creation even ``rate * t + burst``), with far fewer bucket transactions than
    batches. On SQLite (one process) the one in-memory bucket gives the same bound."""
    rate, burst, size, attempts = 100, 100, 10, 150
    set_limits(ctx, tenant_a, events_per_second=rate, burst_events=burst)
    pg = ctx.sessions.engine.dialect.name == "postgresql"
    admitters = [ctx.quotas, Quotas(ctx.sessions, ctx.metrics)] if pg else [ctx.quotas]
    admitted = [0] * len(admitters)

    def run(index: int) -> None:
        for _ in range(attempts):
            try:
                admitters[index].admit(tenant_a.id, size, stage="test")
            except OverLimit:
                continue
            admitted[index] += size

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(admitters))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    block = min(rate * ctx.quotas.lease_s, burst / 2)
    # A slow machine only adds time, i.e. allowance: the bound cannot fail for being slow.
    assert sum(admitted) <= rate * elapsed + burst + len(admitters) * block
    assert sum(admitted) >= burst  # the first full bucket was admitted, not lost in leases
    value = ctx.metrics.registry.get_sample_value
    taken = value("a2z_quota_leases_total", {"outcome": "taken"}) or 0.0
    if pg:  # a lease serves several batches: fewer bucket transactions than batches admitted
        assert 0 < taken < sum(admitted) / size
    else:
        assert taken == 0  # the embedded server's bucket is in memory: nothing to lease


def test_a_lease_hands_its_unused_tokens_back_with_the_next_one(
    ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    """Tokens one process leased and did not use return to the shared bucket when it next
    leases (after its lease expired), so another process can admit them."""
    now = [0.0]
    first = Quotas(ctx.sessions, ctx.metrics, clock=lambda: now[0], lease_s=40.0)
    second = Quotas(ctx.sessions, ctx.metrics)
    set_limits(ctx, tenant_a, events_per_second=1, burst_events=100)
    first.admit(tenant_a.id, 10, stage="test")  # leases a block of 40: 30 left over
    if ctx.sessions.engine.dialect.name != "postgresql":
        # One process, one in-memory bucket per ``Quotas``: no lease, nothing to hand back.
        first.admit(tenant_a.id, 90, stage="test")
        with pytest.raises(OverLimit):
            first.admit(tenant_a.id, 5, stage="test")
        assert (
            ctx.metrics.registry.get_sample_value("a2z_quota_leases_total", {"outcome": "taken"})
            is None
        )
        return
    assert not first.blocking(tenant_a.id, 30)  # the lease covers it: no round trip
    with pytest.raises(OverLimit):
        second.admit(tenant_a.id, 70, stage="test")  # the bucket holds ~60
    now[0] = 100.0  # past the first lease's expiry (and its policy cache: reloaded)
    with pytest.raises(OverLimit):
        first.admit(tenant_a.id, 100, stage="test")  # hands back 30: ~90 there, not 100
    # Only the handed-back 30 make this possible. (Asked of a third process: the second's
    # memory of its refusal does not know of tokens handed back since, and errs on refusing.)
    Quotas(ctx.sessions, ctx.metrics).admit(tenant_a.id, 85, stage="test")
    value = ctx.metrics.registry.get_sample_value
    assert value("a2z_quota_lease_tokens_total", {"event": "returned"}) == 30
    assert value("a2z_quota_leases_expired_total") == 1


def test_a_tenant_held_at_its_rate_is_told_to_come_back_for_a_whole_block(
    ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    """After a refusal on the shared bucket, the deferral (and the memory of it) waits for a
    block's worth of tokens, not just the batch's: a tenant pinned at its rate then leases whole
    blocks, one transaction per block, instead of one batch's worth per transaction."""
    quotas = Quotas(ctx.sessions, ctx.metrics, lease_s=40.0)  # block: 40 tokens at 1/s
    set_limits(ctx, tenant_a, events_per_second=1, burst_events=100)
    quotas.admit(tenant_a.id, 100, stage="test")
    with pytest.raises(OverLimit) as refused:
        quotas.admit(tenant_a.id, 5, stage="test")
    if ctx.sessions.engine.dialect.name == "postgresql":
        assert 30 <= refused.value.retry_after_s <= 40  # a block (40), not the batch (5)
        with pytest.raises(OverLimit) as again:
            quotas.refuse_early(tenant_a.id, 5, stage="test")  # from memory, same bound
        assert 30 <= again.value.retry_after_s <= 40
    else:  # the embedded server's in-memory bucket: the batch's own wait
        assert 0 < refused.value.retry_after_s <= 5


def test_frames_over_the_rate_are_refused_from_their_header_never_decoded(
    client: TestClient,
    ctx: ServerContext,
    tenant_a: TenantFixture,
    gateway: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once a tenant is refused, its next frames are answered from their header (seq, epoch,
    record count) without decoding their records, with the same deferral as before; a frame
    that may pass is decoded and admitted as usual, so a re-send after the wait is stored once."""
    set_limits(ctx, tenant_a, events_per_second=1, burst_events=5)
    config = enrolled(ctx, tenant_a, gateway, tmp_path)
    files = IdentityFiles(Path(config.identity_dir))
    decoded: list[int] = []

    def counting(data: bytes) -> Batch:
        batch = decode_batch(data)
        decoded.append(batch.seq)
        return batch

    monkeypatch.setattr(channel, "decode_batch", counting)
    frames = [frame(config.agent_id, s, n=5) for s in (1, 2, 3, 4)]
    replies = exchange(f"{gateway}/channel", files, frames)
    assert replies[0] == {"ack": 1, "epoch": 1}
    for seq, reply in zip((2, 3, 4), replies[1:], strict=True):
        assert reply["nack"] == seq and reply["epoch"] == 1 and reply["retry"] is True
        assert 0 < float(reply["retry_after"]) <= 5  # type: ignore[arg-type]
    # Seq 2 was decoded and refused by the bucket; 3 and 4 were refused from their header.
    assert decoded == [1, 2]
    value = ctx.metrics.registry.get_sample_value
    assert value("a2z_frames_refused_undecoded_total", {"limit": "rate"}) == 2
    assert value("a2z_events_throttled_total", {"stage": "gateway", "limit": "rate"}) == 15
    # The agent re-sends once allowed: here the operator lifts the limit; stored exactly once.
    set_limits(ctx, tenant_a, events_per_second=None, burst_events=None)
    again = exchange(f"{gateway}/channel", files, frames[1:] + frames[:1])
    assert [r.get("ack") for r in again] == [2, 3, 4, 1]
    assert stored_rows(ctx.sessions, tenant_a.id) == 20


def test_tenant_at_ten_times_its_quota_is_throttled_others_flow_nothing_lost(
    client: TestClient,
    ctx: ServerContext,
    tenant_a: TenantFixture,
    tenant_b: TenantFixture,
    gateway: str,
    tmp_path: Path,
) -> None:
    rate, burst, size = 400, 400, 100
    total = 10 * rate  # ten times what A may send in a second, offered at once
    set_limits(ctx, tenant_a, events_per_second=rate, burst_events=burst)
    agent_a = enrolled(ctx, tenant_a, gateway, tmp_path, "sensor-a")
    agent_b = enrolled(ctx, tenant_b, gateway, tmp_path, "sensor-b")

    def client_for(config: object) -> ChannelClient:
        files = IdentityFiles(Path(config.identity_dir))  # type: ignore[attr-defined]
        return ChannelClient(f"{gateway}/channel", ssl=files.client_context(), window=4)

    ship_a, ship_b = client_for(agent_a), client_for(agent_b)

    async def run() -> tuple[float, float]:
        started = time.monotonic()
        b_done = 0.0

        async def b() -> None:
            nonlocal b_done
            await ship_b.ship(batches(agent_b.agent_id, total // size, size))
            b_done = time.monotonic() - started

        async with asyncio.TaskGroup() as tg:
            tg.create_task(ship_a.ship(batches(agent_a.agent_id, total // size, size)))
            tg.create_task(b())
        return time.monotonic() - started, b_done

    elapsed, _ = asyncio.run(run())
    # A was throttled and kept its batches until allowed, on its one connection (flow control
    # costs the server no handshake per deferral): every one stored exactly once...
    assert ship_a.stats.throttled > 0 and ship_a.stats.connections == 1
    assert ship_a.stats.records_acked == total == stored_rows(ctx.sessions, tenant_a.id)
    # ...and never faster than its bucket: what got in is bounded by burst + rate * time
    # (plus one batch, which the bucket lets through whole). A slow machine only adds time.
    assert total <= burst + rate * elapsed + size
    # B, with no limit, was never deferred and stored everything.
    assert ship_b.stats.throttled == 0 and not ship_b.stats.refused
    assert stored_rows(ctx.sessions, tenant_b.id) == total
    value = ctx.metrics.registry.get_sample_value
    assert value("a2z_events_throttled_total", {"stage": "gateway", "limit": "rate"}) >= size


def test_http_sender_over_its_rate_gets_429_problem_with_retry_after(
    client: TestClient,
    ctx: ServerContext,
    tenant_a: TenantFixture,
    tenant_b: TenantFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_limits(ctx, tenant_a, events_per_second=1, burst_events=3)
    decoded: list[tuple[str, int]] = []

    def counting(data: bytes) -> Batch:
        batch = decode_batch(data)
        decoded.append((batch.agent_id, batch.seq))
        return batch

    monkeypatch.setattr(event_views, "decode_batch", counting)
    url = "/api/v1/events/batches"

    def send(tenant: TenantFixture, seq: int) -> Response:
        return client.post(
            url,
            content=frame(str(tenant.agent_id), seq, n=3),
            headers={"Authorization": f"Bearer {tenant.agent_token}"},
        )

    first = send(tenant_a, 1)
    assert (first.status_code, first.json()) == (202, {"ack": 1, "epoch": 1})
    over = send(tenant_a, 2)
    assert over.status_code == 429 and over.headers["content-type"] == "application/problem+json"
    assert int(over.headers["retry-after"]) >= 1 and "event rate" in over.json()["detail"]
    # While A is refused, its next batches are answered from their header, never decoded.
    again = send(tenant_a, 3)
    assert again.status_code == 429 and int(again.headers["retry-after"]) >= 1
    assert decoded == [(str(tenant_a.agent_id), 1), (str(tenant_a.agent_id), 2)]
    value = ctx.metrics.registry.get_sample_value
    assert value("a2z_frames_refused_undecoded_total", {"limit": "rate"}) == 1
    assert value("a2z_events_throttled_total", {"stage": "http", "limit": "rate"}) == 6
    for seq in range(1, 6):  # the other tenant is not held back by A's limit
        assert send(tenant_b, seq).status_code == 202
    assert stored_rows(ctx.sessions, tenant_a.id) == 3
    assert stored_rows(ctx.sessions, tenant_b.id) == 15
    # A batch naming another agent, or not a batch at all, is refused and stores nothing.
    forged = client.post(
        url,
        content=frame(str(tenant_b.agent_id), 9),
        headers={"Authorization": f"Bearer {tenant_a.agent_token}"},
    )
    garbage = client.post(
        url, content=b"not a batch", headers={"Authorization": f"Bearer {tenant_b.agent_token}"}
    )
    assert (forged.status_code, garbage.status_code) == (422, 422)
    assert stored_rows(ctx.sessions, tenant_b.id) == 15
