"""Capture-file reader: classic pcap and pcapng into RawPacket, the agent's offline source.

Hand-written on purpose: this is the hot path of every replay; struct.unpack_from on an mmap
costs one slice per packet, where dpkt/scapy build an object tree per packet.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field

from a2z.agent.capture.errors import CaptureFormatError, CaptureOpenError
from a2z.agent.capture.packet import RawPacket
from a2z.agent.capture.pcap_records import (
    CORRUPT,
    HEADER_BYTES,
    RecordSink,
    record_end,
    split_records,
)

# Classic pcap magic numbers as read little-endian from the first four bytes.
_PCAP_MAGIC_US = 0xA1B2C3D4
_PCAP_MAGIC_NS = 0xA1B23C4D
_PCAP_MAGIC_US_SWAPPED = 0xD4C3B2A1
_PCAP_MAGIC_NS_SWAPPED = 0x4D3CB2A1

# pcapng block types.
_SHB = 0x0A0D0D0A  # section header (palindromic: same in both byte orders)
_IDB = 0x00000001  # interface description
_SPB = 0x00000003  # simple packet
_EPB = 0x00000006  # enhanced packet
_BYTE_ORDER_MAGIC = 0x1A2B3C4D

_OPT_IF_TSRESOL = 9
_OPT_IF_TSOFFSET = 14

MAX_RECORD_BYTES = 16 * 1024 * 1024
"""A record or block claiming more than this is corrupt: we stop rather than allocate it."""

RELEASE_BYTES = 64 * 1024
"""Pages of the mapping already read are handed back this often. Every page we touch would
otherwise stay mapped and count in our RSS: a 200 MB capture would cost 200 MB of RSS though
each packet is copied out of it at once (the pages stay in the OS page cache either way).
64 KiB (it was 2 MiB, then 256 KiB) keeps the SYN-flood worst case within 50 MB (ADR 0006);
one madvise per 64 KiB costs nothing measurable."""
WINDOW_BYTES = 32 * 1024
"""Classic pcap is read in windows of this size: each is copied out of the mapping once and
split into packets by compiled code (``pcap_records.py``), which hands the reader a list per
window instead of one generator step per packet. Small enough that a window's packets (≈ 500
under a SYN flood) cost little memory next to the flow table."""
_PAGE = mmap.PAGESIZE


@dataclass(slots=True)
class CaptureStats:
    """What the reader saw besides good packets; one bad record never raises."""

    packets: int = 0  # packets yielded
    truncated: int = 0  # last record/block cut short by the end of the file
    corrupt: int = 0  # records/blocks with impossible lengths (reading stops there)
    skipped_blocks: int = 0  # pcapng blocks we do not use (OPB, NRB, ISB, custom, ...)
    bad_packets: int = 0  # pcapng packets naming an unknown interface (skipped)


@dataclass(slots=True)
class _Interface:
    linktype: int
    snaplen: int
    divisor: float  # ticks per second of this interface's timestamps
    offset: int = 0  # if_tsoffset seconds


@dataclass(slots=True)
class _Section:
    endian: str  # "<" or ">"
    interfaces: list[_Interface] = field(default_factory=list)


class CaptureReader:
    """Iterator over the packets of one capture file; ``stats`` counts what was skipped."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.stats = CaptureStats()
        self._sink: RecordSink | None = None  # where classic-pcap windows go once feed() is called
        self._map: mmap.mmap | None = _map_file(self.path)
        head = bytes(self._map[:4])
        if len(head) < 4:
            self._close()
            raise CaptureFormatError(f"{self.path}: too short to be a capture file")
        (magic,) = struct.unpack("<I", head)
        if magic in (
            _PCAP_MAGIC_US,
            _PCAP_MAGIC_NS,
            _PCAP_MAGIC_US_SWAPPED,
            _PCAP_MAGIC_NS_SWAPPED,
        ):
            self._batches = self._read_pcap(magic)
        elif magic == _SHB:
            self._batches = _batched(self._read_pcapng())
        else:
            self._close()
            raise CaptureFormatError(
                f"{self.path}: not a pcap or pcapng file (magic 0x{magic:08x})"
            )
        # Validate the file header eagerly, so a bad header fails at open, not on first next().
        try:
            self._pending: list[RawPacket] = next(self._batches, [])
        except CaptureFormatError:
            self._close()
            raise
        self._pos = 0  # next packet of _pending that __next__ hands out

    def __iter__(self) -> Iterator[RawPacket]:
        return self

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __next__(self) -> RawPacket:
        pending = self._pending
        while self._pos >= len(pending):
            batch = next(self._batches, None)
            if batch is None:
                self._close()
                raise StopIteration
            self._pending = pending = batch
            self._pos = 0
        pkt = pending[self._pos]
        self._pos += 1
        self.stats.packets += 1
        return pkt

    def batches(self) -> Iterator[list[RawPacket]]:
        """The packets a list at a time (a window of the file each): the replay's way through,
        without a call per packet. Continues where iteration by packet stopped, if it did."""
        rest = self._pending[self._pos :]
        self._pending, self._pos = [], 0
        if rest:
            self.stats.packets += len(rest)
            yield rest
        for batch in self._batches:
            self.stats.packets += len(batch)
            yield batch
        self._close()

    def feed(self, sink: RecordSink) -> Iterator[list[RawPacket]]:
        """``batches()``, except that the packets of each classic-pcap window from now on are
        handed to ``sink`` as the window is split, without a ``RawPacket`` each, and the lists
        yielded for those windows are empty: one step per window for the caller to collect what
        the sink made of it. Packets already read as ``RawPacket``s (the first window, read at
        open to check the header) and pcapng files still come as lists."""
        self._sink = sink
        return self.batches()

    def close(self) -> None:
        """Release the file mapping; iteration then ends."""
        self._batches.close()
        self._pending, self._pos = [], 0
        self._close()

    def _close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None

    # -- classic pcap ---------------------------------------------------------------------------

    def _read_pcap(self, magic: int) -> Generator[list[RawPacket], None, None]:
        buf = self._map
        assert buf is not None
        little = magic in (_PCAP_MAGIC_US, _PCAP_MAGIC_NS)
        divisor = 1e9 if magic in (_PCAP_MAGIC_NS, _PCAP_MAGIC_NS_SWAPPED) else 1e6
        size = len(buf)
        if size < 24:
            raise CaptureFormatError(f"{self.path}: pcap file header is truncated")
        (network,) = struct.unpack_from("<I" if little else ">I", buf, 20)
        linktype = network & 0xFFFF  # the upper bits carry FCS information, not the type
        stats = self.stats
        # Windows never span more than one release interval, so pages are handed back as often
        # as RELEASE_BYTES says; at least one record header, so a window always names a length.
        window = max(min(WINDOW_BYTES, RELEASE_BYTES), HEADER_BYTES)
        off = 24
        released = 0
        while off < size:
            if off - released >= RELEASE_BYTES:
                released = _release(buf, released, off)
            end = min(off + window, size)
            chunk = buf[off:end]
            batch: list[RawPacket] = []
            sink = self._sink
            target: list[RawPacket] | RecordSink = batch if sink is None else sink
            before = 0 if sink is None else sink.handed
            consumed, status = split_records(
                chunk, little, divisor, linktype, MAX_RECORD_BYTES, target
            )
            if status == CORRUPT:
                if sink is not None:
                    stats.packets += sink.handed - before
                    yield batch  # the caller collects what the sink made of the good records
                elif batch:
                    yield batch
                stats.corrupt += 1
                return
            if not consumed:
                # The first record does not fit the window: cut by the end of the file, or
                # longer than a window (read it alone).
                if end == size:
                    stats.truncated += 1
                    return
                chunk = buf[off : off + record_end(chunk, little)]
                consumed, status = split_records(
                    chunk, little, divisor, linktype, MAX_RECORD_BYTES, target
                )
                if not consumed:
                    stats.truncated += 1
                    return
            off += consumed
            if sink is not None:
                stats.packets += sink.handed - before
            yield batch

    # -- pcapng ---------------------------------------------------------------------------------

    def _read_pcapng(self) -> Generator[RawPacket, None, None]:
        buf = self._map
        assert buf is not None
        if len(buf) < 28:
            raise CaptureFormatError(f"{self.path}: pcapng section header is truncated")
        if _section_endian(buf, 0) is None:
            raise CaptureFormatError(
                f"{self.path}: pcapng section header has a bad byte-order magic"
            )
        size = len(buf)
        off = 0
        section = _Section("<")
        last_ts = 0.0
        released = 0
        while off < size:
            if off - released >= RELEASE_BYTES:
                released = _release(buf, released, off)
            if off + 12 > size:
                self.stats.truncated += 1
                return
            (btype,) = struct.unpack_from(section.endian + "I", buf, off)
            if btype == _SHB:
                endian = _section_endian(buf, off)
                if endian is None:
                    self.stats.corrupt += 1
                    return
                section = _Section(endian)
            e = section.endian
            (blen,) = struct.unpack_from(e + "I", buf, off + 4)
            if blen < 12 or blen % 4 or blen > MAX_RECORD_BYTES:
                self.stats.corrupt += 1
                return
            end = off + blen
            if end > size:
                self.stats.truncated += 1
                return
            body = off + 8
            body_end = end - 4
            if btype == _EPB:
                if body_end - body < 20:
                    self.stats.corrupt += 1
                else:
                    iface_id, hi, lo, caplen, wirelen = struct.unpack_from(e + "IIIII", buf, body)
                    data_start = body + 20
                    if iface_id >= len(section.interfaces) or data_start + caplen > body_end:
                        self.stats.bad_packets += 1
                    else:
                        iface = section.interfaces[iface_id]
                        last_ts = ((hi << 32) | lo) / iface.divisor + iface.offset
                        yield RawPacket(
                            last_ts, iface.linktype, buf[data_start : data_start + caplen], wirelen
                        )
            elif btype == _SPB:
                if not section.interfaces or body_end - body < 4:
                    self.stats.bad_packets += 1
                else:
                    (wirelen,) = struct.unpack_from(e + "I", buf, body)
                    iface = section.interfaces[0]
                    caplen = min(wirelen, body_end - body - 4)
                    if iface.snaplen:
                        caplen = min(caplen, iface.snaplen)
                    # An SPB has no timestamp: reuse the section's last one so timeouts stay sane.
                    yield RawPacket(
                        last_ts, iface.linktype, buf[body + 4 : body + 4 + caplen], wirelen
                    )
            elif btype == _IDB:
                if body_end - body < 8:
                    self.stats.corrupt += 1
                else:
                    section.interfaces.append(_parse_idb(buf, e, body, body_end))
            elif btype != _SHB:
                self.stats.skipped_blocks += 1
            off = end


