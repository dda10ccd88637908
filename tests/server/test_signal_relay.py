"""A configuration change or a command made through one server process reaches an agent
connected to another process's gateway at once (PostgreSQL LISTEN/NOTIFY), not at the agent's
next heartbeat. Two real processes share one PostgreSQL database: this test's server (API and
gateway) and a second ``a2z server`` the agent is connected to."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fastapi.testclient import TestClient

from a2z.agent.config import AgentConfig
from a2z.server.context import ServerContext
from tests.server.conftest import TenantFixture, enrolled, login
from tests.server.test_agent_commands import RunningAgent, settle

HEARTBEAT_S = 120.0  # far longer than the test waits: only a relayed signal explains a push


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def second_server(ctx: ServerContext, tmp_path: Path) -> Iterator[str]:
    """Another ``a2z server`` on the same database and data directory (its gateway's URL)."""
    api, agents = free_port(), free_port()
    log = (tmp_path / "second.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "a2z", "server", "--db", str(ctx.settings.db_url),
         "--data-dir", str(ctx.settings.data_dir), "--listen", f"127.0.0.1:{api}",
         "--agent-listen", f"127.0.0.1:{agents}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", agents), 1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"second server did not start: {(tmp_path / 'second.log').read_text()}"
                    )
                time.sleep(0.2)
        yield f"wss://127.0.0.1:{agents}/channel"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def wait(
    client: TestClient, url: str, headers: dict[str, str], done: Any, seconds: float
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        shown: dict[str, Any] = client.get(url, headers=headers).json()
        if done(shown):
            return shown
        if time.monotonic() > deadline:
            pytest.fail(f"not reached within {seconds} s: {shown}")
        time.sleep(0.05)


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_change_made_on_one_process_reaches_an_agent_on_another_at_once(
    client: TestClient,
    ctx: ServerContext,
    tenant_a: TenantFixture,
    gateway: str,
    second_server: str,
    tmp_path: Path,
) -> None:
    config: AgentConfig = msgspec.structs.replace(
        enrolled(ctx, tenant_a, gateway, tmp_path / "agent"),
        server=second_server,  # enrolled here, connected there
        heartbeat_interval_s=HEARTBEAT_S,
    )
    headers = login(client, tenant_a)
    agent_url = f"/api/v1/agents/{config.agent_id}"
    with RunningAgent(config):
        wait(client, agent_url, headers, lambda a: a["status"] == "online", 30)  # connected there
        started = time.monotonic()
        put = client.put(f"{agent_url}/config", json={"batch_size": 77}, headers=headers)
        assert put.status_code == 200, put.text
        shown = wait(
            client, f"{agent_url}/config", headers,
            lambda c: c["applied_version"] == c["desired_version"] > 0, 15,
        )  # fmt: skip
        assert shown["effective"]["batch_size"] == 77
        issued = client.post(
            f"{agent_url}/commands", json={"kind": "collect-diagnostics"}, headers=headers
        )
        assert issued.status_code == 201, issued.text
        done = settle(client, f"{agent_url}/commands/{issued.json()['id']}", headers, seconds=15)
        assert done["status"] == "acked", done
        assert done["result"]["config"]["batch_size"] == 77
        assert time.monotonic() - started < HEARTBEAT_S / 4
    assert ctx.metrics.agent_signals.labels("sent")._value.get() >= 2
