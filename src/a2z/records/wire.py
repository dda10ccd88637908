"""The agent-to-server wire envelope: a batch of records, msgpack-encoded, zstd-compressed.

One batch travels as one binary WebSocket frame. ``(agent_id, boot_epoch, seq)`` identifies a
batch for acknowledgement and server-side de-duplication: the agent draws a new ``boot_epoch``
at each start and numbers batches from 1 within it.
"""

from __future__ import annotations

import threading

import msgspec
import zstandard

from a2z.records.network import Record

WIRE_VERSION = 1
MAX_FRAME_BYTES = 4 * 1024 * 1024  # compressed frame limit: larger frames are refused unread
MAX_BATCH_BYTES = 32 * 1024 * 1024  # decompressed limit: stops zstd bombs


class WireError(ValueError):
    """A frame that is not a valid batch: too large, not zstd, not msgpack, or wrong shape."""


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """A numbered group of records from one agent."""

    v: int = WIRE_VERSION  # envelope version, bumped on incompatible change
    agent_id: str  # the sending agent's id (the server trusts its own auth, not this field)
    boot_epoch: int  # drawn at agent start; a new epoch restarts seq
    seq: int  # batch number within the epoch, from 1
    sent_at: float  # agent clock, epoch seconds
    records: list[Record]  # the payload, any mix of record types


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Batch)
# zstandard's (de)compressor objects are not safe to share between threads (concurrent use
# crashed the interpreter in the ingest fault tests), so each thread gets its own.
_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    ctx: zstandard.ZstdCompressor | None = getattr(_local, "compressor", None)
    if ctx is None:
        ctx = _local.compressor = zstandard.ZstdCompressor(level=3)
    return ctx


def _decompressor() -> zstandard.ZstdDecompressor:
    ctx: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if ctx is None:
        ctx = _local.decompressor = zstandard.ZstdDecompressor()
    return ctx


def encode_batch(batch: Batch) -> bytes:
    """Serialise a batch into one wire frame."""
    return _compressor().compress(_encoder.encode(batch))


def decode_batch(frame: bytes) -> Batch:
    """Parse one wire frame; raise WireError on anything that is not a valid batch."""
    if len(frame) > MAX_FRAME_BYTES:
        raise WireError(f"frame of {len(frame)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    try:
        # stream_reader with a bounded read: a frame header may lie about its content size.
        with _decompressor().stream_reader(frame) as reader:
            raw = reader.read(MAX_BATCH_BYTES + 1)
    except zstandard.ZstdError as exc:
        raise WireError(f"frame is not valid zstd: {exc}") from exc
    if len(raw) > MAX_BATCH_BYTES:
        raise WireError(f"batch decompresses beyond the {MAX_BATCH_BYTES}-byte limit")
    try:
        batch = _decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # msgspec lets invalid UTF-8 in a str field escape as UnicodeDecodeError.
        raise WireError(f"frame is not a valid batch: {exc}") from exc
    if batch.v != WIRE_VERSION:
        raise WireError(f"unsupported wire version {batch.v}")
    return batch
