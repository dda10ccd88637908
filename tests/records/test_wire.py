"""Wire envelope: round-trips, limits, and refusals with a typed error."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from a2z.records import (
    MAX_FRAME_BYTES,
    Alert,
    Batch,
    BatchHeader,
    Conn,
    Dns,
    Http,
    Severity,
    Ssl,
    Weird,
    WireError,
    decode_batch,
    encode_batch,
    peek_header,
)
from a2z.records.wire import MAX_BATCH_BYTES

text = st.text(max_size=40)
port = st.integers(min_value=0, max_value=65535)
addr = st.ip_addresses().map(str)
ts = st.floats(min_value=0, max_value=4e9, allow_nan=False)
header = {"ts": ts, "uid": text, "orig_h": addr, "orig_p": port, "resp_h": addr, "resp_p": port}
counts = st.integers(min_value=0, max_value=2**40)

records = st.one_of(
    st.builds(
        Conn,
        **header,
        proto=st.sampled_from(["tcp", "udp", "icmp"]),
        conn_state=st.sampled_from(["S0", "SF", "REJ", "RSTO", "OTH"]),
        history=text,
        orig_pkts=counts,
        resp_pkts=counts,
        orig_bytes=st.none() | counts,
        duration=st.none() | ts,
    ),
    st.builds(
        Dns,
        **header,
        proto=st.sampled_from(["udp", "tcp"]),
        trans_id=st.integers(0, 65535),
        query=st.none() | text,
        answers=st.none() | st.lists(text, max_size=4),
        TTLs=st.none() | st.lists(ts, max_size=4),
    ),
    st.builds(Http, **header, method=st.none() | text, uri=st.none() | text),
    st.builds(Ssl, **header, server_name=st.none() | text, ja3=st.none() | text),
    st.builds(Weird, **header, name=text),
    st.builds(
        Alert,
        **header,
        rule_id=text,
        title=text,
        severity=st.sampled_from(Severity),
        attack=st.lists(st.sampled_from(["T1046", "T1498", "T1071.004"]), max_size=3),
    ),
)
batches = st.builds(
    Batch,
    agent_id=text,
    boot_epoch=st.integers(min_value=0, max_value=2**63 - 1),
    seq=st.integers(min_value=1, max_value=2**63 - 1),
    sent_at=ts,
    records=st.lists(records, max_size=20),
)


@given(batches)
def test_decode_of_encode_is_identity(batch: Batch) -> None:
    assert decode_batch(encode_batch(batch)) == batch


@given(st.binary(max_size=2048))
def test_decode_of_arbitrary_bytes_raises_only_wire_error(frame: bytes) -> None:
    with contextlib.suppress(WireError):
        decode_batch(frame)


@given(batches, st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_decode_of_corrupted_frame_raises_only_wire_error(
    batch: Batch, pos: int, byte: int
) -> None:
    frame = bytearray(encode_batch(batch))
    frame[pos % len(frame)] = byte
    with contextlib.suppress(WireError):
        decode_batch(bytes(frame))


@given(batches)
def test_header_peek_reads_what_decoding_would_or_nothing(batch: Batch) -> None:
    """The gateway refuses over-quota frames from their header (ADR 24): what it reads must be
    the batch's own seq, epoch, sender and record count, or nothing (then it decodes)."""
    header = peek_header(encode_batch(batch))
    expected = BatchHeader(batch.agent_id, batch.boot_epoch, batch.seq, len(batch.records))
    assert header in (None, expected)
    if len(batch.agent_id.encode()) <= 64:  # real agent ids are 36-character UUIDs
        assert header == expected


@given(st.binary(max_size=2048))
def test_header_peek_of_arbitrary_bytes_is_none_or_a_header(frame: bytes) -> None:
    assert peek_header(frame) is None or isinstance(peek_header(frame), BatchHeader)


