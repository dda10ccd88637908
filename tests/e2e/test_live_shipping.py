"""Live capture shipped end to end: an enrolled agent captures on a veth in a network namespace
and delivers over mutual TLS to a server running in the same namespace; the store then holds
the conn and http records of traffic a second namespace sent through the wire."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.agent.netns import VethPair, require_root_tools, run, veth_pair

pytestmark = pytest.mark.e2e
API, GATEWAY, WEB = 18000, 18443, 8080


def a2z(*args: str) -> list[str]:
    return [sys.executable, "-m", "a2z", *args]


def wait_for_port(pair: VethPair, port: int, seconds: float = 30) -> None:
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), 1).close()"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done = subprocess.run(
            pair.exec_argv(pair.b_ns, [sys.executable, "-c", probe]),
            capture_output=True,
            timeout=10,
        )
        if done.returncode == 0:
            return
        time.sleep(0.3)
    pytest.fail(f"nothing listens on {port} in the server namespace")


def wait_for_packet_socket(
    pair: VethPair, agent: subprocess.Popen[str], seconds: float = 60
) -> None:
    """Until the agent's capture ring is open: a packet socket exists in the server namespace.

    Nothing else there opens one, and /proc/net/packet lists the sockets of the reader's
    namespace. Waiting on it rather than a fixed sleep keeps the test right on a loaded machine,
    where the agent's start-up (imports, enrolment check) can take seconds.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert agent.poll() is None, "the agent exited before capturing"
        listing = run(pair.exec_argv(pair.b_ns, ["cat", "/proc/net/packet"]), timeout=10)
        if len(listing.splitlines()) > 1:  # a header line, then one line per socket
            return
        time.sleep(0.1)
    pytest.fail("the agent opened no capture socket")


def test_live_capture_is_enrolled_shipped_and_stored(tmp_path: Path) -> None:
    require_root_tools("curl")
    data = tmp_path / "server"
    admin = [*a2z("admin", "--data-dir", str(data), "--json")]
    run([*admin, "tenant", "create", "branch"])
    token = json.loads(run([*admin, "enrollment-token", "create", "--tenant", "branch"]))
    token_file = tmp_path / "token"
    token_file.write_text(token["token"])
    with veth_pair("a2zship") as pair:
        in_b = lambda argv: pair.exec_argv(pair.b_ns, argv)  # noqa: E731
        procs = [
            subprocess.Popen(
                in_b(a2z("server", "--data-dir", str(data), "--listen", f"127.0.0.1:{API}",
                         "--agent-listen", f"127.0.0.1:{GATEWAY}")),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            ),
            subprocess.Popen(
                in_b([sys.executable, "-m", "http.server", str(WEB), "--bind", pair.b_ip4,
                      "--directory", str(tmp_path)]),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ),
        ]  # fmt: skip
        try:
            wait_for_port(pair, GATEWAY)
            run(in_b(a2z("agent", "enroll", "--server", f"wss://127.0.0.1:{GATEWAY}",
                         "--token-file", str(token_file), "--ca-pin", token["ca_pin"],
                         "--dir", str(tmp_path / "agent"), "--name", "branch-sensor")), timeout=60)  # fmt: skip
            agent = subprocess.Popen(
                in_b(a2z("agent", "run", "-i", pair.b_if, "--config", str(tmp_path / "agent" / "agent.json"),
                         "--spool-dir", str(tmp_path / "spool"), "--max-seconds", "6")),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            wait_for_packet_socket(pair, agent)
            for i in range(3):
                run(pair.exec_argv(pair.a_ns, ["curl", "-s", "-o", "/dev/null", "-A", f"probe-{i}",
                                               f"http://{pair.b_ip4}:{WEB}/"]), timeout=20)  # fmt: skip
            _, err = agent.communicate(timeout=60)
            assert agent.returncode == 0, err
            assert "delivered" in err
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=20)
                if proc.stderr is not None:
                    proc.stderr.close()

    db = sqlite3.connect(data / "a2z.db")
    # The envelope (id.*, ts, uid) is in typed columns; data holds the record's other fields.
    rows = db.execute("SELECT path, orig_h, resp_p, data FROM events").fetchall()
    https = [json.loads(d) for p, _, _, d in rows if p == "http"]
    conns = [(h, json.loads(d)) for p, h, port, d in rows if p == "conn" and port == WEB]
    assert sorted(h["user_agent"] for h in https) == ["probe-0", "probe-1", "probe-2"]
    assert len(conns) == 3
    assert all(c["service"] == "http" and h == pair.a_ip4 for h, c in conns)
    agent_name = db.execute("SELECT name FROM agents").fetchall()
    assert agent_name == [("branch-sensor",)]
