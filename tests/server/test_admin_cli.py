"""`a2z admin`: the operator's commands, run as a user would run them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from a2z.server.app import create_app
from a2z.server.config import Settings


def admin(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "a2z", "admin", "--data-dir", str(data_dir), "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_admin_creates_what_the_api_then_accepts(tmp_path: Path) -> None:
    tenant = json.loads(admin(tmp_path, "tenant", "create", "acme").stdout)
    env = {"A2Z_PASSWORD": "a long enough password", "PATH": "/usr/bin:/bin"}
    user = json.loads(
        admin(
            tmp_path,
            "user",
            "create",
            "--tenant",
            "acme",
            "--email",
            "Boss@Acme.test",
            "--role",
            "owner",
            env=env,
        ).stdout
    )
    assert user["tenant_id"] == tenant["id"]
    assert user["email"] == "boss@acme.test"
    assert "password" not in user  # it was given, so it is not echoed
    key = json.loads(
        admin(tmp_path, "api-key", "create", "--tenant", tenant["id"], "--role", "viewer").stdout
    )
    token = json.loads(
        admin(
            tmp_path,
            "enrollment-token",
            "create",
            "--tenant",
            "acme",
            "--ttl",
            "30m",
            "--uses",
            "3",
        ).stdout
    )
    assert token["token"].startswith("a2ze_")

    with TestClient(create_app(Settings(data_dir=tmp_path))) as client:
        login = client.post(
            "/api/v1/auth/login", json={"email": "boss@acme.test", "password": env["A2Z_PASSWORD"]}
        )
        assert login.status_code == 200
        owner = {"Authorization": f"Bearer {login.json()['access_token']}"}
        assert (
            client.get(
                "/api/v1/events", headers={"Authorization": f"Bearer {key['key']}"}
            ).status_code
            == 200
        )
        tokens = client.get("/api/v1/enrollment-tokens", headers=owner).json()["items"]
        assert [t["uses_left"] for t in tokens] == [3]
        actions = [e["action"] for e in client.get("/api/v1/audit", headers=owner).json()["items"]]
        assert actions[:4] == [
            "tenant.create",
            "user.create",
            "api_key.create",
            "enrollment_token.create",
        ]
        assert all(
            e["actor"] == "cli"
            for e in client.get("/api/v1/audit", headers=owner).json()["items"][:4]
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("user", "create", "--tenant", "nope", "--email", "a@b.c", "--role", "owner"),
            "no tenant 'nope'",
        ),
        (("enrollment-token", "create", "--tenant", "acme", "--ttl", "soon"), "not a duration"),
    ],
)
def test_admin_errors_are_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    admin(tmp_path, "tenant", "create", "acme")
    result = admin(tmp_path, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_audit_log_is_append_only_on_sqlite(tmp_path: Path) -> None:
    import sqlite3

    admin(tmp_path, "tenant", "create", "acme")
    db = sqlite3.connect(tmp_path / "a2z.db")
    for statement in ("UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(statement)
    assert db.execute("SELECT count(*) FROM audit_events").fetchone() == (1,)
