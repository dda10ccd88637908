"""``a2z server --role gateway``: the agent gateway in a process of its own (ADR 20).

The split deployment for real: a private JetStream, PostgreSQL, one ``--role api --role
ingest`` process and one ``--role gateway`` process sharing a data directory. An agent enrolls
through the gateway process with a token the API made, its batch is acked there once
JetStream has it, and an analyst finds the records through the API process.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from a2z.agent.enroll import enroll
from a2z.agent.identity import IdentityFiles
from a2z.cli import build_parser, server_settings
from a2z.records import Batch, Conn, encode_batch
from a2z.server.agents import service as agents
from a2z.server.app import build_context
from a2z.server.auth.keys import create_api_key
from a2z.server.config import ServerRole, Settings
from a2z.server.gateway_process import check
from a2z.server.pki.root import GATEWAY_CREDENTIALS
from a2z.server.tenants import service as tenants
from a2z.server.tenants.models import Role
from tests.nats_servers import NatsNode, free_port, wait_until
from tests.services import pg_url, scratch_database

BUS = "nats://127.0.0.1:4222"


def settings_of(*argv: str) -> Settings:
    return server_settings(build_parser().parse_args(["server", *argv]))


def test_without_roles_one_process_runs_everything_with_the_gateway() -> None:
    settings = settings_of()
    assert settings.roles == frozenset(ServerRole)
    assert settings.runs_gateway and settings.agent_port == 8443


def test_the_api_role_alone_leaves_the_agent_port_to_the_gateway_role() -> None:
    api = settings_of("--role", "api", "--bus", BUS, "--agent-listen", "127.0.0.1:9443")
    assert api.roles == {ServerRole.API}
    assert not api.runs_gateway and api.agent_port is None
    both = settings_of("--role", "api", "--role", "gateway", "--agent-listen", "127.0.0.1:9443")
    assert both.runs_gateway and both.agent_port == 9443


def test_the_gateway_role_parses_and_runs_alone_on_jetstream_and_postgresql() -> None:
    pg = ("--db", "postgresql://a2z@db/a2z")
    gateway = settings_of(
        "--role", "gateway", "--bus", BUS, *pg, "--agent-listen", "0.0.0.0:9443"
    )  # fmt: skip
    assert gateway.roles == {ServerRole.GATEWAY}
    assert (gateway.agent_host, gateway.agent_port) == ("0.0.0.0", 9443)
    check(gateway)
    with pytest.raises(ValueError, match="JetStream"):
        check(settings_of("--role", "gateway", *pg))
    with pytest.raises(ValueError, match="alone"):
        check(settings_of("--role", "gateway", "--role", "ingest", "--bus", BUS, *pg))
    # On SQLite each process keeps its own rate buckets: a tenant would get its rate twice.
    with pytest.raises(ValueError, match="PostgreSQL"):
        check(settings_of("--role", "gateway", "--bus", BUS))


def test_the_cli_refuses_a_gateway_process_without_jetstream(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "a2z", "server", "--role", "gateway", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "needs the JetStream bus" in done.stderr


def test_an_api_process_leaves_the_gateway_certificate_alone(tmp_path: Path) -> None:
    # The gateway process issues its certificate for the names agents use; an api process
    # starting later on the same data directory must not replace it with one for its own.
    gateway = build_context(Settings(data_dir=tmp_path, gateway_names=("soc.example",)))
    gateway.sessions.engine.dispose()
    issued = (tmp_path / "pki" / GATEWAY_CREDENTIALS).read_bytes()
    api = build_context(
        Settings(data_dir=tmp_path, roles=frozenset({ServerRole.API, ServerRole.INGEST}))
    )
    api.sessions.engine.dispose()
    assert (tmp_path / "pki" / GATEWAY_CREDENTIALS).read_bytes() == issued
    assert api.root.pin == gateway.root.pin


def _serve(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        command = [sys.executable, "-m", "a2z", "server", *argv]
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def _healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> bool:
    assert proc.poll() is None, log.read_text()
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _sample(scrape: str, name: str) -> float | None:
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A private JetStream: the processes use the default stream names."""
    node = NatsNode("gw", tmp_path / "nats")
    node.start()
    try:
        wait_until(node.healthy, 20, "nats-server to start")
        yield node.url
    finally:
        node.stop()


