"""Bad input: decoders raise only DecodeError, and the pipeline never raises at all.

Hypothesis drives arbitrary and mutated bytes through every decoder and the whole pipeline;
a real capture is also truncated and corrupted on disk and replayed end to end.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from a2z.agent.capture import CaptureFormatError, RawPacket, open_capture
from a2z.agent.decode import (
    DecodeError,
    decode_arp,
    decode_icmp,
    decode_icmp6,
    decode_ipv4,
    decode_ipv6,
    decode_link,
    decode_tcp,
    decode_udp,
)
from a2z.agent.pipeline import Pipeline
from a2z.agent.replay import replay
from a2z.records import Record, Weird

DATA = Path(__file__).resolve().parents[1] / "data"
LINKTYPES = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 9, 147]

DECODERS: list[Callable[[memoryview], object]] = [
    decode_ipv4,
    decode_ipv6,
    decode_tcp,
    decode_udp,
    decode_icmp,
    decode_icmp6,
    decode_arp,
]

REAL_PACKETS = [
    pkt
    for name in ("wikipedia.pcap", "v6.pcap", "icmpv6.pcap", "q-in-q.pcap", "dnssec.pcap")
    for pkt in open_capture(DATA / name)
]

FAST = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI stays deterministic
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@FAST
@given(data=st.binary(max_size=128), which=st.sampled_from(range(len(DECODERS))))
def test_decoders_on_arbitrary_bytes_raise_only_decode_errors(data: bytes, which: int) -> None:
    with contextlib.suppress(DecodeError):
        DECODERS[which](memoryview(data))


@FAST
@given(data=st.binary(max_size=128), linktype=st.sampled_from(LINKTYPES))
def test_link_decoder_on_arbitrary_bytes_raises_only_decode_errors(
    data: bytes, linktype: int
) -> None:
    try:
        frame = decode_link(linktype, memoryview(data))
    except DecodeError:
        return
    assert 0 <= frame.offset <= max(len(data), 4)


def _mutations() -> st.SearchStrategy[RawPacket]:
    @st.composite
    def mutate(draw: st.DrawFn) -> RawPacket:
        pkt = draw(st.sampled_from(REAL_PACKETS))
        data = bytearray(pkt.data)
        for _ in range(draw(st.integers(1, 8))):
            if data:
                pos = draw(st.integers(0, len(data) - 1))
                data[pos] = draw(st.integers(0, 255))
        cut = draw(st.integers(0, len(data)))
        wirelen = draw(st.sampled_from([pkt.wirelen, cut, 0, 65535]))
        ts = pkt.ts + draw(st.floats(-10, 10))
        return RawPacket(ts, pkt.linktype, bytes(data[:cut]), wirelen)

    return mutate()


def _random_packets() -> st.SearchStrategy[RawPacket]:
    return st.builds(
        RawPacket,
        ts=st.floats(0, 2e9, allow_nan=False),
        linktype=st.sampled_from(LINKTYPES),
        data=st.binary(max_size=200),
        wirelen=st.integers(0, 70000),
    )


@FAST
@given(packets=st.lists(st.one_of(_mutations(), _random_packets()), max_size=30))
def test_pipeline_never_raises_on_random_or_mutated_packets(packets: list[RawPacket]) -> None:
    pipeline = Pipeline()
    out: list[Record] = []
    for pkt in packets:
        out += pipeline.feed(pkt)
    out += pipeline.flush()
    assert pipeline.stats.packets == len(packets)
    weirds = [r for r in out if isinstance(r, Weird)]
    assert len(weirds) == sum(pipeline.stats.weirds.values())  # under the sampling threshold


@FAST
@given(data=st.binary(min_size=1, max_size=60))
def test_every_junk_ethernet_frame_is_accounted_for(data: bytes) -> None:
    pipeline = Pipeline()
    out = pipeline.feed(RawPacket(1.0, 1, data, len(data))) + pipeline.flush()
    # Each frame ends as a weird, an ignored (non-IP) count or a flow; a frame may add one
    # advisory weird (ip_hdr_len_zero) and still be tracked.
    weirds = sum(pipeline.stats.weirds.values())
    flows = sum(1 for r in out if not isinstance(r, Weird))
    ignored = sum(pipeline.stats.ignored.values())
    assert weirds + flows + ignored >= 1
    assert flows + ignored <= 1
    assert weirds <= 1 + flows
    if len(data) < 14:
        assert [r.name for r in out if isinstance(r, Weird)] == ["truncated_ethernet_header"]


def test_short_frames_of_a_real_capture_become_weird_records() -> None:
    pipeline = Pipeline()
    out: list[Record] = []
    for pkt in REAL_PACKETS[:50]:
        out += pipeline.feed(RawPacket(pkt.ts, pkt.linktype, pkt.data[:20], 20))
    out += pipeline.flush()
    names = {r.name for r in out if isinstance(r, Weird)}
    assert names <= {"truncated_ip_header", "truncated_ipv6_header", "truncated_vlan_header"}
    assert names


@pytest.mark.parametrize("seed", range(8))
def test_truncated_and_corrupted_capture_replays_without_exceptions(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    original = (DATA / "wikipedia.pcap").read_bytes()
    data = bytearray(original[: rng.randrange(24, len(original))])
    for _ in range(rng.randrange(1, 200)):
        pos = rng.randrange(24, len(data)) if len(data) > 24 else 0
        if pos:
            data[pos] = rng.randrange(256)
    path = tmp_path / f"mutated-{seed}.pcap"
    path.write_bytes(bytes(data))
    records, pipeline, capture = replay(path)
    out = list(records)
    assert pipeline.stats.packets == capture.packets
    assert capture.packets > 0 or capture.truncated + capture.corrupt > 0
    assert sum(pipeline.stats.records.values()) == len(out)


@pytest.mark.parametrize("name", ["http1-with-cookies.pcapng", "quic-tls-handshake.pcapng"])
def test_corrupted_pcapng_replays_without_exceptions(tmp_path: Path, name: str) -> None:
    rng = random.Random(name)
    original = (DATA / name).read_bytes()
    for trial in range(20):
        data = bytearray(original)
        for _ in range(rng.randrange(1, 20)):
            data[rng.randrange(28, len(data))] = rng.randrange(256)
        path = tmp_path / f"{trial}-{name}"
        path.write_bytes(bytes(data[: rng.randrange(28, len(data) + 1)]))
        try:
            records, _, _ = replay(path)
        except CaptureFormatError:
            continue  # only the first block is validated eagerly; we mutate past it
        list(records)


def test_replay_of_a_header_only_capture_yields_no_records(tmp_path: Path) -> None:
    path = tmp_path / "header-only.pcap"
    path.write_bytes((DATA / "q-in-q.pcap").read_bytes()[:24])
    records, pipeline, capture = replay(path)
    assert list(records) == []
    assert (pipeline.stats.packets, capture.truncated) == (0, 0)
