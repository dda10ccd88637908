"""Tenant rules reach a running agent on real TLS over loopback (ADR 13).

A rule enabled through the API is pushed to the connected agent, which compiles it and raises
its alert at the edge on a replayed capture of real tools (curl fetching /robots.txt, in
src/a2z/demo/data/attack.pcap). Disabling the rule removes it from the agent. A set with a
rule the agent cannot compile is rejected, the API shows why, and the old set keeps running.
The applied set is kept in the agent's state directory and resumed by a restarted agent.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

import a2z.rules.compile
from a2z.agent.detect import EdgeDetector
from a2z.agent.pushed_rules import PushedRules
from a2z.agent.replay import iter_records
from a2z.agent.service import ship_records
from a2z.records import Record
from a2z.rules.catalog import ruleset_digest
from a2z.rules.errors import UnsupportedRuleError
from a2z.server.audit.models import AuditEvent
from a2z.server.context import ServerContext
from a2z.server.events import service as events
from a2z.server.events.models import Event
from tests.server.conftest import TenantFixture, enrolled, login

DEMO = Path(__file__).resolve().parents[2] / "src" / "a2z" / "demo" / "data" / "attack.pcap"
MARK = "agent-cannot-run"  # titles with this are refused by the agent's compiler (patched)


def http_rule(rule_id: uuid.UUID, uri: str, title: str) -> str:
    return (
        f"title: {title}\nid: {rule_id}\nlogsource:\n  product: zeek\n  service: http\n"
        f"detection:\n  selection:\n    uri: '{uri}'\n  condition: selection\nlevel: medium\n"
    )


def wait_for(read: Callable[[], Any], done: Callable[[Any], bool], seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        shown = read()
        if done(shown):
            return shown
        if time.monotonic() > deadline:
            pytest.fail(f"never reached the expected state: {shown}")
        time.sleep(0.05)


class ScriptedAgent:
    """An enrolled agent with edge detection that replays the capture once per ``play()``."""

    def __init__(self, config: Any, detector: EdgeDetector) -> None:
        self.records = tuple(iter_records(DEMO))
        self._go: list[threading.Event] = []
        self._played: list[threading.Event] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(ship_records(config, self._source(), detector=detector)),
            daemon=True,
        )

    def _source(self) -> Iterator[Record | None]:
        played = 0
        while True:
            while not self._wake.wait(0.05):
                yield None
            self._wake.clear()
            if self._stop.is_set():
                return
            yield from self.records
            played += 1
            self._played[played - 1].set()

    def play(self) -> None:
        done = threading.Event()
        self._played.append(done)
        self._wake.set()
        assert done.wait(60), "the replay did not finish"

    def __enter__(self) -> ScriptedAgent:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive()


def edge_alerts(ctx: ServerContext, tenant: TenantFixture, agent_id: str, rule_id: str) -> int:
    """Alerts of ``rule_id`` the agent itself raised (its own stream, not the detect role's)."""
    with ctx.sessions.tenant(tenant.id) as session:
        rows = session.scalars(
            select(Event).where(Event.path == "alert", Event.agent_id == uuid.UUID(agent_id))
        ).all()
        return sum(1 for row in rows if events.record_of(row)["rule_id"] == rule_id)


def test_tenant_rules_reach_the_agent_and_raise_alerts_at_the_edge(
    client: TestClient,
    ctx: ServerContext,
    tenant_a: TenantFixture,
    gateway: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = msgspec.structs.replace(
        enrolled(ctx, tenant_a, gateway, tmp_path), heartbeat_interval_s=0.3
    )
    headers = login(client, tenant_a)
    agent_url = f"/api/v1/agents/{config.agent_id}"

    def shown() -> dict[str, Any]:
        body: dict[str, Any] = client.get(agent_url, headers=headers).json()
        return body

    def edge_digest() -> str:
        return str(client.get("/api/v1/rules/effective", headers=headers).json()["edge_digest"])

    def running(detector: EdgeDetector) -> set[str]:
        return {r.rule_id for r in detector.rules.rules} if detector.rules is not None else set()

    robots = uuid.uuid4()
    detector = EdgeDetector()
    with ScriptedAgent(config, detector) as agent:
        # On connect: the shipped rules (the agent runs none yet).
        initial = edge_digest()
        wait_for(shown, lambda s: s["rules_digest"] == initial)
        assert len(running(detector)) == len(
            [r for r in ctx.rules_catalog if not r.source.startswith("correlation/")]
        )

        # Enabling a tenant rule pushes the new set; the replay raises it at the edge.
        resp = client.post(
            "/api/v1/rules",
            json={"yaml": http_rule(robots, "/robots.txt", "robots.txt fetched")},
            headers=headers,
        )
        assert resp.status_code == 201, resp.text
        with_robots = edge_digest()
        assert with_robots != initial
        wait_for(shown, lambda s: s["rules_digest"] == with_robots)
        assert str(robots) in running(detector)
        agent.play()
        wait_for(lambda: edge_alerts(ctx, tenant_a, config.agent_id, str(robots)), bool)

        # Disabling it removes it from the agent: a second replay raises no new alert.
        off = client.patch(f"/api/v1/rules/{robots}", json={"enabled": False}, headers=headers)
        assert off.status_code == 200, off.text
        without = edge_digest()
        wait_for(shown, lambda s: s["rules_digest"] == without)
        assert str(robots) not in running(detector)
        agent.play()

        # A rule this agent cannot compile: the set is refused, the old one keeps running.
        real_compile = a2z.rules.compile.compile_yaml

        def agent_compile(source: str, *, path: str | None = None) -> Any:
            if MARK in source:
                raise UnsupportedRuleError("a feature this agent version lacks")
            return real_compile(source, path=path)

        monkeypatch.setattr(a2z.rules.compile, "compile_yaml", agent_compile)
        kept = detector.rules
        unknown = uuid.uuid4()
        resp = client.post(
            "/api/v1/rules",
            json={"yaml": http_rule(unknown, "/admin", f"{MARK} admin page")},
            headers=headers,
        )
        assert resp.status_code == 201, resp.text  # the server's compiler takes it
        refused = edge_digest()
        state = wait_for(shown, lambda s: s["rules_rejected_digest"] == refused)
        assert state["rules_digest"] == without  # still running the previous set
        assert str(unknown) in state["rules_rejected_reason"]
        assert "this agent version lacks" in state["rules_rejected_reason"]
        assert detector.rules is kept

        # A restarted agent resumes the set it applied last, before it reconnects.
        restarted = EdgeDetector()
        keeper = PushedRules(restarted, state_dir=Path(config.identity_dir))
        keeper.resume()
        assert keeper.digest == without and running(restarted) == running(detector)

        # ruleset_version "off": an empty set, so nothing pushed earlier runs.
        put = client.put(f"{agent_url}/config", json={"ruleset_version": "off"}, headers=headers)
        assert put.status_code == 200, put.text
        empty = ruleset_digest([])
        wait_for(shown, lambda s: s["rules_digest"] == empty)
        assert detector.pushed_rules is None

    assert edge_alerts(ctx, tenant_a, config.agent_id, str(robots)) == 1
    with ctx.sessions.tenant(tenant_a.id) as session:
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.action.like("agent.rules.%"))
        ).all()
    assert actions.count("agent.rules.applied") >= 4 and "agent.rules.rejected" in actions
