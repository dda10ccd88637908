"""Signed agent releases on real TLS over loopback: published (CLI and service), listed by the
API, downloaded by the agent over mutual TLS, verified (signature chained to the pinned root,
digest, version), installed into a versioned directory and swapped in atomically; a tampered,
wrongly signed or older package is refused, and one that fails its health check is rolled back.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from contextlib import closing
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from fastapi.testclient import TestClient

from a2z.server.audit import service as audit
from a2z.server.context import ServerContext
from a2z.server.releases import service as releases
from a2z.server.releases.models import AgentRelease
from a2z.server.releases.signing import load_or_create_signing_key
from a2z.server.tenants import service as tenants
from a2z.server.tenants.models import Role
from tests.server.conftest import PASSWORD, TenantFixture, enrolled, login
from tests.server.test_agent_commands import RunningAgent, settle

SRC = Path(__file__).resolve().parents[2] / "src" / "a2z"
DATA = Path(__file__).resolve().parents[1] / "data"


def build_package(
    tmp_path: Path, version: str, *, broken: bool = False, starts_broken: bool = False
) -> Path:
    """A wheel-shaped zip of this agent's code claiming ``version`` (importable by zipimport).

    ``broken`` fails the health check; ``starts_broken`` passes it but cannot run the agent.
    """
    path = tmp_path / f"a2z_soc-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for source in sorted(SRC.rglob("*.py")):
            name = "a2z/" + source.relative_to(SRC).as_posix()
            text = source.read_text()
            if name == "a2z/__init__.py":
                text = text.replace('__version__ = "0.1.0"', f'__version__ = "{version}"')
            if broken and name == "a2z/agent/service.py":
                text = 'raise ImportError("this build is broken")\n'
            if starts_broken and name == "a2z/__main__.py":
                text = 'raise SystemExit("this build does not start")\n'
            zf.writestr(name, text)
    return path


def publish(
    ctx: ServerContext,
    tmp_path: Path,
    version: str,
    *,
    broken: bool = False,
    starts_broken: bool = False,
    key: ed25519.Ed25519PrivateKey | None = None,
) -> AgentRelease:
    signing = key or load_or_create_signing_key(ctx.root.directory, ctx.secret)
    with ctx.sessions.system() as session:
        return releases.publish(
            session=session, data_dir=ctx.settings.data_dir, key=signing,
            package=build_package(tmp_path, version, broken=broken, starts_broken=starts_broken),
            version=version,
            actor="test",
        )  # fmt: skip


def test_upgrade_verifies_installs_swaps_and_rolls_back(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, gateway: str, tmp_path: Path
) -> None:
    install = tmp_path / "install"
    (install / "versions" / "0.1.0").mkdir(parents=True)
    (install / "current").symlink_to("versions/0.1.0")
    config = msgspec.structs.replace(
        enrolled(ctx, tenant_a, gateway, tmp_path / "agent"),
        heartbeat_interval_s=0.3,
        install_dir=str(install),
    )
    assert (Path(config.identity_dir) / "release.pem").exists()  # learnt at enrollment
    headers = login(client, tenant_a)
    base = f"/api/v1/agents/{config.agent_id}/commands"

    publish(ctx, tmp_path, "0.0.1")  # older than the running 0.1.0
    tampered = publish(ctx, tmp_path, "9.0.1")
    stored = releases.package_path(ctx.settings.data_dir, tampered)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01  # one byte changed after signing
    stored.write_bytes(bytes(data))
    publish(ctx, tmp_path, "9.0.2", key=ed25519.Ed25519PrivateKey.generate())  # wrong key
    publish(ctx, tmp_path, "9.0.3", broken=True)  # signed, but does not start
    good = publish(ctx, tmp_path, "9.0.0")

    listed = client.get("/api/v1/releases", headers=headers).json()
    assert [r["version"] for r in listed["items"]] == ["9.0.3", "9.0.2", "9.0.1", "9.0.0", "0.0.1"]
    assert listed["signing_certificate"].startswith("-----BEGIN CERTIFICATE-----")

    def upgrade(version: str) -> dict[str, Any]:
        issued = client.post(
            base, json={"kind": "upgrade", "args": {"version": version}}, headers=headers
        )
        assert issued.status_code == 201, issued.text
        return settle(client, f"{base}/{issued.json()['id']}", headers, seconds=90)

    with RunningAgent(config):
        refused = {v: upgrade(v) for v in ("0.0.1", "9.0.1", "9.0.2", "9.9.9", "9.0.3")}
        assert os.readlink(install / "current") == "versions/0.1.0"  # untouched by all of them
        done = upgrade("9.0.0")

    assert {v: r["status"] for v, r in refused.items()} == dict.fromkeys(refused, "failed")
    assert "refusing to downgrade" in refused["0.0.1"]["error"]
    assert "tampered" in refused["9.0.1"]["error"]
    assert "signature does not verify" in refused["9.0.2"]["error"]
    assert "404" in refused["9.9.9"]["error"]
    assert "health check" in refused["9.0.3"]["error"]
    assert "rolled back" in refused["9.0.3"]["error"]
    assert not (install / "versions" / "9.0.3").exists()

    assert done["status"] == "acked", done
    assert done["result"]["version"] == "9.0.0"
    assert done["result"]["previous"] == "versions/0.1.0"
    assert os.readlink(install / "current") == "versions/9.0.0"
    installed = install / "current" / "a2z_soc-9.0.0-py3-none-any.whl"
    assert installed.read_bytes() == releases.package_path(ctx.settings.data_dir, good).read_bytes()


def test_upgrade_restarts_into_the_new_version_and_rolls_back_one_that_fails_to_start(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, gateway: str, tmp_path: Path
) -> None:
    # The agent runs under the launcher, as the systemd unit runs it: 0.1.0 is this checkout;
    # 9.0.4 passes its health check but cannot start; 9.0.0 is a real second build.
    install = tmp_path / "install"
    (install / "versions" / "0.1.0").mkdir(parents=True)
    (install / "current").symlink_to("versions/0.1.0")
    config = msgspec.structs.replace(
        enrolled(ctx, tenant_a, gateway, tmp_path / "agent"),
        heartbeat_interval_s=0.3,
        install_dir=str(install),
    )
    config_file = tmp_path / "agent.json"
    config_file.write_bytes(msgspec.json.encode(config))
    config_file.chmod(0o600)
    headers = login(client, tenant_a)
    agent_url = f"/api/v1/agents/{config.agent_id}"
    publish(ctx, tmp_path, "9.0.4", starts_broken=True)
    publish(ctx, tmp_path, "9.0.0")

    def upgrade(version: str) -> dict[str, Any]:
        issued = client.post(
            f"{agent_url}/commands",
            json={"kind": "upgrade", "args": {"version": version}},
            headers=headers,
        )
        assert issued.status_code == 201, issued.text
        return settle(client, f"{agent_url}/commands/{issued.json()['id']}", headers, seconds=90)

    def running(version: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if client.get(agent_url, headers=headers).json()["version"] == version:
                return
            time.sleep(0.1)
        pytest.fail(f"the agent never reported version {version}")

    launcher = subprocess.Popen(
        [sys.executable, "-m", "a2z.agent.launcher", "agent", "run", "--config", str(config_file),
         "--replay", str(DATA / "http1.pcapng"), "--rate", "0.5", "--no-detect"],
        env={**os.environ, "A2Z_TRIAL_SECONDS": "60"}, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        running("0.1.0")
        failed = upgrade("9.0.4")
        assert failed["status"] == "failed", failed
        assert "9.0.4 failed to start: it exited with status 1" in failed["error"]
        assert "rolled back to 0.1.0" in failed["error"]
        assert os.readlink(install / "current") == "versions/0.1.0"
        running("0.1.0")

        done = upgrade("9.0.0")
        assert done["status"] == "acked", done
        assert done["result"]["version"] == "9.0.0" and done["result"]["restarted"] is True
        running("9.0.0")  # the new build is what runs now
        assert os.readlink(install / "current") == "versions/9.0.0"
        assert not (install / "upgrade.json").exists()  # the trial was committed
    finally:
        launcher.send_signal(signal.SIGTERM)
        _, err = launcher.communicate(timeout=30)
    assert "9.0.4 failed to start" in err
    with ctx.sessions.tenant(tenant_a.id) as session:
        page = audit.list_page(
            session=session, limit=100, cursor=None, action="agent.command.result"
        )
        outcomes = [e.outcome for e in page.items]
    assert outcomes == ["failure", "success"]  # each upgrade answered once, with its outcome


def test_release_publish_command(tmp_path: Path) -> None:
    package = build_package(tmp_path, "1.2.3")
    data = tmp_path / "server"
    argv = [sys.executable, "-m", "a2z", "admin", "--data-dir", str(data), "--json", "release"]
    done = subprocess.run(
        [*argv, "publish", str(package), "--version", "1.2.3"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["version"], out["filename"]) == ("1.2.3", package.name)
    assert (data / "releases" / "1.2.3" / package.name).read_bytes() == package.read_bytes()
    assert (data / "pki" / "release.key").stat().st_mode & 0o777 == 0o600
    again = subprocess.run(
        [*argv, "publish", str(package), "--version", "1.2.3"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert again.returncode == 2 and "already published" in again.stderr

    # Both attempts are in the operators' audit trail, which the database keeps append-only.
    with closing(sqlite3.connect(data / "a2z.db")) as db:
        rows = db.execute(
            "SELECT actor, action, target, outcome, detail FROM system_audit_events ORDER BY at"
        ).fetchall()
        assert [row[:4] for row in rows] == [
            ("cli", "release.publish", "release:1.2.3", "success"),
            ("cli", "release.publish", "release:1.2.3", "failure"),
        ]
        detail = json.loads(rows[0][4])
        assert detail["sha256"] == out["sha256"] and detail["size"] == package.stat().st_size
        assert "already published" in json.loads(rows[1][4])["error"]
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM system_audit_events")


def test_operators_read_the_release_audit_trail_and_tenants_do_not(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, tmp_path: Path
) -> None:
    with ctx.sessions.system() as session:
        audit.record_system(
            session=session, actor="cli", action="release.publish", target="release:3.0.0",
            detail={"sha256": "ab" * 32},
        )  # fmt: skip
    owner = login(client, tenant_a)
    assert client.get("/api/v1/system/audit", headers=owner).status_code == 403
    email = f"operator@{tenant_a.name}.test"
    with ctx.sessions.tenant(tenant_a.id) as session:
        tenants.create_user(session=session, email=email, password=PASSWORD, role=Role.OPERATOR)
    operator = login(client, tenant_a, email)
    shown = client.get("/api/v1/system/audit?action=release.publish", headers=operator)
    assert shown.status_code == 200, shown.text
    (entry,) = shown.json()["items"]
    assert (entry["target"], entry["detail"]) == ("release:3.0.0", {"sha256": "ab" * 32})
    # The tenant's own log does not show it.
    tenant_log = client.get("/api/v1/audit?action=release.publish", headers=owner).json()
    assert tenant_log["items"] == []
