"""The agent gateway on real TLS over loopback: enrollment, mutual TLS, revocation, clones."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from a2z.agent.enroll import EnrollmentError, enroll, renew
from a2z.agent.identity import IdentityFiles
from a2z.records import Batch, Conn, encode_batch
from a2z.server.agents import service as agents
from a2z.server.agents.models import Agent
from a2z.server.audit.models import AuditEvent
from a2z.server.context import ServerContext
from a2z.server.events.models import Event
from a2z.server.pki import service as pki
from a2z.server.pki.models import AgentCert
from a2z.server.pki.service import _tenant_ca
from a2z.server.pki.x509 import AgentIdentity, cert_pem, key_pem, make_ca, make_csr, sign_agent_csr
from tests.server.conftest import TenantFixture, enrolled, login, token_for


def count(ctx: ServerContext, tenant: TenantFixture, model: type) -> int:
    with ctx.sessions.tenant(tenant.id) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def batch(agent_id: str, seq: int, n: int = 5) -> bytes:
    records = [
        Conn(
            ts=1.0 + i,
            uid=f"C{seq}-{i}",
            orig_h="10.0.0.1",
            orig_p=1000 + i,
            resp_h="10.0.0.2",
            resp_p=80,
            proto="tcp",
        )
        for i in range(n)
    ]
    return encode_batch(
        Batch(agent_id=agent_id, boot_epoch=7, seq=seq, sent_at=0.0, records=records)
    )


async def send(url: str, tls: ssl.SSLContext, frames: list[bytes]) -> list[dict[str, object]]:
    async with connect(url, ssl=tls, open_timeout=10) as ws:
        replies = []
        for frame in frames:
            await ws.send(frame)
            replies.append(msgspec.json.decode(await ws.recv()))
        return replies


def test_enroll_then_stream_over_mutual_tls(
    ctx: ServerContext, tenant_a: TenantFixture, gateway: str, tmp_path: Path
) -> None:
    config = enrolled(ctx, tenant_a, gateway, tmp_path)
    files = IdentityFiles(Path(config.identity_dir))
    assert files.key.stat().st_mode & 0o777 == 0o600
    assert config.tenant_id == str(tenant_a.id)
    replies = asyncio.run(
        send(
            config.server,
            files.client_context(),
            [batch(config.agent_id, 1), batch(config.agent_id, 1)],
        )
    )
    assert [r["ack"] for r in replies] == [1, 1]
    assert count(ctx, tenant_a, Event) == 5  # the re-sent batch added nothing
    with ctx.sessions.tenant(tenant_a.id) as session:
        agent = session.get(Agent, (tenant_a.id, uuid.UUID(config.agent_id)))
        assert agent is not None
        assert agent.name == "sensor-1"
        assert session.scalars(
            select(AuditEvent.action).where(AuditEvent.action == "agent.enroll")
        ).all() == ["agent.enroll"]


def test_wrong_pin_refuses_before_sending_the_token(
    ctx: ServerContext, tenant_a: TenantFixture, gateway: str, tmp_path: Path
) -> None:
    token = token_for(ctx, tenant_a)
    with pytest.raises(EnrollmentError, match="does not match the pin"):
        enroll(gateway, token, "0" * 64, tmp_path / "x", "x")
    # The token was never presented, so it is still good.
    enroll(gateway, token, ctx.root.pin, tmp_path / "y", "y")


@pytest.mark.parametrize("case", ["reused", "expired", "revoked", "tampered-tenant", "garbage"])
def test_bad_enrollment_tokens_are_refused_and_store_nothing(
    ctx: ServerContext,
    tenant_a: TenantFixture,
    tenant_b: TenantFixture,
    gateway: str,
    tmp_path: Path,
    case: str,
) -> None:
    agents_before = count(ctx, tenant_a, Agent) + count(ctx, tenant_b, Agent)
    token = token_for(
        ctx, tenant_a, ttl=timedelta(seconds=1) if case == "expired" else timedelta(minutes=5)
    )
    if case == "reused":
        enroll(gateway, token, ctx.root.pin, tmp_path / "first", "first")
        agents_before += 1
    elif case == "expired":
        time.sleep(1.5)
    elif case == "revoked":
        with ctx.sessions.tenant(tenant_a.id) as session:
            for row in agents.list_enrollment_tokens(session=session, limit=10, cursor=None).items:
                row.revoked_at = datetime.now(UTC)
    elif case == "tampered-tenant":
        token = token.replace(tenant_a.id.hex, tenant_b.id.hex)
    else:
        token = "a2ze_garbage"
    with pytest.raises(EnrollmentError, match="refused"):
        enroll(gateway, token, ctx.root.pin, tmp_path / "second", "second")
    assert count(ctx, tenant_a, Agent) + count(ctx, tenant_b, Agent) == agents_before


def _forge_client(
    tmp_path: Path, ctx: ServerContext, cert: bytes, key: ec.EllipticCurvePrivateKey
) -> ssl.SSLContext:
    (tmp_path / "forged.pem").write_bytes(cert)
    (tmp_path / "forged.key").write_bytes(key_pem(key))
    tls = ssl.create_default_context(cadata=cert_pem(ctx.root.cert).decode())
    tls.load_cert_chain(tmp_path / "forged.pem", tmp_path / "forged.key")
    return tls


def _issue(
    ctx: ServerContext,
    ca_tenant: uuid.UUID,
    identity: AgentIdentity,
    *,
    not_before: datetime | None = None,
    lifetime: timedelta = timedelta(hours=1),
    record: bool = True,
) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    """A certificate signed by ``ca_tenant``'s CA for ``identity`` (possibly another tenant's)."""
    key = ec.generate_private_key(ec.SECP256R1())
    with ctx.sessions.tenant(ca_tenant) as session:
        ca, ca_key = _tenant_ca(session, ctx.root, ctx.secret)
        cert = sign_agent_csr(
            ca, ca_key, make_csr(key), identity, lifetime=lifetime, not_before=not_before
        )  # type: ignore[arg-type]
        if record:
            session.add(
                AgentCert(
                    tenant_id=ca_tenant,
                    serial=format(cert.serial_number, "x"),
                    agent_id=identity.agent_id,
                    fingerprint="x",
                    not_after=cert.not_valid_after_utc,
                )
            )
    return cert_pem(cert) + cert_pem(ca), key


@pytest.mark.parametrize("case", ["no-cert", "foreign-ca", "expired", "revoked", "wrong-tenant"])
def test_channel_refuses_bad_client_certificates(
    ctx: ServerContext,
    tenant_a: TenantFixture,
    tenant_b: TenantFixture,
    gateway: str,
    tmp_path: Path,
    case: str,
) -> None:
    config = enrolled(ctx, tenant_a, gateway, tmp_path)
    agent_id = uuid.UUID(config.agent_id)
    root_only = ssl.create_default_context(cadata=cert_pem(ctx.root.cert).decode())
    if case == "no-cert":
        tls = root_only
    elif case == "foreign-ca":
        ca, ca_key = make_ca("evil root")
        key = ec.generate_private_key(ec.SECP256R1())
        cert = sign_agent_csr(
            ca,
            ca_key,
            make_csr(key),
            AgentIdentity(tenant_a.id, agent_id),
            lifetime=timedelta(hours=1),
        )
        tls = _forge_client(tmp_path, ctx, cert_pem(cert), key)
    elif case == "expired":
        start = datetime.now(UTC) - timedelta(days=2)
        tls = _forge_client(
            tmp_path,
            ctx,
            *_issue(
                ctx,
                tenant_a.id,
                AgentIdentity(tenant_a.id, agent_id),
                not_before=start,
                lifetime=timedelta(days=1),
            ),
        )
    elif case == "revoked":
        tls = IdentityFiles(Path(config.identity_dir)).client_context()
        with ctx.sessions.tenant(tenant_a.id) as session:
            for row in session.scalars(select(AgentCert)):
                row.revoked_at = datetime.now(UTC)
    else:  # tenant A's CA signs a certificate that claims an agent of tenant B
        with ctx.sessions.tenant(tenant_b.id) as session:
            victim = agents.create(session=session, name="victim")
        tls = _forge_client(
            tmp_path, ctx, *_issue(ctx, tenant_a.id, AgentIdentity(tenant_b.id, victim.id))
        )
    # TLS 1.3 checks the client certificate after the client finished its handshake, so a
    # refusal can surface as a dropped connection (InvalidHandshake) rather than an SSLError.
    with pytest.raises((InvalidHandshake, ssl.SSLError, ConnectionClosed, OSError)):
        asyncio.run(send(config.server, tls, [batch(str(agent_id), 1)]))
    assert count(ctx, tenant_a, Event) == 0
    assert count(ctx, tenant_b, Event) == 0


def test_revocation_closes_an_open_channel(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, gateway: str, tmp_path: Path
) -> None:
    config = enrolled(ctx, tenant_a, gateway, tmp_path)
    tls = IdentityFiles(Path(config.identity_dir)).client_context()

    async def scenario() -> tuple[float, int | None]:
        async with connect(config.server, ssl=tls) as ws:
            await ws.send(batch(config.agent_id, 1))
            assert msgspec.json.decode(await ws.recv())["ack"] == 1
            resp = await asyncio.to_thread(
                client.delete, f"/api/v1/agents/{config.agent_id}", headers=login(client, tenant_a)
            )
            assert resp.status_code == 204
            start = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), timeout=60)
            return time.monotonic() - start, closed.value.rcvd.code if closed.value.rcvd else None

    elapsed, code = asyncio.run(scenario())
    assert code == 1008
    assert elapsed < 60  # the promise; the test configures a 0.5 s re-check


def test_two_live_connections_with_one_identity_are_flagged(
    ctx: ServerContext, tenant_a: TenantFixture, gateway: str, tmp_path: Path
) -> None:
    config = enrolled(ctx, tenant_a, gateway, tmp_path)
    tls = IdentityFiles(Path(config.identity_dir)).client_context

    async def scenario() -> None:
        async with (
            connect(config.server, ssl=tls()) as first,
            connect(config.server, ssl=tls()) as second,
        ):
            for ws, seq in ((first, 1), (second, 2)):
                await ws.send(batch(config.agent_id, seq))
                assert msgspec.json.decode(await ws.recv())["ack"] == seq

    asyncio.run(scenario())
    with ctx.sessions.tenant(tenant_a.id) as session:
        agent = session.get(Agent, (tenant_a.id, uuid.UUID(config.agent_id)))
        assert agent is not None
        assert agent.clone_suspected_at is not None
        assert "agent.clone_suspected" in session.scalars(select(AuditEvent.action)).all()


def test_renewal_issues_a_new_certificate_that_streams(
    ctx: ServerContext, tenant_a: TenantFixture, gateway: str, tmp_path: Path
) -> None:
    config = enrolled(ctx, tenant_a, gateway, tmp_path)
    files = IdentityFiles(Path(config.identity_dir))
    before = files.certificate().serial_number
    asyncio.run(renew(config))
    assert files.certificate().serial_number != before
    assert files.key.stat().st_mode & 0o777 == 0o600
    replies = asyncio.run(send(config.server, files.client_context(), [batch(config.agent_id, 3)]))
    assert replies[0]["ack"] == 3


def test_oversize_frame_closes_the_channel_with_1009(
    ctx: ServerContext, tenant_a: TenantFixture, gateway: str, tmp_path: Path
) -> None:
    from a2z.records import MAX_FRAME_BYTES

    config = enrolled(ctx, tenant_a, gateway, tmp_path)

    async def run() -> int | None:
        tls = IdentityFiles(Path(config.identity_dir)).client_context()
        async with connect(config.server, ssl=tls, max_size=None) as ws:
            await ws.send(b"\0" * (MAX_FRAME_BYTES + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), timeout=30)
            return closed.value.rcvd.code if closed.value.rcvd else None

    assert asyncio.run(run()) == 1009
    assert count(ctx, tenant_a, Event) == 0


def test_a_slow_certificate_check_does_not_stall_other_agents(
    ctx: ServerContext,
    tenant_a: TenantFixture,
    gateway: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The handshake's certificate lookup runs off the event loop (which also serves the REST
    API): while one agent's lookup waits on the database, another agent connects and is acked."""
    slow = enrolled(ctx, tenant_a, gateway, tmp_path, "slow")
    fast = enrolled(ctx, tenant_a, gateway, tmp_path, "fast")
    held, release = threading.Event(), threading.Event()
    real = pki.authenticate_certificate

    def lookup(*, sessions: object, der: bytes) -> AgentIdentity:
        identity = real(sessions=sessions, der=der)  # type: ignore[arg-type]
        if str(identity.agent_id) == slow.agent_id:
            held.set()
            release.wait(30)  # a database that takes its time
        return identity

    monkeypatch.setattr(pki, "authenticate_certificate", lookup)

    async def both() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        slow_files = IdentityFiles(Path(slow.identity_dir))
        fast_files = IdentityFiles(Path(fast.identity_dir))
        waiting = asyncio.create_task(
            send(slow.server, slow_files.client_context(), [batch(slow.agent_id, 1)])
        )
        assert await asyncio.to_thread(held.wait, 10), "the slow agent's lookup never started"
        try:
            other = await send(fast.server, fast_files.client_context(), [batch(fast.agent_id, 1)])
        finally:
            release.set()
        return other, await waiting

    other, late = asyncio.run(both())
    assert [r["ack"] for r in other] == [1] and [r["ack"] for r in late] == [1]
