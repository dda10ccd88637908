"""Two throwaway network namespaces joined by a veth pair, for tests that need real traffic.

Needs root and iproute2; names are unique per call, and everything is removed on exit (the
namespaces' processes are killed by pid, then the namespaces deleted, which deletes the veth).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import pytest

TIMEOUT = 10.0  # seconds any one setup command may take


@dataclass(frozen=True)
class VethPair:
    """Namespace ``a`` (client side) and ``b`` (server side, where captures usually run)."""

    a_ns: str
    b_ns: str
    a_if: str
    b_if: str
    a_ip4: str = "10.77.0.1"
    b_ip4: str = "10.77.0.2"
    a_ip6: str = "fd77::1"
    b_ip6: str = "fd77::2"

    def exec_argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns, *argv]


def require_root_tools(*tools: str) -> None:
    """Fail (never skip) when the test cannot run here: it needs root and these tools."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root (network namespaces, AF_PACKET); run it as root")
    for tool in ("ip", *tools):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed; .ci/run installs it")


def run(argv: Sequence[str], *, timeout: float = TIMEOUT) -> str:
    """Run a command, fail the test with its stderr if it fails."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@contextmanager
def veth_pair(tag: str = "a2z", *, mtu: int = 1500) -> Iterator[VethPair]:
    """Create the pair with IPv4 and IPv6 addresses, offloads off; remove it all afterwards."""
    uniq = secrets.token_hex(3)
    pair = VethPair(
        a_ns=f"{tag}-a-{uniq}", b_ns=f"{tag}-b-{uniq}", a_if=f"va{uniq}", b_if=f"vb{uniq}"
    )
    try:
        for ns in (pair.a_ns, pair.b_ns):
            run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", pair.a_if, "type", "veth", "peer", "name", pair.b_if])
        for ns, ifname, ip4, ip6 in (
            (pair.a_ns, pair.a_if, pair.a_ip4, pair.a_ip6),
            (pair.b_ns, pair.b_if, pair.b_ip4, pair.b_ip6),
        ):
            run(["ip", "link", "set", ifname, "netns", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            run(["ip", "-n", ns, "link", "set", ifname, "mtu", str(mtu)])
            run(["ip", "-n", ns, "addr", "add", f"{ip4}/24", "dev", ifname])
            run(["ip", "-n", ns, "-6", "addr", "add", f"{ip6}/64", "dev", ifname, "nodad"])
            run(["ip", "-n", ns, "link", "set", ifname, "up"])
            if shutil.which("ethtool"):
                # Offloads off: the capture then sees frames as they are on a real wire.
                subprocess.run(
                    pair.exec_argv(ns, ["ethtool", "-K", ifname, "tx", "off", "gso", "off"]),
                    capture_output=True,
                    timeout=TIMEOUT,
                    check=False,
                )
        yield pair
    finally:
        _teardown(pair)


def _teardown(pair: VethPair) -> None:
    for ns in (pair.a_ns, pair.b_ns):
        pids = subprocess.run(
            ["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=TIMEOUT
        ).stdout.split()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), sig)
            if pids and sig == signal.SIGTERM:
                time.sleep(0.2)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=TIMEOUT)
    # Deleting the namespaces deletes the veth; if a half-made pair stayed in ours, remove it.
    subprocess.run(["ip", "link", "del", pair.a_if], capture_output=True, timeout=TIMEOUT)
