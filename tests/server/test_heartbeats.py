"""Heartbeats: the agent reports its health on the channel; the API shows it and liveness."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import msgspec
from fastapi.testclient import TestClient
from websockets.asyncio.client import connect

from a2z import __version__
from a2z.agent.identity import IdentityFiles
from a2z.agent.service import ship_records
from a2z.records import Batch, BudgetReport, Conn, Heartbeat, encode_batch
from a2z.server.agents.models import Agent
from a2z.server.context import ServerContext
from a2z.server.store.base import utcnow
from tests.server.conftest import TenantFixture, enrolled, login


def beat(**overrides: object) -> str:
    fields: dict[str, object] = dict(
        ts=1.0, version="9.9.9", config_version=3, cpu_percent=0.4, rss_bytes=30_000_000,
        records_per_s=12.5, records_acked=100, reconnects=1, drops=0, spool_bytes=4096,
    )  # fmt: skip
    return msgspec.json.encode(Heartbeat(**{**fields, **overrides})).decode()  # type: ignore[arg-type]


SHEDDING = BudgetReport(
    state="shedding", cpu_level=1, memory_level=0, max_flows=12288, shed_protocols=["http", "ssl"],
    cpu_percent=130.0, rss_bytes=30_000_000, shed_flows=17, evicted_flows=0, cpu_sheds=1,
    memory_sheds=0,
)  # fmt: skip


def frame(agent_id: str, seq: int) -> bytes:
    rec = Conn(
        ts=1.0, uid="C1", orig_h="10.0.0.1", orig_p=1, resp_h="10.0.0.2", resp_p=2, proto="tcp"
    )
    return encode_batch(Batch(agent_id=agent_id, boot_epoch=1, seq=seq, sent_at=0.0, records=[rec]))


def test_heartbeat_is_shown_and_ages_into_offline(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, gateway: str, tmp_path: Path
) -> None:
    config = enrolled(ctx, tenant_a, gateway, tmp_path)
    headers = login(client, tenant_a)
    url = f"/api/v1/agents/{config.agent_id}"
    assert client.get(url, headers=headers).json()["status"] == "never"

    async def run() -> None:
        async with connect(
            config.server, ssl=IdentityFiles(Path(config.identity_dir)).client_context()
        ) as ws:
            await ws.send("{not json")  # a bad control frame is counted and dropped ...
            await ws.send(beat(budget=SHEDDING))
            await ws.send(frame(config.agent_id, 1))  # ... and the stream goes on
            assert msgspec.json.decode(await ws.recv())["ack"] == 1

    asyncio.run(run())
    shown = client.get(url, headers=headers).json()
    assert shown["status"] == "online"
    assert shown["version"] == "9.9.9"
    assert shown["config_version"] == 3
    assert shown["health"]["spool_bytes"] == 4096
    budget = shown["health"]["budget"]  # the resource budget's state, as the agent reported it
    assert (budget["state"], budget["cpu_level"], budget["shed_flows"]) == ("shedding", 1, 17)
    assert ctx.metrics.wire_errors.labels("control")._value.get() == 1

    with ctx.sessions.tenant(tenant_a.id) as session:  # three missed heartbeats later
        agent = session.get(Agent, (tenant_a.id, uuid.UUID(config.agent_id)))
        assert agent is not None
        agent.last_heartbeat_at = utcnow() - timedelta(
            seconds=ctx.settings.agent_offline_after_s + 1
        )
    assert client.get(url, headers=headers).json()["status"] == "offline"


def test_agent_sends_heartbeats_while_shipping(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, gateway: str, tmp_path: Path
) -> None:
    config = msgspec.structs.replace(
        enrolled(ctx, tenant_a, gateway, tmp_path), heartbeat_interval_s=0.1
    )
    records = [
        Conn(
            ts=float(i),
            uid=f"C{i}",
            orig_h="10.0.0.1",
            orig_p=i,
            resp_h="10.0.0.2",
            resp_p=80,
            proto="tcp",
        )
        for i in range(300)
    ]
    stats = asyncio.run(ship_records(config, records, rate=600.0))  # ~0.5 s: several beats
    assert stats.records_acked == 300
    shown = client.get(f"/api/v1/agents/{config.agent_id}", headers=login(client, tenant_a)).json()
    assert shown["status"] == "online"
    assert shown["version"] == __version__
    assert shown["health"]["rss_bytes"] > 0
    assert ctx.metrics.heartbeats._value.get() >= 2


def test_heartbeat_running_a_rejected_version_clears_the_rejection(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, gateway: str, tmp_path: Path
) -> None:
    config = enrolled(ctx, tenant_a, gateway, tmp_path)
    agent_id = uuid.UUID(config.agent_id)
    with ctx.sessions.tenant(tenant_a.id) as session:
        agent = session.get(Agent, (tenant_a.id, agent_id))
        assert agent is not None
        agent.config_rejected_version, agent.config_rejected_reason = 3, "bad filter"

    async def report(version: int) -> None:
        async with connect(
            config.server, ssl=IdentityFiles(Path(config.identity_dir)).client_context()
        ) as ws:
            await ws.send(beat(config_version=version))
            await ws.send(frame(config.agent_id, version))  # acked after the beat is handled
            assert msgspec.json.decode(await ws.recv())["ack"] == version

    url = f"/api/v1/agents/{config.agent_id}/config"
    headers = login(client, tenant_a)
    asyncio.run(report(2))  # still running an older one: the rejection stands
    assert client.get(url, headers=headers).json()["rejected_version"] == 3
    asyncio.run(report(3))  # e.g. after a set-config command re-applied it successfully
    shown = client.get(url, headers=headers).json()
    assert (shown["rejected_version"], shown["rejected_reason"]) == (None, None)
