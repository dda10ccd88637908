"""Finished flows to Zeek conn records (a2z.records.Conn)."""

from __future__ import annotations

import socket
from typing import Final

from a2z.agent.flows.state import udp_conn_state
from a2z.agent.flows.table import PROTO_TCP, PROTO_UDP, Flow
from a2z.records import Conn
from a2z.records.network import Proto

# Small on purpose: under a SYN flood from random addresses every entry is a miss that costs
# memory (4,096 entries were 0.7 MiB of the flood's peak RSS).
_ADDR_CACHE_SIZE: Final = 512
_addr_cache: Final[dict[bytes, str]] = {}  # address -> text: most flows share a few hosts


def format_addr(addr: bytes) -> str:
    """Render a 4- or 16-byte address as Zeek prints it.

    Remembered for the last few hundred addresses (dropped all at once when full): every
    conn record formats two, and the hosts of a network repeat (ADR 0006).
    """
    text = _addr_cache.get(addr)
    if text is None:
        text = socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6, addr)
        if len(_addr_cache) >= _ADDR_CACHE_SIZE:
            _addr_cache.clear()
        _addr_cache[addr] = text
    return text


def flow_to_conn(flow: Flow) -> Conn:
    """Build the conn record of a finished flow, with Zeek's field semantics.

    As in Zeek's conn/main.zeek, duration and payload byte counts are only set when the flow
    lasted longer than zero seconds.
    """
    proto: Proto
    if flow.proto == PROTO_TCP:
        proto = "tcp"
        orig_size = flow.orig_bytes()
        resp_size = flow.resp_bytes()
        state = flow.conn_state(flow.letters)
    elif flow.proto == PROTO_UDP:
        proto = "udp"
        orig_size = max(flow.orig_size, 0)
        resp_size = max(flow.resp_size, 0)
        state = udp_conn_state(flow.orig_size >= 0, flow.resp_size >= 0)
    else:
        proto = "icmp"
        orig_size = max(flow.orig_size, 0)
        resp_size = max(flow.resp_size, 0)
        state = "OTH"
    duration = flow.last - flow.start
    lasted = duration > 0
    return Conn(
        ts=flow.start,
        uid=flow.uid,
        orig_h=format_addr(flow.orig_h),
        orig_p=flow.orig_p,
        resp_h=format_addr(flow.resp_h),
        resp_p=flow.resp_p,
        proto=proto,
        service=flow.service,
        duration=duration if lasted else None,
        orig_bytes=orig_size if lasted else None,
        resp_bytes=resp_size if lasted else None,
        conn_state=state,
        history=flow.letters,
        orig_pkts=flow.orig_pkts,
        orig_ip_bytes=flow.orig_ip_bytes,
        resp_pkts=flow.resp_pkts,
        resp_ip_bytes=flow.resp_ip_bytes,
    )


__all__ = ["flow_to_conn", "format_addr"]
