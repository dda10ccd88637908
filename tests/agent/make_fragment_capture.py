"""Re-create tests/data/frag-v4v6-udp-icmp.pcap: real fragmented traffic through a veth pair.

Run as root from the repository root: ``python -m tests.agent.make_fragment_capture [OUT]``.
The kernel fragments what the tools send (MTU 1500): UDP datagrams of 1,600-9,000 bytes echoed
back, and ICMP/ICMPv6 echoes of 3,000 bytes, over IPv4 and IPv6.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.agent.netns import run, veth_pair

OUT = Path(__file__).resolve().parents[1] / "data" / "frag-v4v6-udp-icmp.pcap"
PORT = 9000


def make(out: Path) -> None:
    """Capture the traffic on the server end of a fresh veth pair into ``out``."""
    py = [sys.executable, "-m", "tests.agent.traffic", "--seconds", "8"]
    with veth_pair("a2zfrag") as pair:
        dump = subprocess.Popen(
            pair.exec_argv(
                pair.b_ns,
                [
                    "tcpdump",
                    "-i",
                    pair.b_if,
                    "--immediate-mode",
                    "-s",
                    "0",
                    "-U",
                    "-w",
                    str(out),
                    "ip or ip6 net fd77::/64",
                ],
            )
        )
        server = subprocess.Popen(
            pair.exec_argv(pair.b_ns, [*py, "udp-echo", str(PORT)]), stdout=subprocess.PIPE
        )
        try:
            assert server.stdout is not None
            server.stdout.readline()  # "ready"
            time.sleep(1.0)  # tcpdump is listening by now
            for host in (pair.b_ip4, pair.b_ip6):
                run(
                    pair.exec_argv(
                        pair.a_ns, [*py, "send-udp", host, str(PORT), "1600", "4000", "9000"]
                    )
                )
                run(pair.exec_argv(pair.a_ns, [*py, "ping", host, "3000", "2"]))
            time.sleep(1.0)
        finally:
            for proc in (server, dump):
                proc.terminate()
                proc.wait(timeout=10)


if __name__ == "__main__":
    make(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
