"""Fuzz target: IP fragment reassembly on fuzzed fragment sequences, with its invariants."""

from __future__ import annotations

import itertools
import random
import struct
from collections.abc import Iterator

from _harness import run
from a2z.agent.decode import DecodeError, decode_ipv4, decode_ipv6
from a2z.agent.decode.reassembly import DefragConfig, Reassembler

# Tight limits so that fuzzed input meets timeouts, evictions and the size limit.
CONFIG = DefragConfig(timeout=5.0, max_bytes=8192, max_pending=4, max_datagram=4096)
_SRC4, _DST4 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
_SRC6, _DST6 = bytes(15) + b"\x01", bytes(15) + b"\x02"
_STEP = struct.Struct("!BBHHB")  # flags, ident, offset/8 (13 bits used), length, time step


def fragment(flags: int, ident: int, offset8: int, payload: bytes) -> bytes:
    """An IPv4 or IPv6 fragment (bit 0 of ``flags``: v6; bit 1: more; bit 2: DF; bit 3: proto)."""
    more = bool(flags & 2)
    proto = 6 if flags & 8 else 17
    offset8 &= 0x1FFF
    if flags & 1:
        frag = struct.pack("!BBHI", proto, 0, (offset8 << 3) | more, ident)
        head = struct.pack("!IHBB16s16s", 6 << 28, 8 + len(payload), 44, 64, _SRC6, _DST6)
        return head + frag + payload
    field = (0x4000 if flags & 4 else 0) | (0x2000 if more else 0) | offset8
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, field, 64, proto, 0, _SRC4, _DST4
    )
    return head + payload


def test_one_input(data: bytes) -> None:
    """Feed the fragments; check memory bounds and that every datagram out is well formed."""
    reasm = Reassembler(CONFIG)
    ts = 0.0
    off = 0
    while off + _STEP.size <= len(data):
        flags, ident, offset8, length, dt = _STEP.unpack_from(data, off)
        off += _STEP.size
        payload = data[off : off + length % 1600]
        off += len(payload)
        ts += dt / 16
        packet = memoryview(fragment(flags, ident % 3, offset8, payload))
        try:
            if flags & 1:
                whole, _ = reasm.add_ipv6(ts, decode_ipv6(packet), packet)
            else:
                whole, _ = reasm.add_ipv4(ts, decode_ipv4(packet), packet)
        except DecodeError:
            continue
        assert 0 <= reasm.held_bytes <= CONFIG.max_bytes
        assert len(reasm) <= CONFIG.max_pending
        if whole is not None:
            buf = memoryview(whole)
            if flags & 1:
                hdr6 = decode_ipv6(buf)
                assert hdr6.total_len == len(whole)
                assert not hdr6.is_fragment
            else:
                hdr4 = decode_ipv4(buf)
                assert hdr4.total_len == len(whole)
                assert not hdr4.is_fragment
                assert len(whole) - 20 <= CONFIG.max_datagram


def seeds() -> Iterator[bytes]:
    """Well-formed fragment trains (in order, shuffled, overlapping), v4 and v6."""
    rng = random.Random(7)
    for v6 in (0, 1):
        for _ in range(20):
            steps = []
            size = rng.randrange(8, 3000) // 8 * 8
            cuts = sorted({rng.randrange(1, size // 8 + 1) * 8 for _ in range(rng.randint(1, 5))})
            bounds = [0, *[c for c in cuts if c < size], size]
            for start, end in itertools.pairwise(bounds):
                more = 2 if end < size else 0
                steps.append(
                    _STEP.pack(v6 | more, 1, start // 8, end - start, 1) + bytes(end - start)
                )
            rng.shuffle(steps)
            yield b"".join(steps)


if __name__ == "__main__":
    run(test_one_input, seeds)
