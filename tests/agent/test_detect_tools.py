"""Built-in detections on captures of real tools: nmap, hping3, dig, curl and Python sockets.

Each scenario runs its tool from namespace ``a`` against servers in namespace ``b`` (a veth
pair the test makes), tcpdump records it on ``b``'s side, and the capture is replayed through
the pipeline and the edge detection: the scenario's detection must fire, and nothing else.
Needs root and the tools; .ci/run installs them (nmap, hping3, dnsutils, curl, tcpdump).
``A2Z_KEEP_DETECT_CAPTURES=DIR`` keeps the captures (bench/data/detect/ was made so).
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import string
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from a2z.agent.detect import EdgeDetector
from a2z.agent.replay import iter_records
from a2z.records import Alert, Conn
from tests.agent.netns import VethPair, require_root_tools, run, veth_pair

LAB = Path(__file__).with_name("detect_lab.py")
TOOLS = ("tcpdump", "nmap", "hping3", "dig", "curl")
HTTP_PORT = 8080
ABSENT = range(3, 23)  # 10.77.0.3-22: sweep targets that never answer (static neighbours)


@dataclass(frozen=True)
class Lab:
    pair: VethPair
    tmp: Path

    def a(self, *argv: str, timeout: float = 60) -> str:
        """Run a command in the client namespace (the attacker)."""
        return run(self.pair.exec_argv(self.pair.a_ns, list(argv)), timeout=timeout)


def _mac(ns: str, ifname: str) -> str:
    link = json.loads(run(["ip", "-n", ns, "-j", "link", "show", "dev", ifname]))
    return str(link[0]["address"])


def _start_in_b(lab_pair: VethPair, argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        lab_pair.exec_argv(lab_pair.b_ns, argv),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_port(pair: VethPair, proto: str, port: int) -> None:
    flag = "-ltn" if proto == "tcp" else "-lun"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = run(pair.exec_argv(pair.b_ns, ["ss", flag]))
        if f":{port} " in out:
            return
        time.sleep(0.1)
    pytest.fail(f"no {proto} listener on port {port} in the lab")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_root_tools(*TOOLS)
    tmp = tmp_path_factory.mktemp("detect-lab")
    (tmp / "www").mkdir()
    (tmp / "www" / "index.html").write_text("<html>lab</html>\n")
    with veth_pair("a2zdet") as pair:
        # The two ends know each other's MAC from the start: while ARP was still resolving,
        # the kernel queued only the first dozen SYNs of a fast scan and dropped the rest.
        for ns, ifname, peer_ip, peer_ns, peer_if in (
            (pair.a_ns, pair.a_if, pair.b_ip4, pair.b_ns, pair.b_if),
            (pair.b_ns, pair.b_if, pair.a_ip4, pair.a_ns, pair.a_if),
        ):
            run(["ip", "-n", ns, "neigh", "replace", peer_ip, "lladdr", _mac(peer_ns, peer_if),
                 "dev", ifname, "nud", "permanent"])  # fmt: skip
        for i in ABSENT:  # frames to absent hosts reach the wire instead of dying in ARP
            mac = f"02:77:00:00:01:{i:02x}"
            run(["ip", "-n", pair.a_ns, "neigh", "replace", f"10.77.0.{i}", "lladdr", mac,
                 "dev", pair.a_if, "nud", "permanent"])  # fmt: skip
        py = sys.executable
        servers = [
            _start_in_b(pair, [py, "-m", "http.server", str(HTTP_PORT), "--bind", pair.b_ip4,
                               "--directory", str(tmp / "www")]),
            _start_in_b(pair, [py, str(LAB), "dns", pair.b_ip4]),
            _start_in_b(pair, [py, str(LAB), "telnet", pair.b_ip4]),
            _start_in_b(pair, [py, str(LAB), "ftp", pair.b_ip4]),
        ]  # fmt: skip
        try:
            _wait_port(pair, "tcp", HTTP_PORT)
            _wait_port(pair, "udp", 53)
            _wait_port(pair, "tcp", 23)
            _wait_port(pair, "tcp", 21)
            yield Lab(pair, tmp)
        finally:
            for server in servers:
                server.terminate()
                try:
                    server.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait(timeout=5)


def _capture(lab: Lab, name: str, traffic: Callable[[Lab], None]) -> Path:
    """Record ``traffic`` on the server side of the veth pair; return the pcap."""
    path = lab.tmp / f"{name}.pcap"
    pair = lab.pair
    argv = ["tcpdump", "-i", pair.b_if, "--immediate-mode", "-U", "-n", "-s", "0", "-w", str(path)]
    dump = subprocess.Popen(
        pair.exec_argv(pair.b_ns, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_listening(dump)
        traffic(lab)
        _wait_caught_up(lab, path)
    finally:
        dump.terminate()
        dump.wait(timeout=10)
        if dump.stderr is not None:
            dump.stderr.close()
    return path


SENTINEL_ETHERTYPE = 0x88B5  # IEEE 802 local experimental: no decoder or detection uses it


def _wait_caught_up(lab: Lab, path: Path, limit_s: float = 30.0) -> None:
    """Until tcpdump has written everything the tool sent.

    Stopping tcpdump loses what it has not yet read from the kernel, and on a loaded machine
    it can lag the tool by seconds (an nmap scan once looked like 15 ports instead of 200;
    waiting for the file to stop growing was not enough either: a starved tcpdump pauses).
    So a marker frame goes out on the wire after the traffic; frames on the veth are captured
    in order, so once the marker is in the file, so is everything before it.
    """
    marker = f"a2z-lab-caught-up-{time.monotonic_ns()}".encode()
    frame = b"\xff" * 6 + b"\x02\x77\x00\x00\x00\xfe" + SENTINEL_ETHERTYPE.to_bytes(2) + marker
    send = (
        "import socket,sys; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW);"
        f" s.bind(({lab.pair.b_if!r}, 0)); s.send(bytes.fromhex(sys.argv[1]))"
    )
    run(lab.pair.exec_argv(lab.pair.b_ns, [sys.executable, "-c", send, frame.hex()]))
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if path.exists() and marker in path.read_bytes():
            return
        time.sleep(0.05)
    pytest.fail(f"tcpdump did not write the marker frame within {limit_s:.0f} s")


def _wait_listening(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            break
        chunk = os.read(proc.stderr.fileno(), 4096)
        seen += chunk
        if b"listening on" in seen:
            return
        if not chunk:
            break
    pytest.fail(f"tcpdump did not start: {seen!r}")


def _random_labels(seed: int, n: int, length: int, alphabet: str) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(length)) for _ in range(n)]


# -- scenarios: the traffic, and the dedup keys of the alerts it must raise -------------------


def syn_scan(lab: Lab) -> None:
    # --send-ip: through the kernel's IP layer and its neighbour table (primed by the fixture);
    # with its own ARP on a fresh veth nmap once got only 14 of the 200 SYNs onto the wire.
    lab.a("nmap", "-sS", "-Pn", "-n", "--send-ip", "-p", "1-200", "--max-retries", "0",
          lab.pair.b_ip4)  # fmt: skip


def connect_scan(lab: Lab) -> None:
    lab.a("nmap", "-sT", "-Pn", "-n", "--top-ports", "50", "--max-retries", "0", lab.pair.b_ip4)


def tcp_sweep(lab: Lab) -> None:
    targets = f"{lab.pair.b_ip4}-{ABSENT[-1]}"
    lab.a("nmap", "-sS", "-Pn", "-n", "--send-ip", "-p", "445", "--max-retries", "0",
          "--host-timeout", "5s", targets)  # fmt: skip


def ping_sweep(lab: Lab) -> None:
    targets = f"{lab.pair.b_ip4}-{ABSENT[-1]}"
    lab.a("nmap", "-sn", "-PE", "-n", "--send-ip", "--max-retries", "0", targets)


def syn_flood(lab: Lab) -> None:
    lab.a("hping3", "-q", "-S", "-p", str(HTTP_PORT), "-c", "1000", "-i", "u200", lab.pair.b_ip4)


def dns_tunnel(lab: Lab) -> None:
    labels = _random_labels(1, 8, 48, string.ascii_lowercase + "234567")
    queries = [arg for label in labels for arg in (f"{label}.t.tunnel.example", "TXT")]
    lab.a("dig", f"@{lab.pair.b_ip4}", "+tries=1", "+time=2", *queries)


def dga(lab: Lab) -> None:
    names = [f"{x}.com" for x in _random_labels(2, 8, 16, string.ascii_lowercase)]
    lab.a("dig", f"@{lab.pair.b_ip4}", "+tries=1", "+time=2", *names)


def beacon(lab: Lab) -> None:
    lab.a(sys.executable, str(LAB), "beacon", lab.pair.b_ip4, str(HTTP_PORT), "7", "0.6")


def basic_auth(lab: Lab) -> None:
    lab.a("curl", "-s", "-o", "/dev/null", "-u", "admin:hunter2",
          f"http://{lab.pair.b_ip4}:{HTTP_PORT}/")  # fmt: skip


def telnet_login(lab: Lab) -> None:
    lab.a(sys.executable, str(LAB), "telnet-login", lab.pair.b_ip4)


def ftp_login(lab: Lab) -> None:
    lab.a(sys.executable, str(LAB), "ftp-login", lab.pair.b_ip4)


def nmap_nse(lab: Lab) -> None:
    lab.a("nmap", "-Pn", "-n", "-p", str(HTTP_PORT), "--script", "http-title", lab.pair.b_ip4)


def sqlmap_agent(lab: Lab) -> None:
    lab.a("curl", "-s", "-o", "/dev/null", "-A", "sqlmap/1.7.2#stable (https://sqlmap.org)",
          f"http://{lab.pair.b_ip4}:{HTTP_PORT}/?id=1")  # fmt: skip


def traversal(lab: Lab) -> None:
    lab.a("curl", "-s", "-o", "/dev/null", "--path-as-is",
          f"http://{lab.pair.b_ip4}:{HTTP_PORT}/static/../../etc/passwd")  # fmt: skip


def benign(lab: Lab) -> None:
    """A person's use of the same services: pages, lookups, a login page without secrets."""
    base = f"http://{lab.pair.b_ip4}:{HTTP_PORT}"
    for path in ("/", "/index.html", "/missing.css", "/?q=password+manager"):
        lab.a("curl", "-s", "-o", "/dev/null", base + path)
    lab.a("dig", f"@{lab.pair.b_ip4}", "+tries=1", "+time=2", "www.example.com", "A",
          "mail.example.com", "MX", "example.com", "TXT", "example.com", "A")  # fmt: skip