def _batched(
    packets: Generator[RawPacket, None, None], size: int = 1024
) -> Generator[list[RawPacket], None, None]:
    """pcapng packets in lists, as the classic-pcap loop hands them out."""
    batch: list[RawPacket] = []
    try:
        for pkt in packets:
            batch.append(pkt)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch
    finally:
        packets.close()


def _release(buf: mmap.mmap, start: int, upto: int) -> int:
    """Drop our mapping of the whole pages in [start, upto); return the new start."""
    end = upto - upto % _PAGE
    if end > start:
        buf.madvise(mmap.MADV_DONTNEED, start, end - start)
    return end


def _section_endian(buf: mmap.mmap, off: int) -> str | None:
    if off + 12 > len(buf):
        return None
    raw = buf[off + 8 : off + 12]
    if struct.unpack("<I", raw)[0] == _BYTE_ORDER_MAGIC:
        return "<"
    if struct.unpack(">I", raw)[0] == _BYTE_ORDER_MAGIC:
        return ">"
    return None


def _parse_idb(buf: mmap.mmap, e: str, body: int, body_end: int) -> _Interface:
    linktype, _reserved, snaplen = struct.unpack_from(e + "HHI", buf, body)
    divisor = 1e6
    offset = 0
    opt = body + 8
    while opt + 4 <= body_end:
        code, length = struct.unpack_from(e + "HH", buf, opt)
        value = opt + 4
        if code == 0 or value + length > body_end:
            break
        if code == _OPT_IF_TSRESOL and length >= 1:
            res = buf[value]
            divisor = float(2 ** (res & 0x7F)) if res & 0x80 else float(10**res)
        elif code == _OPT_IF_TSOFFSET and length >= 8:
            (offset,) = struct.unpack_from(e + "q", buf, value)
        opt = value + ((length + 3) & ~3)
    return _Interface(linktype, snaplen, divisor, offset)


def _map_file(path: str) -> mmap.mmap:
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise CaptureFormatError(f"{path}: empty file is not a capture")
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise CaptureOpenError(f"{path}: cannot open capture: {exc.strerror or exc}") from exc


def open_capture(path: str | os.PathLike[str]) -> CaptureReader:
    """Open a pcap or pcapng file; raise CaptureFormatError at once if it is neither."""
    return CaptureReader(path)
