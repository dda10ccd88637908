"""Builds DNS messages, TLS hellos and whole TCP/UDP conversations as captured frames (tests)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from a2z.agent.capture import RawPacket
from tests.agent.packet_builder import ACK, FIN, SYN, eth, ipv4, raw, tcp, udp

__all__ = [
    "TcpConversation",
    "client_hello",
    "dns_message",
    "dns_name",
    "handshake",
    "server_hello",
    "tls_record",
    "udp_exchange",
]


def dns_name(name: str) -> bytes:
    """A domain name in wire format, uncompressed."""
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def dns_message(
    trans_id: int,
    *,
    response: bool = False,
    rcode: int = 0,
    flags: int = 0x0100,
    questions: list[tuple[bytes, int]] | None = None,
    answers: list[tuple[bytes, int, int, bytes]] | None = None,
    authority: int = 0,
    extra: bytes = b"",
) -> bytes:
    """A DNS message: questions are (wire name, qtype), answers (wire name, type, ttl, rdata).

    ``extra`` is appended raw after the answers (authority records, say); ``authority`` is
    the count written in the header for them.
    """
    questions = questions or []
    answers = answers or []
    hdr_flags = flags | (0x8000 if response else 0) | (rcode & 0xF)
    out = struct.pack("!HHHHHH", trans_id, hdr_flags, len(questions), len(answers), authority, 0)
    for name, qtype in questions:
        out += name + struct.pack("!HH", qtype, 1)
    for name, rtype, ttl, rdata in answers:
        out += name + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata
    return out + extra


def tls_record(ctype: int, body: bytes, version: int = 0x0301) -> bytes:
    """One TLS record."""
    return struct.pack("!BHH", ctype, version, len(body)) + body


def handshake(hs_type: int, body: bytes) -> bytes:
    """One handshake message (type, 24-bit length, body)."""
    return bytes([hs_type]) + len(body).to_bytes(3, "big") + body


def _ext(ext_type: int, data: bytes) -> bytes:
    return struct.pack("!HH", ext_type, len(data)) + data


def client_hello(
    *,
    version: int = 0x0303,
    ciphers: tuple[int, ...] = (0x1301, 0xC02F),
    sni: str | None = "example.test",
    groups: tuple[int, ...] = (29, 23),
    point_formats: tuple[int, ...] = (0,),
    sig_algs: tuple[int, ...] = (0x0403, 0x0804),
    alpn: tuple[bytes, ...] = (b"h2", b"http/1.1"),
    versions: tuple[int, ...] = (0x0304, 0x0303),
    extra_extensions: tuple[tuple[int, bytes], ...] = (),
    session_id: bytes = b"",
) -> bytes:
    """A ClientHello handshake body with the usual extensions in a fixed order."""
    exts = b""
    if sni is not None:
        name = sni.encode()
        exts += _ext(0, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name)
    if groups:
        exts += _ext(10, struct.pack(f"!H{len(groups)}H", 2 * len(groups), *groups))
    if point_formats:
        exts += _ext(11, bytes([len(point_formats), *point_formats]))
    if sig_algs:
        exts += _ext(13, struct.pack(f"!H{len(sig_algs)}H", 2 * len(sig_algs), *sig_algs))
    if alpn:
        names = b"".join(bytes([len(a)]) + a for a in alpn)
        exts += _ext(16, struct.pack("!H", len(names)) + names)
    if versions:
        exts += _ext(43, bytes([2 * len(versions)]) + struct.pack(f"!{len(versions)}H", *versions))
    for ext_type, data in extra_extensions:
        exts += _ext(ext_type, data)
    return (
        struct.pack("!H", version)
        + b"\x11" * 32
        + bytes([len(session_id)])
        + session_id
        + struct.pack(f"!H{len(ciphers)}H", 2 * len(ciphers), *ciphers)
        + b"\x01\x00"
        + struct.pack("!H", len(exts))
        + exts
    )


def server_hello(
    *,
    cipher: int = 0x1301,
    selected: int | None = 0x0304,
    group: int | None = 29,
    alpn: bytes | None = None,
    session_id: bytes = b"",
) -> bytes:
    """A ServerHello handshake body."""
    exts = b""
    if selected is not None:
        exts += _ext(43, struct.pack("!H", selected))
    if group is not None:
        exts += _ext(51, struct.pack("!HH", group, 32) + b"\x22" * 32)
    if alpn is not None:
        exts += _ext(16, struct.pack("!HB", len(alpn) + 1, len(alpn)) + alpn)
    return (
        b"\x03\x03"
        + b"\x22" * 32
        + bytes([len(session_id)])
        + session_id
        + struct.pack("!HB", cipher, 0)
        + struct.pack("!H", len(exts))
        + exts
    )


@dataclass
class TcpConversation:
    """A TCP connection as frames: handshake, data in either direction, close."""

    client: tuple[str, int] = ("10.0.0.1", 40000)
    server: tuple[str, int] = ("10.0.0.2", 80)
    ts: float = 1000.0
    seq: dict[bool, int] = field(default_factory=lambda: {True: 1000, False: 5000})
    packets: list[RawPacket] = field(default_factory=list)

    def _frame(self, from_client: bool, flags: int, data: bytes, seq: int | None = None) -> None:
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        self.ts += 0.001
        own = self.seq[from_client] if seq is None else seq
        segment = tcp(src[1], dst[1], flags, seq=own, ack=self.seq[not from_client], data=data)
        self.packets.append(raw(self.ts, eth(ipv4(src[0], dst[0], 6, segment))))

    def handshake(self) -> TcpConversation:
        self._frame(True, SYN, b"")
        self.seq[True] += 1
        self._frame(False, SYN | ACK, b"")
        self.seq[False] += 1
        self._frame(True, ACK, b"")
        return self

    def send(self, from_client: bool, data: bytes, *, seq: int | None = None) -> TcpConversation:
        """One segment of data; with ``seq`` it is placed there (out of order, retransmitted)."""
        self._frame(from_client, ACK, data, seq)
        if seq is None:
            self.seq[from_client] += len(data)
        return self

    def skip(self, from_client: bool, size: int) -> TcpConversation:
        """Bytes the capture never saw: the next segment leaves a hole."""
        self.seq[from_client] += size
        return self

    def close(self) -> TcpConversation:
        self._frame(True, FIN | ACK, b"")
        self.seq[True] += 1
        self._frame(False, FIN | ACK, b"")
        self.seq[False] += 1
        self._frame(True, ACK, b"")
        return self


def udp_exchange(
    messages: list[tuple[bool, bytes]],
    *,
    client: tuple[str, int] = ("10.0.0.1", 33333),
    server: tuple[str, int] = ("10.0.0.2", 53),
    ts: float = 1000.0,
    step: float = 0.01,
) -> list[RawPacket]:
    """UDP datagrams between two endpoints: (from_client, payload) in order."""
    out: list[RawPacket] = []
    for i, (from_client, payload) in enumerate(messages):
        src, dst = (client, server) if from_client else (server, client)
        frame = eth(ipv4(src[0], dst[0], 17, udp(src[1], dst[1], payload)))
        out.append(raw(ts + i * step, frame))
    return out
