"""Heartbeats report the whole agent: with capture workers, their CPU and memory count too."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil

from a2z.agent.heartbeat import HeartbeatSource

# A child like a capture worker: it holds ~64 MiB and keeps one core busy until killed.
_WORKER = (
    "b = bytearray(64 << 20)\nfor i in range(len(b) // 4096): b[i * 4096] = 1\nwhile True: pass"
)


def test_heartbeat_counts_child_processes_cpu_and_memory() -> None:
    source = HeartbeatSource(records_acked=lambda: 0, reconnects=lambda: 0)
    child = subprocess.Popen([sys.executable, "-c", _WORKER])
    try:
        worker = psutil.Process(child.pid)
        deadline = time.monotonic() + 30
        while worker.memory_info().rss < 60 << 20:  # the child's memory is resident
            assert time.monotonic() < deadline, "the child never grew"
            time.sleep(0.05)
        json.loads(source())  # starts the child's CPU measurement
        time.sleep(1.0)
        beat = json.loads(source())
        own = psutil.Process().memory_info().rss
        assert beat["rss_bytes"] >= own + (60 << 20) - (8 << 20)  # both, give or take
        assert beat["cpu_percent"] > 10  # the busy child, on any loaded machine
    finally:
        child.kill()
        child.wait(timeout=10)
    after = json.loads(source())  # a child that is gone is simply no longer counted
    assert after["rss_bytes"] < beat["rss_bytes"]
