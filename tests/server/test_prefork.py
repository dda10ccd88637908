"""``a2z server --workers N``: several API processes behave as one server — a logout in one
ends the token everywhere, and failed logins count once against the limits."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from a2z.server import prefork
from a2z.server.app import build_context
from a2z.server.config import JetStreamSettings, ServerRole, Settings
from a2z.server.tenants import service as tenants
from a2z.server.tenants.models import Role
from tests.server.conftest import PASSWORD

EMAIL = "owner@workers.test"


def test_settings_reach_the_workers_unchanged(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "d", db_url="postgresql://x@h/db", port=9, workers=3,
        roles=frozenset({ServerRole.API, ServerRole.INGEST}), bus_url="nats://n:4222",
        jetstream=JetStreamSettings(replicas=3, backoff=(1.0, 2.0)), agent_port=None,
        gateway_names=("soc.example",), auth_cache_s=0.0, hot_read_ttl_ms=250, freeze_gc=True,
        access_log=False,
    )  # fmt: skip
    assert prefork.decode_settings(prefork.encode_settings(settings)) == settings


def test_one_worker_holds_the_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, pathlib; from a2z.server import prefork; "
         "print(prefork.take_gateway(pathlib.Path(sys.argv[1])), flush=True); sys.stdin.read()",
         str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        monkeypatch.setattr(prefork, "_gateway_lock", None)
        assert not prefork.take_gateway(tmp_path)  # another process has it
    finally:
        holder.communicate("")  # the holder exits, and the kernel drops its lock
    assert prefork.take_gateway(tmp_path)  # a worker started in its place takes it over
    monkeypatch.setattr(prefork, "_gateway_lock", None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[str]:
    """``a2z server --workers 2`` on SQLite with one tenant owner; yields its base URL."""
    ctx = build_context(Settings(data_dir=tmp_path))
    try:
        with ctx.sessions.system() as session:
            tenant = tenants.create_tenant(session=session, name="workers")
        with ctx.sessions.tenant(tenant.id) as session:
            tenants.create_user(session=session, email=EMAIL, password=PASSWORD, role=Role.OWNER)
    finally:
        ctx.sessions.engine.dispose()
    port = _free_port()
    cmd = [sys.executable, "-m", "a2z", "server", "--workers", "2", "--data-dir", str(tmp_path)]
    cmd += ["--listen", f"127.0.0.1:{port}", "--agent-listen", "127.0.0.1:0"]
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while (tmp_path / "server.log").read_text().count("Application startup complete") < 2:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "workers did not start within 90 s"
            time.sleep(0.2)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _fresh(method: str, url: str, **kwargs: object) -> httpx.Response:
    # A new connection each time: the kernel hands each to whichever worker accepts first, so
    # a series of them reaches both workers (one kept-alive connection would stay with one).
    with httpx.Client(timeout=30) as http:
        return http.request(method, url, **kwargs)  # type: ignore[arg-type]


def test_two_workers_share_revocation_and_the_login_throttle(two_workers: str) -> None:
    login = f"{two_workers}/api/v1/auth/login"
    me = f"{two_workers}/api/v1/auth/me"
    token = _fresh("POST", login, json={"email": EMAIL, "password": PASSWORD}).json()
    auth = {"Authorization": f"Bearer {token['access_token']}"}
    assert all(_fresh("GET", me, headers=auth).status_code == 200 for _ in range(12))
    assert _fresh("POST", f"{two_workers}/api/v1/auth/logout", headers=auth).status_code == 204
    assert all(_fresh("GET", me, headers=auth).status_code == 401 for _ in range(12))

    for _ in range(10):
        wrong = _fresh("POST", login, json={"email": EMAIL, "password": "wrong"})
        assert wrong.status_code == 401
    assert _fresh("POST", login, json={"email": EMAIL, "password": PASSWORD}).status_code == 429
