"""``a2z demo``: the embedded server, a demo tenant and user, and an agent replaying attacks.

This module sits above both halves: it starts the server in-process and the agent as child
processes — enrollment with a one-time token and the pinned CA, then a mutual-TLS stream —
exactly as an operator would run them, so the demo exercises the real channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import sys
from datetime import timedelta
from importlib.resources import as_file, files
from pathlib import Path

import uvicorn

from a2z.server.agents import service as agents
from a2z.server.app import build_context, create_app
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
    # The agent gateway takes any free port; the agent learns it from the enrollment URL.
    settings = Settings(data_dir=data_dir / "server", port=port, agent_port=0)
    ctx = build_context(settings)
    password = secrets.token_urlsafe(12)
    with ctx.sessions.system() as session:
        tenant = tenants.create_tenant(session=session, name="demo")
    with ctx.sessions.tenant(tenant.id) as session:
        tenants.create_user(session=session, email=DEMO_EMAIL, password=password, role=Role.OWNER)
        _row, token = agents.create_enrollment_token(
            session=session, ttl=timedelta(minutes=10), uses=1, created_by="demo"
        )
    app = create_app(context=ctx)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            return 1  # could not bind; uvicorn has said why
        await asyncio.sleep(0.05)
    gateway = f"wss://127.0.0.1:{app.state.gateway.port}"

    print(f"A2Z SOC demo is running at http://127.0.0.1:{port}/", flush=True)
    print(f"  login: {DEMO_EMAIL}  password: {password}", flush=True)
    agent_dir = data_dir / "agent"
    token_file = data_dir / "enrollment.token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    code = await _run(
        "agent", "enroll", "--server", gateway, "--token-file", str(token_file),
        "--ca-pin", ctx.root.pin, "--dir", str(agent_dir), "--name", "demo-sensor",
    )  # fmt: skip
    token_file.unlink()
    if code == 0:
        with as_file(DEMO_CAPTURE) as capture:
            print(
                f"  agent replaying {capture.name} (nmap, hping3, dig, curl traffic) ...",
                flush=True,
            )
            code = await _run(
                "agent", "run", "--config", str(agent_dir / "agent.json"), "--replay", str(capture)
            )
    print(f"  agent finished (exit {code}); press Ctrl-C to stop the server", flush=True)
    # uvicorn owns SIGINT/SIGTERM: Ctrl-C shuts the server down gracefully.
    await serving
    return 0


async def _run(*args: str) -> int:
    """Run an ``a2z`` command as a child process, as an operator would."""
    child = await asyncio.create_subprocess_exec(sys.executable, "-m", "a2z", *args)
    return await child.wait()
