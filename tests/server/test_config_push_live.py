"""Config push on real TLS over loopback changes a running agent's live capture.

The agent captures on a veth inside a network namespace the test creates (the capture socket
is opened from a thread in that namespace; everything else stays on the host's loopback).
Another namespace sends UDP to two ports throughout. A pushed BPF filter narrows the capture
to one port: every packet of the kept port is captured across the switch, none of the other
port after it. A pushed filter that does not compile is rejected, the API shows why, and the
old filter keeps running (the kept port still loses nothing).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from a2z.agent.capture.af_packet import AfPacketSource
from a2z.agent.live import LiveCapture, live_stream
from a2z.agent.service import ship_records
from a2z.agent.ship.channel import ShipStats
from a2z.server.context import ServerContext
from a2z.server.events import service as events
from a2z.server.events.models import Event
from tests.agent.netns import require_root_tools, veth_pair
from tests.agent.netns_thread import thread_in_netns
from tests.server.conftest import TenantFixture, enrolled, login

KEPT, OTHER = 5001, 5002
SEND_SECONDS = 7.0
PPS = 150  # per port

# One new socket (so usually a new source port, a new flow) per datagram, to both ports in
# turn, paced; prints how many it sent to each.
SENDER = """
import json, socket, sys, time
dst, seconds, pps = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
counts = {"5001": 0, "5002": 0}
warm = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
warm.sendto(b"arp", (dst, 9))  # resolve the neighbour before counting
time.sleep(0.5)
start = time.monotonic()
i = 0
while time.monotonic() - start < seconds:
    for port in (5001, 5002):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"x" * 32, (dst, port))
        s.close()
        counts[str(port)] += 1
    i += 1
    time.sleep(max(0.0, start + i / pps - time.monotonic()))
print(json.dumps(counts))
"""


def wait_for(
    client: TestClient, url: str, headers: dict[str, str], done: Any, seconds: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        shown: dict[str, Any] = client.get(url, headers=headers).json()
        if done(shown):
            return shown
        if time.monotonic() > deadline:
            pytest.fail(f"agent config never reached the expected state: {shown}")
        time.sleep(0.05)


def test_pushed_filter_narrows_live_capture_without_a_gap(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, gateway: str, tmp_path: Path
) -> None:
    require_root_tools()
    config = msgspec.structs.replace(
        enrolled(ctx, tenant_a, gateway, tmp_path), heartbeat_interval_s=0.5
    )
    headers = login(client, tenant_a)
    url = f"/api/v1/agents/{config.agent_id}/config"
    with veth_pair("a2zcfg") as pair:

        def opener(bpf: str | None) -> AfPacketSource:
            with thread_in_netns(pair.b_ns):
                return AfPacketSource(pair.b_if, bpf=bpf)

        capture = LiveCapture(opener, "udp")
        shipped: list[ShipStats] = []
        records = live_stream(capture, max_seconds=SEND_SECONDS + 2.5)
        agent = threading.Thread(
            target=lambda: shipped.append(
                asyncio.run(ship_records(config, records, capture=capture))
            )
        )
        agent.start()
        sender = subprocess.Popen(
            pair.exec_argv(
                pair.a_ns,
                [sys.executable, "-c", SENDER, pair.b_ip4, str(SEND_SECONDS), str(PPS)],
            ),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(2.0)  # both ports flow
            put = client.put(url, json={"bpf": f"udp and dst port {KEPT}"}, headers=headers)
            assert put.status_code == 200, put.text
            good = put.json()["desired_version"]
            wait_for(client, url, headers, lambda s: s["applied_version"] == good)
            switched_at = time.time()

            time.sleep(1.5)
            bad = client.put(url, json={"bpf": "udp and dst port 99999"}, headers=headers)
            assert bad.status_code == 200, bad.text
            bad_version = bad.json()["desired_version"]
            shown = wait_for(client, url, headers, lambda s: s["rejected_version"] == bad_version)
            assert shown["applied_version"] == good  # the old configuration keeps running
            assert shown["in_sync"] is False
            assert "99999" in shown["rejected_reason"], shown["rejected_reason"]
            assert capture.bpf == f"udp and dst port {KEPT}"

            out, _ = sender.communicate(timeout=SEND_SECONDS + 30)
            sent = {int(k): v for k, v in json.loads(out).items()}
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.communicate()
            agent.join(timeout=60)
    assert not agent.is_alive()
    assert shipped and shipped[0].records_acked > 0

    with ctx.sessions.tenant(tenant_a.id) as session:
        conns = [
            events.record_of(row)
            for row in session.scalars(select(Event).where(Event.path == "conn"))
        ]
    captured = {port: 0 for port in (KEPT, OTHER)}
    last_seen = {port: 0.0 for port in (KEPT, OTHER)}
    for conn in conns:
        port = conn["id.resp_p"]
        if conn["proto"] != "udp" or port not in captured:
            continue
        captured[port] += conn["orig_pkts"]
        last_seen[port] = max(last_seen[port], conn["ts"] + (conn.get("duration") or 0.0))
    assert captured[KEPT] == sent[KEPT]  # not one packet of the kept port lost
    assert 0 < captured[OTHER] < sent[OTHER]  # the other port until the switch ...
    assert last_seen[OTHER] < switched_at  # ... and never after it
    with ctx.sessions.tenant(tenant_a.id) as session:
        from a2z.server.audit.models import AuditEvent

        actions = list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.at)))
    assert actions.count("agent.config.set") == 2
    assert "agent.config.applied" in actions
    assert "agent.config.rejected" in actions
