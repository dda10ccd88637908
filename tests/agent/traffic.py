"""Tiny stdlib traffic tools run inside test namespaces: ``python -m tests.agent.traffic CMD ...``.

Every command is bounded in time (``--seconds``) so a test can never hang on it.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
import time
from collections.abc import Callable

DNS_ANSWER = "10.77.0.99"  # the address the DNS responder gives for every A query


def udp_echo(port: int, seconds: float) -> None:
    """Echo UDP datagrams on IPv4 and IPv6 until ``seconds`` pass."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    _serve(sock, seconds, lambda data: data)


def dns_server(port: int, seconds: float) -> None:
    """Answer every DNS query with one A record (``DNS_ANSWER``), NXDOMAIN for other types."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    _serve(sock, seconds, _dns_answer)


def _dns_answer(query: bytes) -> bytes:
    ident, flags = struct.unpack_from("!HH", query)
    end = 12
    while end < len(query) and query[end]:
        end += query[end] + 1
    question = query[12 : end + 5]
    (qtype,) = struct.unpack_from("!H", query, end + 1)
    if qtype != 1:
        return struct.pack("!HHHHHH", ident, 0x8183 | (flags & 0x0100), 1, 0, 0, 0) + question
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + socket.inet_aton(DNS_ANSWER)
    header = struct.pack("!HHHHHH", ident, 0x8180 | (flags & 0x0100), 1, 1, 0, 0)
    return header + question + answer


def _serve(sock: socket.socket, seconds: float, reply: Callable[[bytes], bytes]) -> None:
    deadline = time.monotonic() + seconds
    print("ready", flush=True)
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, peer = sock.recvfrom(65535)
        except TimeoutError:
            break
        sock.sendto(reply(data), peer)


def send_udp(host: str, port: int, sizes: list[int], seconds: float) -> None:
    """Send one datagram of each size from one socket and wait for each echo."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(seconds)
        for size in sizes:
            sock.sendto(os.urandom(size), (host, port))
            sock.recvfrom(65535)


def ping(host: str, size: int, count: int, seconds: float) -> None:
    """ICMP/ICMPv6 echo with a raw socket (there may be no ping binary); waits for replies."""
    v6 = ":" in host
    family = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    with socket.socket(family, socket.SOCK_RAW, proto) as sock:
        sock.settimeout(seconds)
        ident = os.getpid() & 0xFFFF
        for seq in range(count):
            payload = bytes(i & 0xFF for i in range(size))
            msg = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, ident, seq) + payload
            if not v6:  # the kernel fills in the ICMPv6 checksum itself
                msg = msg[:2] + struct.pack("!H", _checksum(msg)) + msg[4:]
            sock.sendto(msg, (host, 0))
            want = 129 if v6 else 0
            while True:
                data = sock.recv(65535)
                icmp = data if v6 else data[(data[0] & 0x0F) * 4 :]
                if icmp[0] == want:
                    break


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.agent.traffic")
    parser.add_argument("--seconds", type=float, default=10.0)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("udp-echo")
    p.add_argument("port", type=int)
    p = sub.add_parser("dns-server")
    p.add_argument("port", type=int)
    p = sub.add_parser("send-udp")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("sizes", type=int, nargs="+")
    p = sub.add_parser("ping")
    p.add_argument("host")
    p.add_argument("size", type=int)
    p.add_argument("count", type=int)
    args = parser.parse_args(argv)
    if args.cmd == "udp-echo":
        udp_echo(args.port, args.seconds)
    elif args.cmd == "dns-server":
        dns_server(args.port, args.seconds)
    elif args.cmd == "send-udp":
        send_udp(args.host, args.port, args.sizes, args.seconds)
    else:
        ping(args.host, args.size, args.count, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
