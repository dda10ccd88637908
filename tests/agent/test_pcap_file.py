"""Capture-file reader: pcap (µs/ns, both byte orders) and pcapng, bad and truncated files."""

from __future__ import annotations

from pathlib import Path

import pytest

from a2z.agent.capture import (
    CaptureFormatError,
    CaptureOpenError,
    PacketSource,
    RawPacket,
    open_capture,
)
from tests.agent.capture_writer import custom_block, epb, idb, pcap_bytes, shb, spb

DATA = Path(__file__).resolve().parents[1] / "data"


def _read(path: Path) -> list[RawPacket]:
    return list(open_capture(path))


def test_classic_pcap_nanosecond_file_keeps_nanosecond_timestamps() -> None:
    packets = _read(DATA / "tcp-handshake-nano.pcap")
    # tshark -T fields -e frame.time_epoch: 1418145369.924505488, ...370.052027262, ...370.052115157
    assert [p.ts for p in packets] == pytest.approx(
        [1418145369.924505488, 1418145370.052027262, 1418145370.052115157], abs=1e-6
    )
    assert [len(p.data) for p in packets] == [76, 76, 68]
    assert [p.wirelen for p in packets] == [76, 76, 68]
    assert {p.linktype for p in packets} == {113}  # Linux cooked capture


def test_classic_pcap_microsecond_file_reads_every_record() -> None:
    packets = _read(DATA / "dnssec.pcap")
    assert len(packets) == 6
    assert all(p.linktype == 1 for p in packets)
    assert packets == sorted(packets, key=lambda p: p.ts)


@pytest.mark.parametrize("nano", [False, True])
def test_big_endian_pcap_reads_the_same_packets_as_little_endian(
    tmp_path: Path, nano: bool
) -> None:
    original = _read(DATA / "dns_udp.pcap")
    little = tmp_path / "le.pcap"
    big = tmp_path / "be.pcap"
    little.write_bytes(pcap_bytes(original, endian="<", nano=nano))
    big.write_bytes(pcap_bytes(original, endian=">", nano=nano))
    assert big.read_bytes()[:4] == (b"\xa1\xb2\x3c\x4d" if nano else b"\xa1\xb2\xc3\xd4")
    assert _read(big) == _read(little)
    assert [p.data for p in _read(big)] == [p.data for p in original]
    assert [p.ts for p in _read(big)] == pytest.approx([p.ts for p in original], abs=1e-6)


def test_pcapng_file_uses_interface_linktype_and_resolution() -> None:
    packets = _read(DATA / "http1-with-cookies.pcapng")
    assert len(packets) == 12
    assert {p.linktype for p in packets} == {0}  # NULL/loopback, from the IDB
    # tshark -T fields -e frame.time_epoch -e frame.len: 1690483736.912706 68, ...835 68, ...864 56
    assert [p.ts for p in packets[:3]] == pytest.approx(
        [1690483736.912706, 1690483736.912835, 1690483736.912864], abs=1e-6
    )
    assert [p.wirelen for p in packets[:3]] == [68, 68, 56]


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcapng_handles_both_byte_orders_and_multiple_sections(tmp_path: Path, endian: str) -> None:
    frame = bytes(range(60))
    other = "<" if endian == ">" else ">"
    data = b"".join(
        [
            shb(endian),
            idb(endian, linktype=1),  # default resolution: microseconds
            idb(endian, linktype=101, tsresol=9),  # nanoseconds
            idb(endian, linktype=113, tsresol=0x80 | 10),  # 2^-10 seconds
            custom_block(endian),  # skipped, counted
            epb(endian, 0, 1_500_000_000_250_000, frame),
            epb(endian, 1, 1_500_000_000_000_000_500, frame[:20], wirelen=1500),
            epb(endian, 2, 3 * 1024 + 512, frame),
            spb(endian, frame[:30]),
            epb(endian, 7, 0, frame),  # unknown interface: skipped, counted
            shb(other),  # a new section resets interfaces and may flip byte order
            idb(other, linktype=228, tsresol=3),
            epb(other, 0, 42_123, frame[:10]),
        ]
    )
    path = tmp_path / "multi.pcapng"
    path.write_bytes(data)
    reader = open_capture(path)
    packets = list(reader)
    assert [(p.linktype, len(p.data), p.wirelen) for p in packets] == [
        (1, 60, 60),
        (101, 20, 1500),
        (113, 60, 60),
        (1, 30, 30),  # SPB: interface 0 of its section
        (228, 10, 10),
    ]
    assert packets[0].ts == pytest.approx(1_500_000_000.25)
    assert packets[1].ts == pytest.approx(1_500_000_000.0000005)
    assert packets[2].ts == pytest.approx(3.5)
    assert packets[3].ts == packets[2].ts  # an SPB has no time: the previous one is reused
    assert packets[4].ts == pytest.approx(42.123)
    assert reader.stats.skipped_blocks == 1
    assert reader.stats.bad_packets == 1
    assert reader.stats.packets == 5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", "not a pcap or pcapng file"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "pcap file header is truncated"),
        (b"\x0a\x0d\x0d\x0a" + b"\0" * 30, "bad byte-order magic"),
        (b"ab", "too short"),
        (b"", "empty file"),
    ],
)
def test_non_capture_file_raises_capture_format_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "not-a-capture"
    path.write_bytes(content)
    with pytest.raises(CaptureFormatError, match=message) as info:
        open_capture(path)
    assert "\n" not in str(info.value)


def test_missing_file_raises_capture_open_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureOpenError, match="cannot open capture"):
        open_capture(tmp_path / "absent.pcap")


@pytest.mark.parametrize("name", ["dnssec.pcap", "http1-with-cookies.pcapng"])
def test_truncated_file_yields_the_good_packets_and_counts_the_cut_one(
    tmp_path: Path, name: str
) -> None:
    whole = (DATA / name).read_bytes()
    expected = _read(DATA / name)
    last_data = whole.rfind(expected[-1].data)
    for cut in (last_data - 3, last_data + 1, last_data + len(expected[-1].data) // 2):
        path = tmp_path / f"cut-{cut}-{name}"
        path.write_bytes(whole[:cut])
        reader = open_capture(path)
        packets = list(reader)
        assert packets == expected[:-1]
        assert reader.stats.truncated == 1


def test_pcap_record_with_absurd_length_stops_reading_and_is_counted(tmp_path: Path) -> None:
    good = _read(DATA / "dns_udp.pcap")
    data = bytearray(pcap_bytes(good))
    data += (0).to_bytes(4, "little") * 2 + (0x7FFFFFFF).to_bytes(4, "little") * 2
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(bytes(data))
    reader = open_capture(path)
    assert list(reader) == good
    assert reader.stats.corrupt == 1


def test_header_only_pcap_yields_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.pcap"
    path.write_bytes(pcap_bytes([]))
    assert _read(path) == []


def test_capture_reader_is_a_packet_source() -> None:
    source: PacketSource = open_capture(DATA / "dns_udp.pcap")
    assert sum(1 for _ in source) == 2


def test_capture_reader_closes_as_a_context_manager() -> None:
    with open_capture(DATA / "dnssec.pcap") as reader:
        first = next(reader)
    assert first.linktype == 1
    assert list(reader) == []
