"""Fuzz target: the agent-to-server wire envelope, the server's first parser of agent input.

``decode_batch`` must refuse anything that is not a batch with ``WireError`` and nothing else;
``peek_header`` (the gateway's look at an over-quota frame) must answer None or a header, and
whenever the whole frame decodes, a header it reads must be the batch's own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import msgspec
import zstandard

from _harness import run
from a2z.records.network import Conn
from a2z.records.wire import Batch, WireError, decode_batch, encode_batch, peek_header


def test_one_input(data: bytes) -> None:
    """Both parsers on the raw bytes, and on the bytes zstd-compressed (to reach msgpack)."""
    for frame in (data, zstandard.ZstdCompressor(level=1).compress(data)):
        header = peek_header(frame)
        try:
            batch = decode_batch(frame)
        except WireError:
            continue
        if header is not None:
            seen = (header.agent_id, header.boot_epoch, header.seq, header.records)
            assert seen == (batch.agent_id, batch.boot_epoch, batch.seq, len(batch.records))


def _conn(i: int) -> Conn:
    return Conn(
        ts=1_700_000_000.0 + i,
        uid=f"C{i:017d}",
        orig_h="10.0.0.1",
        orig_p=40_000 + i,
        resp_h="192.0.2.7",
        resp_p=443,
        proto="tcp",
    )


def seeds() -> Iterator[bytes]:
    """Valid frames of 0, 1 and 20 records, and their msgpack before compression."""
    agent = str(uuid.UUID(int=7))
    for n in (0, 1, 20):
        batch = Batch(agent_id=agent, boot_epoch=3, seq=n + 1, sent_at=0.0, records=[
            _conn(i) for i in range(n)
        ])  # fmt: skip
        yield encode_batch(batch)
        yield msgspec.msgpack.encode(batch)


if __name__ == "__main__":
    run(test_one_input, seeds)
