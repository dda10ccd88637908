"""Fuzz target: the whole Pipeline (decode, reassembly, flows, protocols) on fuzzed frames."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import msgspec

from _harness import capture_files, run
from a2z.agent.capture import CaptureError, RawPacket, open_capture
from a2z.agent.flows import FlowConfig
from a2z.agent.pipeline import Pipeline

LINKTYPES = (1, 101, 113, 0, 276)
_FRAME = struct.Struct("!BBH")  # link-type selector, time step (1/10 s), frame length
# Short timeouts, a tiny table: fuzzed input reaches timeouts and evictions quickly.
CONFIG = FlowConfig(
    tcp_timeout=5, tcp_handshake_timeout=3, udp_timeout=4, icmp_timeout=4, max_flows=16, uid_seed=1
)


def frames(data: bytes) -> Iterator[RawPacket]:
    """Cut the input into frames: [linktype][dt][length][bytes] repeated."""
    ts = 1_000_000.0
    off = 0
    while off + _FRAME.size <= len(data):
        link, dt, length = _FRAME.unpack_from(data, off)
        off += _FRAME.size
        frame = data[off : off + length]
        off += length
        ts += dt / 10
        wirelen = len(frame) + (link >> 4)  # sometimes claim it was snapped
        yield RawPacket(ts, LINKTYPES[link % len(LINKTYPES)], frame, wirelen)


def test_one_input(data: bytes) -> None:
    """Feed every frame and flush: no exception may escape, every record must encode."""
    pipeline = Pipeline(CONFIG)
    encode = msgspec.json.encode
    for pkt in frames(data):
        for record in pipeline.feed(pkt):
            encode(record)
    for record in pipeline.flush():
        encode(record)


def seeds() -> Iterator[bytes]:
    """Runs of up to 64 consecutive frames from each test capture, in the input format."""
    for path in capture_files():
        try:
            reader = open_capture(path)
        except CaptureError:
            continue
        with reader:
            chunk: list[bytes] = []
            last = None
            for pkt in reader:
                if pkt.linktype not in LINKTYPES:
                    break
                dt = 0 if last is None else min(max(int((pkt.ts - last) * 10), 0), 255)
                last = pkt.ts
                data = pkt.data[:4096]
                chunk.append(_FRAME.pack(LINKTYPES.index(pkt.linktype), dt, len(data)) + data)
                if len(chunk) == 64:
                    yield b"".join(chunk)
                    chunk = []
            if chunk:
                yield b"".join(chunk)


if __name__ == "__main__":
    run(test_one_input, seeds)
