"""Whole system: `a2z demo` serves the records an agent replayed from the bundled capture."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from a2z.demo.runner import DEMO_CAPTURE
from a2z.rules.anomaly import RULE_ID as ANOMALY_RULE_ID
from a2z.rules.anomaly import AnomalySettings
from a2z.rules.catalog import shipped_catalog

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Demo:
    """A running `a2z demo` child process and what it has printed so far."""

    def __init__(self, port: int, data_dir: Path) -> None:
        self.port = port
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "a2z", "demo", "--port", str(port), "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.reader = threading.Thread(target=self._pump, daemon=True)
        self.reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            assert self.proc.poll() is None, "demo exited early:\n" + "".join(self.lines)
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "".join(self.lines))


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    running = Demo(free_port(), tmp_path / "demo")
    yield running
    running.proc.send_signal(signal.SIGINT)
    try:
        running.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        running.proc.kill()
        raise
    finally:
        running.reader.join(timeout=10)
        assert running.proc.stdout is not None
        running.proc.stdout.close()


def replayed_record_count() -> int:
    out = subprocess.run(
        [sys.executable, "-m", "a2z", "agent", "replay", str(DEMO_CAPTURE)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return len(out.stdout.splitlines())


def all_events(base: str, headers: dict[str, str]) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    url = f"{base}/api/v1/events?limit=1000"
    while url:
        page = httpx.get(url, headers=headers, timeout=10).json()
        items += page["items"]
        url = (
            f"{base}/api/v1/events?limit=1000&cursor={page['next_cursor']}"
            if page["next_cursor"]
            else ""
        )
    return items


def test_demo_serves_every_replayed_record(demo: Demo) -> None:
    login = demo.wait_for(r"login: (\S+)\s+password: (\S+)")
    delivered = int(demo.wait_for(r"delivered (\d+) records").group(1))
    demo.wait_for(r"agent finished \(exit 0\)")
    base = f"http://127.0.0.1:{demo.port}"

    token = httpx.post(
        f"{base}/api/v1/auth/login",
        json={"email": login.group(1), "password": login.group(2)},
        timeout=10,
    ).json()["access_token"]
    stored = all_events(base, {"Authorization": f"Bearer {token}"})
    # The backend's own detections (the anomaly model and the shipped Sigma rules) add alerts
    # about the delivered records.
    backend_rules = {ANOMALY_RULE_ID} | {r.rule_id for r in shipped_catalog()}
    backend = [e for e in stored if e.get("rule_id") in backend_rules]
    events = [e for e in stored if e.get("rule_id") not in backend_rules]

    # Every record the pipeline makes of the capture arrived once: replay == delivered == stored.
    assert len(events) == delivered == replayed_record_count()
    conns = [e for e in events if e["_path"] == "conn"]
    # nikto's and sqlmap's user agents match shipped SigmaHQ rules.
    assert {e["rule_id"] for e in backend} - {ANOMALY_RULE_ID}, "no shipped rule fired"
    # The anomaly model warms up on the tenant's first 2,000 connections (here the capture's
    # own scans, which become its baseline), then scores the rest: the search shows the scores.
    assert sum("anomaly_score" in c for c in conns) == len(conns) - AnomalySettings().warm_up
    assert {a["uid"] for a in backend} <= {c["uid"] for c in conns}
    assert conns, "the capture's flows must arrive as conn records"
    # The capture holds an nmap SYN scan of the victim: many refused or unanswered flows.
    scanned = [
        c for c in conns if c["id.resp_h"] == "10.66.0.20" and c["conn_state"] in {"REJ", "S0"}
    ]
    assert len(scanned) > 100
    # The agent's edge detection shipped its alerts with the records (tests/agent/test_detect.py
    # holds the full list): the scan, the flood and the traversal are among them.
    rules = {e["rule_id"] for e in events if e["_path"] == "alert"}
    assert {"a2z.net.scan.vertical", "a2z.net.synflood", "a2z.web.traversal"} <= rules
    assert "A2Z SOC" in httpx.get(base + "/", timeout=10).text
