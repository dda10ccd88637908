"""The classic-pcap record loop, compiled by mypyc: a window of the file in, its packets out.

The reader (``pcap_file.py``, interpreted) copies a window of the mapped file into ``bytes`` and
calls :func:`split_records` once per window; reading the record headers byte by byte from
``bytes`` compiles to native reads, so a packet costs one slice and one ``RawPacket`` here
instead of a generator step, a ``struct`` call and the slice in the interpreter (ADR 0006).
"""

from __future__ import annotations

from typing import Final

from a2z.agent.capture.packet import RawPacket

HEADER_BYTES: Final = 16  # a record header: ts_sec, ts_frac, caplen, wirelen (4 bytes each)

MORE: Final = 0  # the window ends inside a record (or its header): read on from ``consumed``
CORRUPT: Final = 1  # a record claims more than the reader's limit: stop reading there


class RecordSink:
    """Takes the records of a window where they lie, instead of as one ``RawPacket`` each.

    The agent's pipeline is one (``Pipeline.packet``): a replay then decodes each frame from
    the window's bytes, and builds a ``RawPacket`` (a tuple, a copy of the frame, a float) only
    for the frames its inline fast path declines (ADR 0006, update 4).
    """

    handed = 0  # records split_records handed to this sink (the reader counts them)

    def packet(
        self, chunk: bytes, start: int, end: int, ts: float, linktype: int, wirelen: int
    ) -> None:
        """One record: the frame is ``chunk[start:end]``."""
        raise NotImplementedError


def split_records(
    chunk: bytes,
    little_endian: bool,
    divisor: float,
    linktype: int,
    max_record: int,
    out: list[RawPacket] | RecordSink,
) -> tuple[int, int]:
    """Hand the whole records of ``chunk`` to ``out`` (appended as ``RawPacket``s to a list, or
    given to a sink); return (bytes consumed, MORE|CORRUPT).

    ``consumed`` is where the first record that is not whole in ``chunk`` starts (the caller
    reads on from there, or counts it truncated at the end of the file), or the start of the
    corrupt record.
    """
    sink = out if isinstance(out, RecordSink) else None
    packets = out if isinstance(out, list) else None
    size = len(chunk)
    off = 0
    while off + HEADER_BYTES <= size:
        if little_endian:
            sec = _u32le(chunk, off)
            frac = _u32le(chunk, off + 4)
            caplen = _u32le(chunk, off + 8)
            wirelen = _u32le(chunk, off + 12)
        else:
            sec = _u32be(chunk, off)
            frac = _u32be(chunk, off + 4)
            caplen = _u32be(chunk, off + 8)
            wirelen = _u32be(chunk, off + 12)
        if caplen > max_record:
            return off, CORRUPT
        start = off + HEADER_BYTES
        end = start + caplen
        if end > size:
            break
        if sink is not None:
            sink.handed += 1
            sink.packet(chunk, start, end, sec + frac / divisor, linktype, wirelen)
        elif packets is not None:
            # tuple.__new__ is RawPacket(...) without the namedtuple's interpreted __new__ (a
            # Python-level lambda: about 6 % of an attack-mix replay when called from here).
            packets.append(
                tuple.__new__(
                    RawPacket, (sec + frac / divisor, linktype, chunk[start:end], wirelen)
                )
            )
        off = end
    return off, MORE


def record_end(chunk: bytes, little_endian: bool) -> int:
    """Where the record starting at ``chunk[0]`` ends (its header must be in ``chunk``)."""
    caplen = _u32le(chunk, 8) if little_endian else _u32be(chunk, 8)
    return HEADER_BYTES + caplen


def _u32le(b: bytes, i: int) -> int:
    return b[i] | b[i + 1] << 8 | b[i + 2] << 16 | b[i + 3] << 24


def _u32be(b: bytes, i: int) -> int:
    return b[i] << 24 | b[i + 1] << 16 | b[i + 2] << 8 | b[i + 3]


__all__ = ["CORRUPT", "HEADER_BYTES", "MORE", "RecordSink", "record_end", "split_records"]
