"""The classic-pcap reader's windows (compiled record loop): same packets, whatever the window."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from a2z.agent.capture import RawPacket, open_capture, pcap_file
from a2z.agent.capture.pcap_records import CORRUPT, MORE, split_records
from tests.agent.capture_writer import pcap_bytes

DATA = Path(__file__).resolve().parents[1] / "data"
CAPTURES = ["frag-v4v6-udp-icmp.pcap", "dnssec.pcap", "http1-with-cookies.pcapng"]


def _tuples(packets: list[RawPacket]) -> list[tuple[float, int, bytes, int]]:
    return [(p.ts, p.linktype, p.data, p.wirelen) for p in packets]


@pytest.mark.parametrize("name", CAPTURES)
def test_batches_hold_the_packets_that_iteration_yields(name: str) -> None:
    one_by_one = list(open_capture(DATA / name))
    reader = open_capture(DATA / name)
    batched = [pkt for batch in reader.batches() for pkt in batch]
    assert _tuples(batched) == _tuples(one_by_one)
    assert all(type(pkt) is RawPacket for pkt in batched)
    assert reader.stats.packets == len(one_by_one)


@pytest.mark.parametrize("name", CAPTURES)
def test_batches_continue_where_iteration_by_packet_stopped(name: str) -> None:
    whole = list(open_capture(DATA / name))
    reader = open_capture(DATA / name)
    head = [next(reader), next(reader)]
    rest = [pkt for batch in reader.batches() for pkt in batch]
    assert _tuples(head + rest) == _tuples(whole)
    assert reader.stats.packets == len(whole)


@pytest.mark.parametrize("window", [16, 17, 100, 1500])
def test_windows_smaller_than_a_record_read_the_same_packets(
    window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = list(open_capture(DATA / "frag-v4v6-udp-icmp.pcap"))
    monkeypatch.setattr(pcap_file, "WINDOW_BYTES", window)
    again = list(open_capture(DATA / "frag-v4v6-udp-icmp.pcap"))
    assert _tuples(again) == _tuples(whole)


def test_record_cut_by_the_end_of_the_file_in_a_small_window_is_counted_truncated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = list(open_capture(DATA / "dnssec.pcap"))
    data = pcap_bytes(good)
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:-10])  # the last record loses its tail
    monkeypatch.setattr(pcap_file, "WINDOW_BYTES", 16)  # every record is longer than a window
    reader = open_capture(path)
    assert _tuples(list(reader)) == _tuples(good[:-1])
    assert reader.stats.truncated == 1


def _record(sec: int, frac: int, data: bytes, endian: str) -> bytes:
    return struct.pack(endian + "IIII", sec, frac, len(data), len(data) + 4) + data


@pytest.mark.parametrize("endian", ["<", ">"])
def test_split_records_reads_both_byte_orders_and_stops_at_a_partial_record(endian: str) -> None:
    chunk = _record(10, 500_000, b"abc", endian) + _record(11, 0, b"de", endian)
    partial = _record(12, 0, b"fgh", endian)[:-1]
    out: list[RawPacket] = []
    consumed, status = split_records(chunk + partial, endian == "<", 1e6, 1, 1 << 24, out)
    assert (consumed, status) == (len(chunk), MORE)
    assert out == [RawPacket(10.5, 1, b"abc", 7), RawPacket(11.0, 1, b"de", 6)]


def test_split_records_reports_an_absurd_length_as_corrupt_after_the_good_records() -> None:
    good = _record(1, 0, b"x", "<")
    bad = struct.pack("<IIII", 0, 0, 1 << 30, 1 << 30)
    out: list[RawPacket] = []
    assert split_records(good + bad, True, 1e6, 1, 1 << 24, out) == (len(good), CORRUPT)
    assert len(out) == 1
