"""``a2z demo``: the embedded server, a demo tenant and user, and an agent replaying attacks.

This module sits above both halves: it starts the server in-process and the agent as a child
process, exactly as an operator would run them, so the demo exercises the real channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import sys
from importlib.resources import as_file, files
from pathlib import Path

import uvicorn

from a2z.agent.config import AgentConfig, write_config
from a2z.records import MAX_FRAME_BYTES
from a2z.server.agents import service as agents
from a2z.server.app import build_context, create_app
from a2z.server.auth.keys import create_api_key
from a2z.server.config import Settings
from a2z.server.tenants import service as tenants
from a2z.server.tenants.models import Role

DEMO_EMAIL = "admin@demo.a2z.test"
DEMO_CAPTURE = files("a2z.demo") / "data" / "attack.pcap"


def run_demo(*, port: int, data_dir: Path) -> int:
    """Run until interrupted; return the exit code."""
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_demo(port=port, data_dir=data_dir))
    return 0


async def _demo(*, port: int, data_dir: Path) -> int:
    shutil.rmtree(data_dir, ignore_errors=True)  # a fresh demo each run
    settings = Settings(data_dir=data_dir, port=port)
    ctx = build_context(settings)
    password = secrets.token_urlsafe(12)
    with ctx.sessions.system() as session:
        tenant = tenants.create_tenant(session=session, name="demo")
    with ctx.sessions.tenant(tenant.id) as session:
        tenants.create_user(session=session, email=DEMO_EMAIL, password=password, role=Role.OWNER)
        agent = agents.create(session=session, name="demo-sensor")
        _key, token = create_api_key(session=session, role=Role.AGENT, agent_id=agent.id)
    config_path = data_dir / "agent.json"
    write_config(
        config_path,
        AgentConfig(
            server=f"ws://127.0.0.1:{port}/api/v1/agent/channel",
            agent_id=str(agent.id),
            token=token,
        ),
    )

    config = uvicorn.Config(
        create_app(context=ctx),
        host="127.0.0.1",
        port=port,
        ws_max_size=MAX_FRAME_BYTES,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            return 1  # could not bind; uvicorn has said why
        await asyncio.sleep(0.05)

    print(f"A2Z SOC demo is running at http://127.0.0.1:{port}/", flush=True)
    print(f"  login: {DEMO_EMAIL}  password: {password}", flush=True)
    with as_file(DEMO_CAPTURE) as capture:
        print(f"  agent replaying {capture.name} (nmap, hping3, dig, curl traffic) ...", flush=True)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "a2z",
            "agent",
            "run",
            "--config",
            str(config_path),
            "--replay",
            str(capture),
        )
        code = await child.wait()
    print(f"  agent finished (exit {code}); press Ctrl-C to stop the server", flush=True)

    # uvicorn owns SIGINT/SIGTERM: Ctrl-C shuts the server down gracefully.
    await serving
    return 0
