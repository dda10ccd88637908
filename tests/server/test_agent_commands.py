"""Commands on real TLS over loopback: issued through the API, delivered to a connected agent
(or to one that connects later), answered once, stored with a capped result, audited."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from a2z import __version__
from a2z.agent.config import AgentConfig
from a2z.agent.service import ship_records
from a2z.records import Record
from a2z.server.audit.models import AuditEvent
from a2z.server.context import ServerContext
from tests.server.conftest import TenantFixture, enrolled, login


class RunningAgent:
    """An enrolled agent connected to the gateway, idle (ticks only) until stopped."""

    def __init__(self, config: AgentConfig) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(ship_records(config, self._ticks())), daemon=True
        )

    def _ticks(self) -> Iterator[Record | None]:
        while not self._stop.wait(0.05):
            yield None

    def __enter__(self) -> RunningAgent:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()


def settle(
    client: TestClient, url: str, headers: dict[str, str], seconds: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        shown: dict[str, Any] = client.get(url, headers=headers).json()
        if shown["status"] in ("acked", "failed", "expired"):
            return shown
        if time.monotonic() > deadline:
            pytest.fail(f"command never settled: {shown}")
        time.sleep(0.05)


def agent_config(
    ctx: ServerContext, tenant: TenantFixture, gateway: str, tmp_path: Path
) -> AgentConfig:
    return msgspec.structs.replace(
        enrolled(ctx, tenant, gateway, tmp_path), heartbeat_interval_s=0.3
    )


def test_command_round_trip_and_its_audit_entries(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, gateway: str, tmp_path: Path
) -> None:
    config = agent_config(ctx, tenant_a, gateway, tmp_path)
    headers = login(client, tenant_a)
    base = f"/api/v1/agents/{config.agent_id}/commands"
    with RunningAgent(config):
        issued = client.post(
            base, json={"kind": "collect-diagnostics", "args": {"max_bytes": 8192}}, headers=headers
        )
        assert issued.status_code == 201, issued.text
        assert issued.json()["status"] in ("queued", "sent")
        done = settle(client, f"{base}/{issued.json()['id']}", headers)
        failing = client.post(base, json={"kind": "restart-capture"}, headers=headers).json()
        refused = settle(client, f"{base}/{failing['id']}", headers)
    assert done["status"] == "acked", done
    bundle = done["result"]
    assert bundle["version"] == __version__
    assert bundle["config"]["batch_size"] == 500
    assert "channel" in bundle and "logs" in bundle
    assert len(msgspec.json.encode(bundle)) <= 8192
    assert done["sent_at"] is not None and done["finished_at"] is not None
    assert refused["status"] == "failed"
    assert "not capturing" in refused["error"]
    listed = client.get(base, headers=headers).json()["items"]
    assert [c["id"] for c in listed] == [done["id"], refused["id"]]

    with ctx.sessions.tenant(tenant_a.id) as session:
        rows = session.execute(
            select(AuditEvent.action, AuditEvent.actor, AuditEvent.target, AuditEvent.outcome)
            .where(AuditEvent.action.like("agent.command.%"))
            .order_by(AuditEvent.at)
        ).all()
    entries = [(a, o) for a, _, t, o in rows if t == f"command:{done['id']}"]
    assert entries == [("agent.command.issue", "success"), ("agent.command.result", "success")]
    assert any(
        a == "agent.command.result" and o == "failure" and actor == f"agent:{config.agent_id}"
        for a, actor, _, o in rows
    )


def test_command_for_an_offline_agent_is_delivered_when_it_connects(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, gateway: str, tmp_path: Path
) -> None:
    config = agent_config(ctx, tenant_a, gateway, tmp_path)
    headers = login(client, tenant_a)
    put = client.put(
        f"/api/v1/agents/{config.agent_id}/config", json={"batch_size": 42}, headers=headers
    )
    base = f"/api/v1/agents/{config.agent_id}/commands"
    queued = client.post(base, json={"kind": "set-config"}, headers=headers).json()
    assert queued["status"] == "queued"
    assert queued["args"]["config"]["batch_size"] == 42
    time.sleep(0.3)
    assert client.get(f"{base}/{queued['id']}", headers=headers).json()["status"] == "queued"
    with RunningAgent(config):
        done = settle(client, f"{base}/{queued['id']}", headers)
        shown = client.get(f"/api/v1/agents/{config.agent_id}/config", headers=headers).json()
    assert done["status"] == "acked", done
    assert done["result"] == {"version": put.json()["desired_version"], "applied": True}
    assert shown["applied_version"] == shown["desired_version"]


def test_bad_command_arguments_are_refused(client: TestClient, tenant_a: TenantFixture) -> None:
    headers = login(client, tenant_a)
    base = f"/api/v1/agents/{tenant_a.agent_id}/commands"
    for body in (
        {"kind": "collect-diagnostics", "args": {"max_bytes": 10}},
        {"kind": "collect-diagnostics", "args": {"max_bytes": 10_000_000}},
        {"kind": "reload-rules", "args": {"force": True}},
        {"kind": "upgrade"},
        {"kind": "set-config"},  # nothing configured yet
        {"kind": "format-disk"},
    ):
        assert client.post(base, json=body, headers=headers).status_code == 422, body
    assert client.get(base, headers=headers).json()["items"] == []
