"""A stand-in for an AF_PACKET fanout member, for capture-worker tests without root.

Spawned worker processes import it by name, so it lives in a module. Each batch is one DNS
exchange to port 53 and one datagram to port 9999, from a fresh source port (a new flow),
stamped AGE seconds in the past so the pipeline ends the flows at once. The "kernel filter"
is a stand-in too: ``udp port 53`` keeps only the DNS exchange; ``refuse`` is a filter that
worker ``refuse_index`` cannot attach (as a kernel might refuse a program).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from a2z.agent.capture.af_packet import CaptureCounters, RingConfig
from a2z.agent.capture.bpf import FilterError
from a2z.agent.capture.packet import RawPacket
from tests.agent.packet_builder import eth, ipv4, raw, udp
from tests.agent.protocol_builder import dns_message, dns_name

AGE = 1000.0  # packets are stamped this long ago: past every flow timeout
QUERY = dns_message(5, questions=[(dns_name("worker.example"), 1)])
REPLY = dns_message(5, response=True, questions=[(dns_name("worker.example"), 1)])


def port_base(index: int) -> int:
    """Worker ``index``'s source ports start here (tells the workers' records apart)."""
    return 20000 + 10000 * index


@dataclass(frozen=True)
class FakeOpener:
    refuse: str = ""
    refuse_index: int = 1

    def __call__(self, bpf: str | None, group: int, index: int) -> FakeSource:
        return FakeSource(bpf or "", index, self)


class FakeSource:
    linktype = 1
    interface = "fake0"

    def __init__(self, bpf: str, index: int, opener: FakeOpener) -> None:
        self.ring_config = RingConfig()
        self.bpf = bpf
        self.index = index
        self.opener = opener
        self.batches = 0
        self.counters = CaptureCounters()

    def batch(self, timeout: float) -> list[RawPacket]:
        time.sleep(0.02)
        stamp = time.time()  # before reading the filter: a later stamp saw the newer filter
        bpf = self.bpf
        self.batches += 1
        sport = port_base(self.index) + self.batches % 10000
        ts = stamp - AGE
        cli, srv = "10.9.0.1", "10.9.0.2"
        out = [
            raw(ts, eth(ipv4(cli, srv, 17, udp(sport, 53, QUERY)))),
            raw(ts + 0.001, eth(ipv4(srv, cli, 17, udp(53, sport, REPLY)))),
        ]
        if bpf != "udp port 53":
            out.append(raw(ts + 0.002, eth(ipv4(cli, srv, 17, udp(sport, 9999, b"x")))))
        self.counters.received += len(out)
        return out

    def set_filter(self, bpf: str | None) -> None:
        if bpf and bpf == self.opener.refuse and self.index == self.opener.refuse_index:
            raise FilterError(f"the kernel refused {bpf!r}")
        self.bpf = bpf or ""

    def read_counters(self) -> CaptureCounters:
        return self.counters

    def close(self) -> None:
        pass