A, B = "10.77.0.1", "10.77.0.2"
SCENARIOS: dict[str, tuple[Callable[[Lab], None], set[str]]] = {
    "nmap-syn-scan": (syn_scan, {f"a2z.net.scan.vertical|{A}|{B}"}),
    "nmap-connect-scan": (connect_scan, {f"a2z.net.scan.vertical|{A}|{B}"}),
    "nmap-tcp-sweep": (tcp_sweep, {f"a2z.net.scan.horizontal|{A}|tcp|445"}),
    "nmap-ping-sweep": (ping_sweep, {f"a2z.net.scan.icmp_sweep|{A}"}),
    "hping3-syn-flood": (syn_flood, {f"a2z.net.synflood|{B}|{HTTP_PORT}"}),
    "dig-dns-tunnel": (dns_tunnel, {f"a2z.dns.tunnel|{A}|tunnel.example"}),
    "dig-dga": (dga, {f"a2z.dns.dga|{A}"}),
    "socket-beacon": (beacon, {f"a2z.net.beacon|{A}|{B}|{HTTP_PORT}|tcp"}),
    "curl-basic-auth": (basic_auth, {f"a2z.cred.cleartext|{A}|{B}|http-basic"}),
    "socket-telnet-login": (telnet_login, {f"a2z.cred.cleartext|{A}|{B}|telnet"}),
    "ftplib-login": (ftp_login, {f"a2z.cred.cleartext|{A}|{B}|ftp"}),
    "nmap-nse-http": (nmap_nse, {f"a2z.web.scanner_ua|{A}|{B}|nmap NSE"}),
    "curl-sqlmap-agent": (sqlmap_agent, {f"a2z.web.scanner_ua|{A}|{B}|sqlmap"}),
    "curl-traversal": (traversal, {f"a2z.web.traversal|{A}|{B}"}),
    "benign-use": (benign, set()),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_detection_fires_on_real_tool_traffic_and_nothing_else(lab: Lab, name: str) -> None:
    traffic, expected = SCENARIOS[name]
    capture = _capture(lab, name, traffic)
    keep = os.environ.get("A2Z_KEEP_DETECT_CAPTURES")  # how bench/data/detect/ was made
    if keep:
        shutil.copyfile(capture, Path(keep) / capture.name)
    alerts = [r for r in EdgeDetector().records(iter_records(capture)) if isinstance(r, Alert)]
    first = {a.dedup_key for a in alerts if "repeats suppressed" not in (a.msg or "")}
    assert first == expected, _diagnosis(capture, alerts)


def _diagnosis(capture: Path, alerts: list[Alert]) -> str:
    """What the capture held, so a failure says whether the tool or the detection fell short."""
    states = Counter((r.proto, r.conn_state) for r in iter_records(capture) if isinstance(r, Conn))
    return f"alerts {[a.msg for a in alerts]}; conns by (proto, state) {dict(states)}"
