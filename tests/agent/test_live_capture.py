"""Live capture on a veth pair in network namespaces: real traffic from real tools, real records.

The capture (``python -m a2z.agent.live``) runs in namespace b on its end of the veth; curl, dig
and stdlib sockets run in namespace a against servers in b. Needs root, iproute2, curl and dig:
without them these tests fail (they never skip). Every subprocess has a timeout.
"""

from __future__ import annotations

import io
import json
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from a2z.agent.live import run_live
from tests.agent.netns import VethPair, require_root_tools, run, veth_pair
from tests.agent.traffic import DNS_ANSWER

ROOT = Path(__file__).resolve().parents[2]
PY = [sys.executable, "-m", "tests.agent.traffic", "--seconds", "20"]
START_SECONDS = 15.0  # the capture must say "listening" within this
STOP_SECONDS = 20.0  # and exit within this after SIGINT


@pytest.fixture(scope="module")
def pair() -> Iterator[VethPair]:
    require_root_tools("curl", "dig")
    with veth_pair("a2zlive") as made:
        yield made


@pytest.fixture(scope="module")
def servers(pair: VethPair) -> Iterator[None]:
    """HTTP on 8080, DNS on 53 and a UDP echo on 9000, all in namespace b."""
    with tempfile.TemporaryDirectory() as www:
        (Path(www) / "index.html").write_text("<h1>hello from b</h1>\n")
        procs = [
            subprocess.Popen(
                pair.exec_argv(
                    pair.b_ns,
                    [sys.executable, "-m", "http.server", "8080", "--bind", "::", "-d", www],
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            _ready(subprocess.Popen(pair.exec_argv(pair.b_ns, [*PY, "dns-server", "53"]), **_io())),
            _ready(subprocess.Popen(pair.exec_argv(pair.b_ns, [*PY, "udp-echo", "9000"]), **_io())),
        ]
        try:
            _wait_for_tcp(pair, 8080)
            yield
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)
                if proc.stdout is not None:
                    proc.stdout.close()


def _io() -> dict[str, Any]:
    return {"stdout": subprocess.PIPE, "text": True, "cwd": ROOT}


def _ready(proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_SECONDS)
    assert ready and proc.stdout.readline().strip() == "ready"
    return proc


def _wait_for_tcp(pair: VethPair, port: int) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        probe = subprocess.run(
            pair.exec_argv(pair.b_ns, ["python3", "-c", _CONNECT.format(port=port)]),
            capture_output=True,
            timeout=5,
        )
        if probe.returncode == 0:
            return
        time.sleep(0.1)
    pytest.fail(f"nothing listens on port {port} in {pair.b_ns}")


_CONNECT = "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1).close()"


class Capture:
    """``python -m a2z.agent.live`` in namespace b, started and waited for; stopped by SIGINT."""

    def __init__(self, pair: VethPair, *args: str) -> None:
        argv = [sys.executable, "-m", "a2z.agent.live", "-i", pair.b_if, "--max-seconds", "30"]
        self.proc = subprocess.Popen(
            pair.exec_argv(pair.b_ns, [*argv, *args]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stderr is not None
        ready, _, _ = select.select([self.proc.stderr], [], [], START_SECONDS)
        line = self.proc.stderr.readline() if ready else ""
        if not line.startswith("listening on"):
            self.proc.kill()
            pytest.fail(f"capture did not start: {line!r}")
        time.sleep(0.2)  # the ring is bound by now; give the kernel a moment to settle

    def stop(self, sig: signal.Signals | None = signal.SIGINT) -> tuple[list[dict[str, Any]], str]:
        """Send ``sig`` (None: wait for a limit to end it); the records and the summary."""
        time.sleep(0.3)  # the last frames reach the ring (block timeout 50 ms)
        if sig is not None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=STOP_SECONDS)
            pytest.fail(f"capture did not stop: {err}")
        assert self.proc.returncode == 0, err
        if sig is not None:
            assert f"stopped by {sig.name}" in err
        return [json.loads(line) for line in out.splitlines()], err


def _in_a(pair: VethPair, argv: list[str], timeout: float = 20.0) -> str:
    return run(pair.exec_argv(pair.a_ns, argv), timeout=timeout)


def _traffic_py(pair: VethPair, *args: str) -> None:
    done = subprocess.run(
        pair.exec_argv(pair.a_ns, [*PY, *args]), capture_output=True, timeout=30, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr


def _conns(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["_path"] == "conn"]


def test_live_capture_of_curl_dig_udp_and_ping_gives_the_right_records(
    pair: VethPair, servers: None
) -> None:
    capture = Capture(pair)
    page = _in_a(pair, ["curl", "-sS", "--max-time", "10", f"http://{pair.b_ip4}:8080/"])
    assert "hello from b" in page
    answer = _in_a(
        pair, ["dig", f"@{pair.b_ip4}", "+short", "+tries=1", "+time=3", "www.example.test", "A"]
    )
    assert answer.strip() == DNS_ANSWER
    _traffic_py(pair, "send-udp", pair.b_ip4, "9000", "100", "4000")  # 4000: fragmented
    _traffic_py(pair, "send-udp", pair.b_ip6, "9000", "3000")  # IPv6 fragments
    _traffic_py(pair, "ping", pair.b_ip4, "56", "2")
    records, summary = capture.stop()

    conns = _conns(records)
    http = [c for c in conns if c["id.resp_p"] == 8080]
    assert len(http) == 1
    (h,) = http
    assert (h["proto"], h["conn_state"], h["id.orig_h"]) == ("tcp", "SF", pair.a_ip4)
    assert h["history"].startswith("ShAD") and "f" in h["history"].lower()
    dns = [c for c in conns if c["id.resp_p"] == 53 and c["proto"] == "udp"]
    assert len(dns) == 1 and (dns[0]["orig_pkts"], dns[0]["resp_pkts"]) == (1, 1)
    (echo4,) = [c for c in conns if c["id.resp_p"] == 9000 and c["id.orig_h"] == pair.a_ip4]
    # Two datagrams each way; the 4,000-byte ones arrived as 3 fragments and count once.
    assert (echo4["orig_pkts"], echo4["resp_pkts"]) == (2, 2)
    assert (echo4["orig_bytes"], echo4["resp_bytes"]) == (4100, 4100)
    (echo6,) = [c for c in conns if c["id.resp_p"] == 9000 and c["id.orig_h"] == pair.a_ip6]
    assert (echo6["orig_pkts"], echo6["orig_bytes"]) == (1, 3000)
    pings = [c for c in conns if c["proto"] == "icmp" and c["id.orig_p"] == 8]
    assert [(p["orig_pkts"], p["resp_pkts"]) for p in pings] == [(2, 2)]
    assert not [r for r in records if r["_path"] == "weird"]
    assert re.search(r"fragments: .*datagrams=4", summary)  # 4000 out and back, 3000 out and back

    # Application records from the protocol analyzers.
    (query,) = [r for r in records if r["_path"] == "dns"]
    assert (query["query"], query["qtype_name"], query["rcode_name"]) == (
        "www.example.test",
        "A",
        "NOERROR",
    )
    assert query["answers"] == [DNS_ANSWER]
    assert query["uid"] == dns[0]["uid"]
    (req,) = [r for r in records if r["_path"] == "http"]
    assert (req["method"], req["uri"], req["status_code"]) == ("GET", "/", 200)
    assert req["host"] == f"{pair.b_ip4}:8080"
    assert req["uid"] == h["uid"]


def test_bpf_filter_drops_other_traffic_in_the_kernel(pair: VethPair, servers: None) -> None:
    capture = Capture(pair, "--bpf", "udp port 9000")
    _traffic_py(pair, "send-udp", pair.b_ip4, "9000", "100", "200", "300")
    _in_a(
        pair, ["curl", "-sS", "--max-time", "10", "-o", "/dev/null", f"http://{pair.b_ip4}:8080/"]
    )
    _in_a(pair, ["dig", f"@{pair.b_ip4}", "+short", "+tries=1", "+time=3", "a.example.test"])
    records, summary = capture.stop()
    assert {(c["proto"], c["id.resp_p"]) for c in _conns(records)} == {("udp", 9000)}
    # The kernel counts only frames that passed the filter: 3 datagrams and 3 echoes, while
    # the HTTP, DNS and ARP frames never reached the ring.
    assert "kernel: received 6 " in summary
    assert re.search(r"packets 6 ", summary)


def test_fanout_workers_share_the_flows_without_splitting_any(
    pair: VethPair, servers: None
) -> None:
    capture = Capture(pair, "--workers", "2", "--bpf", "udp port 9000")
    for _ in range(16):  # each run is a new socket: a new source port, a new flow
        _traffic_py(pair, "send-udp", pair.b_ip4, "9000", "100", "2000")
    records, summary = capture.stop()
    echoes = _conns(records)
    assert len(echoes) == 16
    assert len({c["id.orig_p"] for c in echoes}) == 16
    # Whole flows per worker (flow hash), fragments defragmented for the hash: never split.
    assert all((c["orig_pkts"], c["resp_pkts"], c["orig_bytes"]) == (2, 2, 2100) for c in echoes)
    each = re.search(r"workers: 2  packets each: (\d+) (\d+)", summary)
    assert each is not None, summary
    assert int(each[1]) + int(each[2]) == 16 * 4
    assert int(each[1]) > 0 and int(each[2]) > 0  # 16 flows all hashed to one worker: 2**-15


_PRINT_FIRST_FRAME = """
import sys
from a2z.agent.capture.af_packet import AfPacketSource
src = AfPacketSource(sys.argv[1], bpf=sys.argv[2])
print("ready", flush=True)
for _ in range(100):
    for pkt in src.batch(0.1):
        print(pkt.data[12:18].hex(), pkt.wirelen - len(pkt.data), flush=True)
        raise SystemExit(0)
raise SystemExit("no frame")
"""


def test_vlan_tag_stripped_by_the_nic_is_put_back_and_filters_see_it(pair: VethPair) -> None:
    # The receiving kernel moves an 802.1Q tag into packet metadata before AF_PACKET sees the
    # frame (as NICs with rx-vlan-offload do): the frame we yield must carry the tag again, and
    # "vlan 7" must match in the kernel. Tagged frames are written raw on a's end of the veth.
    b_mac = run(pair.exec_argv(pair.b_ns, ["cat", f"/sys/class/net/{pair.b_if}/address"]))
    reader = subprocess.Popen(
        pair.exec_argv(
            pair.b_ns,
            [sys.executable, "-c", _PRINT_FIRST_FRAME, pair.b_if, "vlan 7 and udp port 9107"],
        ),
        **_io(),
    )
    try:
        _ready(reader)
        time.sleep(0.2)
        untagged = f"import socket; socket.socket(2, 2).sendto(b'plain', ('{pair.b_ip4}', 9107))"
        _in_a(pair, ["python3", "-c", untagged])  # same port, no tag: filtered out
        sender = subprocess.run(
            pair.exec_argv(pair.a_ns, ["python3", "-c", _SEND_TAGGED, pair.a_if, b_mac.strip()]),
            capture_output=True,
            timeout=10,
        )
        assert sender.returncode == 0, sender.stderr
        out, _ = reader.communicate(timeout=20)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.communicate(timeout=10)
    assert reader.returncode == 0, out
    tag, snapped = out.split()
    # TPID 0x8100, TCI 0x0007 (VLAN 7), then the inner ethertype (IPv4); nothing cut off.
    assert (tag, snapped) == ("8100" + "0007" + "0800", "0")


_PRINT_FIRST_FRAME = """
import sys
from a2z.agent.capture.af_packet import AfPacketSource
src = AfPacketSource(sys.argv[1], bpf=sys.argv[2])
print("ready", flush=True)
for _ in range(100):
    for pkt in src.batch(0.1):
        print(pkt.data[12:18].hex(), pkt.wirelen - len(pkt.data), flush=True)
        raise SystemExit(0)
raise SystemExit("no frame")
"""

_SEND_TAGGED = """
import socket, struct, sys
ifname, dst = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", ""))
udp = struct.pack("!HHHH", 40000, 9107, 8 + 6, 0) + b"tagged"
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                 socket.inet_aton("10.78.0.1"), socket.inet_aton("10.78.0.2"))
frame = dst + b"\\x02\\x00\\x00\\x00\\x00\\x01" + struct.pack("!HHH", 0x8100, 7, 0x0800) + ip + udp
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
for _ in range(3):
    s.send(frame)
"""


def test_max_packets_ends_the_capture_by_itself(pair: VethPair, servers: None) -> None:
    capture = Capture(pair, "--bpf", "udp port 9000", "--max-packets", "4")
    _traffic_py(pair, "send-udp", pair.b_ip4, "9000", "10", "20", "30")
    records, summary = capture.stop(None)
    assert "stopped by max-packets" in summary
    assert re.search(r"packets 4 ", summary)
    (conn,) = _conns(records)  # the flow is flushed at the end, with what was seen
    assert (conn["orig_pkts"], conn["resp_pkts"]) == (2, 2)


def test_sigterm_stops_fanout_workers_cleanly(pair: VethPair, servers: None) -> None:
    capture = Capture(pair, "--workers", "2", "--bpf", "udp port 9000")
    _traffic_py(pair, "send-udp", pair.b_ip4, "9000", "10")
    records, summary = capture.stop(signal.SIGTERM)
    assert len(_conns(records)) == 1
    assert "workers: 2" in summary


def test_unknown_interface_or_bad_filter_is_a_clear_error_and_exit_2() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_live("a2z-no-such0", None, 1, out, err) == 2
    assert err.getvalue() == "a2z agent run: no such network interface: a2z-no-such0\n"
    err = io.StringIO()
    assert run_live("lo", "udp portt 53", 1, out, err, max_seconds=1) == 2
    assert err.getvalue().startswith("a2z agent run: bad BPF filter 'udp portt 53': ")
    assert out.getvalue() == ""
