"""``a2z server --workers N``: N API processes sharing one listening socket.

One Python process holds one GIL, so the API's throughput is capped at one core
(docs/benchmarks.md, API). uvicorn's supervisor starts the workers and restarts one that dies;
this module does the start-up work once, before any worker exists, and tells each worker what
it is. Per-process state is safe to multiply: the login throttle counts in the store and a
revocation in any worker ends cached principals in all (``auth/revocations.py``).
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
from pathlib import Path
from typing import Any

import msgspec
import uvicorn
from fastapi import FastAPI

from a2z.records import MAX_FRAME_BYTES
from a2z.server.app import build_context, create_app
from a2z.server.config import EVENT_LOOP, ServerRole, Settings
from a2z.server.http_protocol import HTTP_PROTOCOL
from a2z.server.rules import service as rules

SETTINGS_ENV = "A2Z_SERVER_SETTINGS"  # the parent's settings, as JSON, for the workers
GATEWAY_LOCK = "gateway.lock"  # held by the one worker that serves the agent gateway

# The worker's hold on GATEWAY_LOCK: released by the kernel when the process ends, so a worker
# uvicorn starts in place of a dead gateway holder takes the gateway over.
_gateway_lock: int | None = None


def _enc(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise NotImplementedError(type(value))


def _dec(kind: type, value: Any) -> Any:
    if kind is Path:
        return Path(value)
    raise NotImplementedError(kind)


def encode_settings(settings: Settings) -> str:
    """Settings as JSON (the workers are spawned, not forked: they get them from the env)."""
    return msgspec.json.encode(settings, enc_hook=_enc).decode()


def decode_settings(text: str) -> Settings:
    """Inverse of ``encode_settings``."""
    return msgspec.json.decode(text, type=Settings, dec_hook=_dec)


def prepare(settings: Settings) -> None:
    """What must happen once, not once per worker: the token secret, the agent root CA and
    the release key are created on first start, the schema migrated, partitions made, shipped
    rules merged into tenants' overrides. Workers racing to create the secret would each make
    their own."""
    ctx = build_context(settings)
    try:
        if ServerRole.API in settings.roles:
            rules.merge_upstream_all(
                sessions=ctx.sessions, catalog=ctx.rules_catalog, metrics=ctx.metrics
            )
    finally:
        if ctx.detect is not None:
            ctx.detect.close()
        ctx.sessions.close()


def run(settings: Settings) -> int:
    """Prepare the store, then serve with ``settings.workers`` processes until stopped."""
    prepare(settings)
    os.environ[SETTINGS_ENV] = encode_settings(settings)
    uvicorn.run(
        f"{__name__}:worker_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        ws_max_size=MAX_FRAME_BYTES,
        access_log=settings.access_log,
        loop=EVENT_LOOP,
        http=HTTP_PROTOCOL,
    )
    return 0


def take_gateway(data_dir: Path) -> bool:
    """True for the one worker that gets the gateway lock on ``data_dir`` (kept until exit)."""
    global _gateway_lock
    if _gateway_lock is not None:
        return True
    fd = os.open(data_dir / GATEWAY_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _gateway_lock = fd
    return True


def worker_app() -> FastAPI:
    """One worker's app (uvicorn calls this factory in each spawned process).

    Every worker serves the API, with its own in-process bus and ingest when there is no
    JetStream; only one listens for agents, since the gateway's port cannot be shared.
    """
    settings = decode_settings(os.environ[SETTINGS_ENV])
    if settings.runs_gateway and not take_gateway(settings.data_dir):
        settings = dataclasses.replace(settings, agent_port=None)
    return create_app(settings)
