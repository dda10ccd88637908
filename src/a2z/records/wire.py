"""The agent-to-server wire envelope: a batch of records, msgpack-encoded, zstd-compressed.

One batch travels as one binary WebSocket frame. ``(agent_id, boot_epoch, seq)`` identifies a
batch for acknowledgement and server-side de-duplication: the agent draws a new ``boot_epoch``
at each start and numbers batches from 1 within it.
"""

from __future__ import annotations

import math
import threading
from typing import NamedTuple

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
    # msgpack carries inf and nan; a record time that is not a number has no day (partition,
    # usage, retention) and no place in time order, so the frame is refused like any invalid field.
    if not all(map(math.isfinite, [rec.ts for rec in batch.records])):
        raise WireError("a record's ts is not a finite number")
    return batch


class BatchHeader(NamedTuple):
    """What a frame says about itself before its records: enough to answer it (seq, epoch),
    check its sender and count what a refusal defers, without decoding a single record."""

    agent_id: str
    boot_epoch: int
    seq: int
    records: int


HEADER_PEEK_BYTES = 256
"""Decompressed bytes :func:`peek_header` reads: the envelope's scalar fields and the records'
array length come first (msgspec writes a Struct's fields in declaration order) and take well
under 200 bytes with an agent id of 36 characters."""


def peek_header(frame: bytes) -> BatchHeader | None:
    """The envelope fields of a frame, read from its first decompressed bytes; None when they
    cannot be read that way (not zstd, an unexpected layout, an oversize frame): the caller then
    decodes the whole frame, which gives the precise error.

    Only the zstd block holding the first bytes is decompressed (a 100-record batch is one
    block) and no record is parsed: a frame the server is going to refuse anyway (its tenant
    is out of tokens) costs no msgpack decoding of its records. A header that parses does not
    make the frame valid; whoever admits the batch still decodes it in full.
    """
    if len(frame) > MAX_FRAME_BYTES:
        return None
    try:
        with _decompressor().stream_reader(frame) as reader:
            raw = reader.read(HEADER_PEEK_BYTES)
    except zstandard.ZstdError:
        return None
    return _parse_header(raw)


_HEADER_INTS = {"v", "boot_epoch", "seq"}


def _parse_header(raw: bytes) -> BatchHeader | None:
    """The header fields of a msgpack-encoded Batch prefix (a map whose last key is
    ``records``); None on anything else."""
    reader = _Prefix(raw)
    size = reader.map_header()
    if size is None:
        return None
    fields: dict[str, int | str] = {}
    for _ in range(size):
        key = reader.text()
        if key is None:
            return None
        if key == "records":
            count = reader.array_header()
            agent_id, epoch, seq = (
                fields.get("agent_id"),
                fields.get("boot_epoch"),
                fields.get("seq"),
            )
            if (
                count is None
                or fields.get("v") != WIRE_VERSION
                or not isinstance(agent_id, str)
                or not isinstance(epoch, int)
                or not isinstance(seq, int)
            ):
                return None
            return BatchHeader(agent_id, epoch, seq, count)
        value = reader.integer() if key in _HEADER_INTS else reader.scalar()
        if value is None:
            return None
        fields[key] = value
    return None


class _Prefix:
    """A cursor over the start of a msgpack document: just the few types an envelope's header
    holds (maps, arrays, strings, integers, floats). Every reader returns None when the bytes
    are something else or run out.

    Hand-written because msgspec decodes only whole documents: the next cheapest route,
    decompressing the whole frame and decoding it with its records as ``msgspec.Raw``, cost
    86 µs on a 100-record frame against 12 µs for this peek (160 µs for a full decode), and
    it runs for every frame of a flood. fuzz/fuzz_wire.py checks it against the full decoder.
    """

    def __init__(self, raw: bytes) -> None:
        self.raw, self.at = raw, 0

    def _take(self, n: int) -> bytes | None:
        if self.at + n > len(self.raw):
            return None
        chunk = self.raw[self.at : self.at + n]
        self.at += n
        return chunk

    def _uint(self, n: int) -> int | None:
        chunk = self._take(n)
        return None if chunk is None else int.from_bytes(chunk, "big")

    def _tag(self) -> int | None:
        chunk = self._take(1)
        return None if chunk is None else chunk[0]

    def map_header(self) -> int | None:
        return self._container(0x80, 0xDE)

    def array_header(self) -> int | None:
        return self._container(0x90, 0xDC)

    def _container(self, fix: int, tag16: int) -> int | None:
        """A map's or array's length: a fix type (``fix`` + up to 15), or 16/32-bit sized."""
        tag = self._tag()
        if tag is None:
            return None
        if fix <= tag <= fix + 0x0F:
            return tag & 0x0F
        if tag == tag16:
            return self._uint(2)
        return self._uint(4) if tag == tag16 + 1 else None

    def text(self) -> str | None:
        tag = self._tag()
        if tag is None:
            return None
        if 0xA0 <= tag <= 0xBF:
            size: int | None = tag & 0x1F
        elif tag in (0xD9, 0xDA):
            size = self._uint(1 if tag == 0xD9 else 2)
        else:
            return None
        chunk = None if size is None else self._take(size)
        try:
            return None if chunk is None else chunk.decode()
        except UnicodeDecodeError:
            return None

    def integer(self) -> int | None:
        tag = self._tag()
        if tag is None:
            return None
        if tag <= 0x7F:
            return tag
        if tag >= 0xE0:
            return tag - 0x100
        if 0xCC <= tag <= 0xCF:
            return self._uint(1 << (tag - 0xCC))
        if 0xD0 <= tag <= 0xD3:
            chunk = self._take(1 << (tag - 0xD0))
            return None if chunk is None else int.from_bytes(chunk, "big", signed=True)
        return None

    def scalar(self) -> int | str | None:
        """An integer or a string (returned), or a float (skipped: 0); None otherwise."""
        tag = self.raw[self.at] if self.at < len(self.raw) else None
        if tag is None:
            return None
        if tag in (0xCA, 0xCB):
            self.at += 1
            return None if self._take(4 if tag == 0xCA else 8) is None else 0
        if 0xA0 <= tag <= 0xBF or tag in (0xD9, 0xDA):
            return self.text()
        return self.integer()
