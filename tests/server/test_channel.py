"""The record channel: acks after storage, de-duplication, bad frames, spoofed agent ids."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
from fastapi.testclient import TestClient
from websockets.asyncio.client import connect

from a2z.agent.identity import IdentityFiles
from a2z.records import Batch, Conn, encode_batch
from a2z.server.context import ServerContext
from tests.server.conftest import TenantFixture, enrolled, login


def conn(i: int) -> Conn:
    return Conn(
        ts=1_700_000_000.0 + i, uid=f"C{i}", orig_h="10.0.0.1", orig_p=40000 + i,
        resp_h="10.0.0.2", resp_p=80, proto="tcp", conn_state="SF",
    )  # fmt: skip


def frame(agent_id: str, seq: int, n: int = 3, epoch: int = 1) -> bytes:
    records = [conn(seq * 100 + i) for i in range(n)]
    return encode_batch(
        Batch(agent_id=agent_id, boot_epoch=epoch, seq=seq, sent_at=0.0, records=records)
    )


def events(client: TestClient, tenant: TenantFixture) -> list[dict[str, object]]:
    items: list[dict[str, object]] = client.get(
        "/api/v1/events?limit=1000", headers=login(client, tenant)
    ).json()["items"]
    return items


def exchange(url: str, files: IdentityFiles, frames: list[bytes]) -> list[dict[str, object]]:
    async def run() -> list[dict[str, object]]:
        async with connect(url, ssl=files.client_context()) as ws:
            out = []
            for f in frames:
                await ws.send(f)
                out.append(msgspec.json.decode(await ws.recv()))
            return out

    return asyncio.run(run())


def test_resent_batch_adds_no_rows_on_same_or_new_connection(
    client: TestClient,
    ctx: ServerContext,
    tenant_a: TenantFixture,
    gateway: str,
    tmp_path: Path,
) -> None:
    config = enrolled(ctx, tenant_a, gateway, tmp_path)
    files = IdentityFiles(Path(config.identity_dir))
    f = frame(config.agent_id, seq=7)
    for _ in range(2):  # as after a lost ack: twice on one connection, then on a new one
        assert [r["ack"] for r in exchange(config.server, files, [f, f])] == [7, 7]
    assert len(events(client, tenant_a)) == 3
    assert ctx.metrics.events_duplicate._value.get() == 9


def test_garbage_frame_is_refused_and_stream_continues(
    client: TestClient,
    ctx: ServerContext,
    tenant_a: TenantFixture,
    gateway: str,
    tmp_path: Path,
) -> None:
    config = enrolled(ctx, tenant_a, gateway, tmp_path)
    replies = exchange(
        config.server,
        IdentityFiles(Path(config.identity_dir)),
        [b"\x28\xb5\x2f\xfd garbage", frame(config.agent_id, 2)],
    )
    assert "ack" not in replies[0]
    assert "zstd" in str(replies[0]["error"])
    assert replies[1]["ack"] == 2
    assert len(events(client, tenant_a)) == 3
    assert ctx.metrics.wire_errors.labels("decode")._value.get() == 1


def test_batch_naming_another_agent_is_refused(
    client: TestClient,
    ctx: ServerContext,
    tenant_a: TenantFixture,
    tenant_b: TenantFixture,
    gateway: str,
    tmp_path: Path,
) -> None:
    config = enrolled(ctx, tenant_a, gateway, tmp_path)
    spoofed = frame(str(tenant_b.agent_id), seq=1)  # tenant B's agent id, sent with A's certificate
    reply = exchange(config.server, IdentityFiles(Path(config.identity_dir)), [spoofed])[0]
    assert reply["nack"] == 1
    assert "retry" not in reply
    assert events(client, tenant_a) == []
    assert events(client, tenant_b) == []
