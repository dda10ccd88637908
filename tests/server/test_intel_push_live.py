"""Threat intel reaches a running agent on real TLS over loopback: indicators imported through
the API arrive as a whole set, the agent's edge stage alerts on a record holding one, and a
delete arrives as a delta (not the whole set again) and silences it."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from a2z.agent.config import AgentConfig
from a2z.agent.detect import EdgeDetector
from a2z.agent.service import ship_records
from a2z.records import Conn, IntelPush, Record
from a2z.server.agents import channel
from a2z.server.context import ServerContext
from a2z.server.events import service as events
from a2z.server.events.models import Event
from tests.server.conftest import TenantFixture, enrolled, login

BAD = "203.0.113.66"


class FeedingAgent:
    """An enrolled agent with edge detection; records are fed to it one by one by the test."""

    def __init__(self, config: AgentConfig) -> None:
        self.feed: queue.Queue[Record | None] = queue.Queue()
        self._stop = threading.Event()
        detector = EdgeDetector(enable_builtins=False)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(ship_records(config, self._records(), detector=detector)),
            daemon=True,
        )

    def _records(self) -> Iterator[Record | None]:
        while not self._stop.is_set():
            try:
                yield self.feed.get(timeout=0.05)
            except queue.Empty:
                yield None

    def __enter__(self) -> FeedingAgent:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()


def wait_until(what: str, check: Callable[[], Any], seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def intel_alerts(ctx: ServerContext, tenant: TenantFixture) -> list[tuple[str, dict[str, Any]]]:
    with ctx.sessions.tenant(tenant.id) as session:
        rows = session.scalars(select(Event).where(Event.path == "alert")).all()
        found = [(str(r.agent_id), events.record_of(r)) for r in rows]
    return [(agent, a) for agent, a in found if str(a.get("rule_id", "")).startswith("a2z-intel-")]


def conn(uid: str) -> Conn:
    return Conn(
        ts=time.time(), uid=uid, orig_h="10.20.0.5", orig_p=41000, resp_h=BAD, resp_p=443,
        proto="tcp", conn_state="SF",
    )  # fmt: skip


def test_imported_indicators_reach_the_agent_and_deletes_follow_as_deltas(
    client: TestClient,
    ctx: ServerContext,
    tenant_a: TenantFixture,
    gateway: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[IntelPush] = []
    real = channel.intel_pushes

    def recording(*args: Any) -> list[IntelPush]:
        out = real(*args)
        sent.extend(out)
        return out

    monkeypatch.setattr(channel, "intel_pushes", recording)
    config = msgspec.structs.replace(
        enrolled(ctx, tenant_a, gateway, tmp_path), heartbeat_interval_s=0.3
    )
    headers = login(client, tenant_a)
    resp = client.post(
        "/api/v1/intel/indicators/import",
        json={"content": f"{BAD}\nother.example\n", "source": "live-feed", "confidence": 90},
        headers=headers,
    )
    assert resp.status_code == 200, resp.text
    agent_url = f"/api/v1/agents/{config.agent_id}"

    def agent_at_current() -> bool:
        want = client.get("/api/v1/intel/stats", headers=headers).json()["agent_version"]
        return bool(client.get(agent_url, headers=headers).json()["intel_version"] == want)

    with FeedingAgent(config) as agent:
        wait_until("the agent to apply the imported set", agent_at_current)
        assert [p.full for p in sent] == [True]
        agent.feed.put(conn("Cbad1"))
        [(source, alert)] = wait_until("the edge alert", lambda: intel_alerts(ctx, tenant_a))
        assert source == config.agent_id  # raised at the edge, not again by the backend
        assert alert["uids"] == ["Cbad1"] and alert["attack"] == ["T1071"]
        assert "live-feed" in alert["title"]

        [row] = client.get(f"/api/v1/intel/indicators?prefix={BAD}", headers=headers).json()[
            "items"
        ]
        assert (
            client.delete(f"/api/v1/intel/indicators/{row['id']}", headers=headers).status_code
            == 204
        )
        wait_until("the agent to apply the delete", agent_at_current)
        assert [p.full for p in sent] == [True, False]  # the delete came as a delta
        agent.feed.put(conn("Cbad2"))
        agent.feed.put(Conn(ts=time.time(), uid="Cmark", orig_h="10.20.0.5", orig_p=1,
                            resp_h="10.20.0.6", resp_p=2, proto="tcp"))  # fmt: skip

        def marker_stored() -> bool:
            with ctx.sessions.tenant(tenant_a.id) as session:
                return (
                    session.scalars(select(Event).where(Event.uid == "Cmark")).first() is not None
                )

        wait_until("the records after the delete", marker_stored)
    assert len(intel_alerts(ctx, tenant_a)) == 1  # Cbad2 raised nothing anywhere
    shown = client.get(agent_url, headers=headers).json()
    assert shown["intel_rejected_reason"] is None