def test_a_separate_gateway_process_acks_and_the_api_process_finds_it(
    pg_template: str, nats_url: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    with scratch_database(pg_template) as name:
        db = pg_url(name)
        ctx = build_context(Settings(data_dir=data, db_url=db, agent_port=None))
        with ctx.sessions.system() as session:
            tenant = tenants.create_tenant(session=session, name="split")
        with ctx.sessions.tenant(tenant.id) as session:
            _, token = agents.create_enrollment_token(
                session=session, ttl=timedelta(minutes=5), uses=1, created_by="test"
            )
            _, key = create_api_key(session=session, role=Role.ANALYST, name="test")
        pin = ctx.root.pin
        ctx.sessions.engine.dispose()

        api_port, gw_port, agent_port = free_port(), free_port(), free_port()
        common = ["--db", db, "--bus", nats_url, "--data-dir", str(data)]
        api_log, gw_log = tmp_path / "api.log", tmp_path / "gateway.log"
        api = _serve(
            [*common, "--role", "api", "--role", "ingest", "--listen", f"127.0.0.1:{api_port}",
             "--agent-listen", f"127.0.0.1:{agent_port}"],
            api_log,
        )  # fmt: skip
        gateway = _serve(
            [*common, "--role", "gateway", "--listen", f"127.0.0.1:{gw_port}",
             "--agent-listen", f"127.0.0.1:{agent_port}"],
            gw_log,
        )  # fmt: skip
        try:
            api_url, gw_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{gw_port}"
            wait_until(lambda: _healthy(api_url, api, api_log), 90, "the api process")
            wait_until(lambda: _healthy(gw_url, gateway, gw_log), 90, "the gateway process")
            # The api process was given the same agent port and left it alone: the one
            # listening there is the gateway process (before ADR 20, api served agents).
            server = f"wss://127.0.0.1:{agent_port}"
            config = enroll(server, token, pin, tmp_path / "agent", "split-agent")
            assert config.tenant_id == str(tenant.id)

            now = time.time()
            records = [
                Conn(ts=now - i, uid=f"Csplit{i}", orig_h="10.9.0.1", orig_p=40000 + i,
                     resp_h="10.9.0.2", resp_p=443, proto="tcp")
                for i in range(7)
            ]  # fmt: skip
            frame = encode_batch(
                Batch(agent_id=config.agent_id, boot_epoch=1, seq=1, sent_at=now, records=records)
            )

            async def ship() -> object:
                tls = IdentityFiles(Path(config.identity_dir)).client_context()
                async with connect(f"{server}/channel", ssl=tls, open_timeout=10) as ws:
                    await ws.send(frame)
                    while isinstance(reply := await asyncio.wait_for(ws.recv(), 30), str):
                        if '"ack"' in reply:  # control pushes (config, rules) may come first
                            return msgspec.json.decode(reply)
                    return reply

            assert asyncio.run(ship()) == {"ack": 1, "epoch": 1}
            scrape = httpx.get(f"{gw_url}/metrics", timeout=5).text
            assert _sample(scrape, "a2z_bus_published_total") == 1.0  # by the gateway process

            found: list[str] = []

            def searchable() -> bool:
                reply = httpx.get(
                    f"{api_url}/api/v1/events",
                    params={"type": "conn", "since": now - 3600},
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=10,
                )
                reply.raise_for_status()
                found[:] = sorted(e["uid"] for e in reply.json()["items"])
                return len(found) == len(records)

            wait_until(searchable, 60, "the batch to be searchable through the api process")
            assert found == sorted(r.uid for r in records)
        finally:
            _stop(gateway)
            _stop(api)
