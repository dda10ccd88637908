"""The pipeline's inline Ethernet/IPv4/TCP|UDP path against its general decoders.

``Pipeline(fast_path=False)`` sends every frame through decode_link/decode_ipv4/decode_tcp...;
the default takes common frames inline (``Pipeline._fast_ipv4``). Both must give the same
records and counters on every capture of the corpus and on mutated frames.
"""

from __future__ import annotations

import struct
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from a2z.agent.capture import RawPacket, open_capture
from a2z.agent.capture.errors import CaptureError
from a2z.agent.flows.table import FlowConfig
from a2z.agent.pipeline import Pipeline
from tests.agent.packet_builder import ACK, FIN, SYN, eth, ipv4, tcp, udp

DATA = Path(__file__).resolve().parents[1] / "data"
ATTACK = Path(__file__).resolve().parents[2] / "src" / "a2z" / "demo" / "data" / "attack.pcap"
CAPTURES = sorted(
    path
    for path in [*DATA.iterdir(), *(DATA / "bad").iterdir(), ATTACK]
    if path.suffix in (".pcap", ".pcapng")
)

_encode = msgspec.json.Encoder().encode


def _run(packets: list[RawPacket], *, fast_path: bool) -> tuple[list[bytes], tuple[object, ...]]:
    pipeline = Pipeline(FlowConfig(uid_seed=3, max_flows=64), fast_path=fast_path)
    out = [_encode(record) for pkt in packets for record in pipeline.feed(pkt)]
    out += [_encode(record) for record in pipeline.flush()]
    stats = pipeline.stats
    counters = (stats.packets, stats.bytes, stats.records, stats.weirds, stats.ignored)
    return out, (*counters, stats.evictions, pipeline.defrag.stats)


def _packets(path: Path) -> list[RawPacket]:
    try:
        with open_capture(path) as reader:
            return list(reader)
    except CaptureError:
        return []


def test_fast_and_general_paths_agree_on_every_corpus_capture() -> None:
    compared = 0
    for path in CAPTURES:
        packets = _packets(path)
        assert _run(packets, fast_path=True) == _run(packets, fast_path=False), path.name
        compared += len(packets)
    assert compared > 10_000


def _frame(payload: bytes) -> RawPacket:
    frame = eth(payload)
    return RawPacket(1.0, 1, frame, len(frame))


def test_plain_ipv4_tcp_and_udp_frames_take_the_fast_path() -> None:
    pipeline = Pipeline()
    segment = ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 80, SYN))
    datagram = ipv4("10.0.0.1", "10.0.0.2", 17, udp(5353, 53, b"x" * 12))
    assert pipeline._fast_ipv4(_frame(segment))
    assert pipeline._fast_ipv4(_frame(datagram))
    assert len(pipeline.table) == 2


def test_fragments_options_vlans_and_icmp_take_the_general_path() -> None:
    pipeline = Pipeline()
    fragment = ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 80, SYN), frag=0x2000)
    icmp_echo = ipv4("10.0.0.1", "10.0.0.2", 1, b"\x08\x00\x00\x00\x00\x01\x00\x01")
    segment = ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 80, SYN))
    tagged = eth(segment, vlans=(5,))
    options = bytes([0x46]) + segment[1:20] + b"\x01\x01\x01\x01" + segment[20:]
    cut = _frame(segment).data[:40]
    for pkt in [
        _frame(fragment),
        _frame(icmp_echo),
        RawPacket(1.0, 1, tagged, len(tagged)),
        _frame(options),
        RawPacket(1.0, 1, cut, len(cut)),
        RawPacket(1.0, 101, segment, len(segment)),  # raw IP: not Ethernet
    ]:
        assert not pipeline._fast_ipv4(pkt)
    assert len(pipeline.table) == 0


_BASE_SEGMENTS = [
    ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 80, SYN, seq=100)),
    ipv4("10.0.0.2", "10.0.0.1", 6, tcp(80, 40000, SYN | ACK, seq=500, ack=101)),
    ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 80, ACK, seq=101, ack=501, data=b"GET / HTTP/1.1")),
    ipv4("10.0.0.2", "10.0.0.1", 6, tcp(80, 40000, FIN | ACK, seq=501, ack=115)),
    ipv4("10.0.0.3", "10.0.0.4", 17, udp(5353, 53, bytes(range(40)))),
    ipv4("10.0.0.4", "10.0.0.3", 17, udp(53, 5353, b"\x00" * 20)),
]


@st.composite
def _mutated_frames(draw: st.DrawFn) -> RawPacket:
    frame = bytearray(eth(draw(st.sampled_from(_BASE_SEGMENTS))))
    for _ in range(draw(st.integers(0, 4))):  # corrupt header bytes: IP and TCP/UDP fields
        at = draw(st.integers(12, min(len(frame), 60) - 1))
        frame[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):  # an IPv4 total length that may not fit the frame
        struct.pack_into("!H", frame, 16, draw(st.integers(0, 120)))
    cut = draw(st.integers(0, len(frame)))
    data = bytes(frame[:cut]) if draw(st.booleans()) else bytes(frame)
    wirelen = draw(st.sampled_from([len(data), len(frame), len(data) + 40, 0]))
    ts = draw(st.floats(0.0, 400.0, allow_nan=False))
    return RawPacket(ts, 1, data, wirelen)


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(packets=st.lists(_mutated_frames(), min_size=1, max_size=12))
def test_fast_and_general_paths_agree_on_mutated_frames(packets: list[RawPacket]) -> None:
    packets.sort(key=lambda pkt: pkt.ts)
    assert _run(packets, fast_path=True) == _run(packets, fast_path=False)