@given(batches, st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_header_peek_of_corrupted_frame_never_raises(batch: Batch, pos: int, byte: int) -> None:
    frame = bytearray(encode_batch(batch))
    frame[pos % len(frame)] = byte
    header = peek_header(bytes(frame))
    assert header is None or isinstance(header, BatchHeader)


def test_header_peek_refuses_what_is_not_an_envelope() -> None:
    compress = zstandard.ZstdCompressor().compress
    assert peek_header(b"") is None
    assert peek_header(b"\x00" * (MAX_FRAME_BYTES + 1)) is None
    assert peek_header(compress(msgspec.msgpack.encode([1, 2, 3]))) is None
    other_version = {"v": 2, "agent_id": "a", "boot_epoch": 1, "seq": 1, "records": []}
    assert peek_header(compress(msgspec.msgpack.encode(other_version))) is None
    no_seq = {"v": 1, "agent_id": "a", "boot_epoch": 1, "records": []}
    assert peek_header(compress(msgspec.msgpack.encode(no_seq))) is None
    ok = {"v": 1, "agent_id": "a", "boot_epoch": -3, "seq": 2**40, "sent_at": 1.5, "records": []}
    assert peek_header(compress(msgspec.msgpack.encode(ok))) == BatchHeader("a", -3, 2**40, 0)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_a_record_time_that_is_not_a_number_refuses_the_frame(bad: float) -> None:
    # The store files each record under its UTC day: inf has none (the ingest worker used to
    # fail on it with OverflowError, a retry rather than a refusal).
    good = Conn(ts=1.7e9, uid="C1", orig_h="10.0.0.1", orig_p=1, resp_h="10.0.0.2", resp_p=2,
                proto="tcp")  # fmt: skip
    frame = encode_batch(Batch(agent_id="a", boot_epoch=1, seq=1, sent_at=0.0,
                               records=[good, msgspec.structs.replace(good, ts=bad)]))  # fmt: skip
    with pytest.raises(WireError, match="not a finite number"):
        decode_batch(frame)


def test_oversized_frame_is_refused_before_decompression() -> None:
    with pytest.raises(WireError, match="exceeds"):
        decode_batch(b"\0" * (MAX_FRAME_BYTES + 1))


def test_decompression_bomb_is_refused() -> None:
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (MAX_BATCH_BYTES + 10))
    assert len(bomb) < MAX_FRAME_BYTES
    with pytest.raises(WireError, match="beyond"):
        decode_batch(bomb)


def test_unknown_wire_version_is_refused() -> None:
    batch = Batch(v=99, agent_id="a", boot_epoch=1, seq=1, sent_at=0.0, records=[])
    with pytest.raises(WireError, match="version 99"):
        decode_batch(encode_batch(batch))


def test_record_of_unknown_type_is_refused() -> None:
    raw = msgspec.msgpack.encode(
        {"v": 1, "agent_id": "a", "boot_epoch": 1, "seq": 1, "sent_at": 0.0,
         "records": [{"_path": "smb_files", "ts": 1.0}]}
    )  # fmt: skip
    with pytest.raises(WireError, match="not a valid batch"):
        decode_batch(zstandard.ZstdCompressor().compress(raw))


def test_records_serialise_with_zeek_field_names() -> None:
    conn = Conn(
        ts=1.5, uid="CabC", orig_h="10.0.0.1", orig_p=5353, resp_h="10.0.0.2", resp_p=53,
        proto="udp", conn_state="SF", history="Dd", orig_pkts=1, resp_pkts=1,
    )  # fmt: skip
    doc = msgspec.json.decode(msgspec.json.encode(conn))
    assert doc["_path"] == "conn"
    assert doc["id.orig_h"] == "10.0.0.1"
    assert doc["id.resp_p"] == 53
    assert {"conn_state", "history", "orig_pkts", "resp_ip_bytes"} <= doc.keys()


def test_concurrent_encode_and_decode_from_many_threads() -> None:
    # Regression: a shared zstd context crashed the process when ingest decoded in threads.
    import threading

    conns = [
        Conn(
            ts=float(i),
            uid=f"C{i}",
            orig_h="10.0.0.1",
            orig_p=i % 65535,
            resp_h="10.0.0.2",
            resp_p=80,
            proto="tcp",
        )
        for i in range(2000)
    ]
    batch = Batch(agent_id="a", boot_epoch=1, seq=1, sent_at=0.0, records=conns)
    frame = encode_batch(batch)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(100):
                assert decode_batch(frame) == batch
                assert decode_batch(encode_batch(batch)) == batch
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
