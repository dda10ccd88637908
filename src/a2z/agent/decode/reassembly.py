"""IP fragment reassembly (IPv4 and IPv6): between IP decode and transport decode in the pipeline.

Fragments in, whole datagrams out. Stateful but sans-IO: time is the packet timestamp, memory is
bounded (all pending datagrams together, and each one), and every anomaly is returned as a
DecodeError for the caller to log as a weird, with Zeek's names (Zeek's Frag.cc semantics).
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from typing import Final, NamedTuple

from a2z.agent.decode.errors import DecodeError
from a2z.agent.decode.ipv4 import IPv4Header
from a2z.agent.decode.ipv6 import IPv6Header

MIN_ACCEPTABLE_FRAG_SIZE: Final = 64  # Zeek: a non-last fragment smaller than this is suspicious
MAX_IP_PAYLOAD: Final = 65_535  # the 16-bit length fields cannot describe more
_BLOCK_OVERHEAD: Final = 64  # bytes we charge per held piece besides its data (tuple, bytes header)
_U16: Final = struct.Struct("!H")


@dataclass(frozen=True, slots=True)
class DefragConfig:
    """Limits of the reassembler; time is packet time."""

    timeout: float = 30.0  # seconds a datagram may wait for its missing pieces (Linux ipfrag_time)
    max_bytes: int = 4 * 1024 * 1024  # all pending datagrams together (Linux ipfrag_high_thresh)
    max_datagram: int = MAX_IP_PAYLOAD  # fragmentable bytes of one datagram; more is dropped
    max_pending: int = 4096  # datagrams waiting at once; the oldest is evicted beyond this


@dataclass(slots=True)
class DefragStats:
    """Running counters of one reassembler."""

    fragments: int = 0  # fragments handed in
    datagrams: int = 0  # datagrams reassembled and returned
    overlaps: int = 0  # fragments overlapping data already held (the first copy wins)
    timeouts: int = 0  # incomplete datagrams dropped after ``timeout``
    evictions: int = 0  # incomplete datagrams dropped to stay within max_bytes / max_pending
    dropped: int = 0  # fragments refused (too large, not fully captured)
    incomplete: int = 0  # datagrams still incomplete when the input ended (``clear``)


class Defragmented(NamedTuple):
    """What one fragment produced: the whole datagram once complete, and any anomalies."""

    packet: bytes | None  # the reassembled IP packet (header rewritten), or None for now
    weirds: list[DecodeError]  # conditions to report, in the order Zeek raises them


# IPv4: (src, dst, identification, protocol) as RFC 791; IPv6: (src, dst, identification) as
# RFC 8200 (-1 stands in for the protocol, which must then agree between fragments).
_Key = tuple[bytes, bytes, int, int]


class _Datagram:
    """One datagram being reassembled: non-overlapping pieces sorted by offset."""

    __slots__ = ("covered", "deadline", "header", "held", "next_proto", "pieces", "size", "starts")

    def __init__(self, deadline: float, next_proto: int) -> None:
        self.deadline = deadline  # packet time at which it is dropped if still incomplete
        self.next_proto = next_proto  # upper protocol; the offset-0 fragment's word is final
        self.header: bytes | None = None  # unfragmentable part, from the offset-0 fragment
        self.starts: list[int] = []  # piece offsets, sorted (parallel to ``pieces``)
        self.pieces: list[tuple[int, bytes]] = []  # (offset, data), never overlapping
        self.covered = 0  # bytes held in pieces
        self.size: int | None = None  # fragmentable length, known once the last piece came
        self.held = 0  # bytes charged against the memory limit

    def max_end(self) -> int:
        if not self.pieces:
            return 0
        start, data = self.pieces[-1]
        return start + len(data)


class Reassembler:
    """Collects IPv4 and IPv6 fragments and returns each datagram once it is whole.

    Overlaps keep the data that arrived first (as Zeek and the BSD stacks do) and are reported
    as ``fragment_overlap`` (same bytes) or ``fragment_inconsistency`` (different bytes).
    """

    def __init__(self, config: DefragConfig | None = None) -> None:
        self.config = config or DefragConfig()
        self.stats = DefragStats()
        self.held_bytes = 0  # bytes charged by all pending datagrams
        self._pending: dict[_Key, _Datagram] = {}  # insertion order = age (oldest first)

    def __len__(self) -> int:
        return len(self._pending)

    # -- fragments in ---------------------------------------------------------------------------

    def add_ipv4(self, ts: float, hdr: IPv4Header, packet: memoryview) -> Defragmented:
        """Add one IPv4 fragment; ``packet`` is the captured IP packet, from its header on."""
        weirds: list[DecodeError] = []
        if hdr.dont_fragment:
            weirds.append(DecodeError("IP", "fragment_with_DF"))  # e.g. Linux UDP PMTU probing
        hl = hdr.header_len
        data = self._fragment_data(packet, hl, hdr.total_len, weirds)
        if data is None:
            return Defragmented(None, weirds)
        key = (hdr.src, hdr.dst, hdr.ident, hdr.proto)
        header = bytes(packet[:hl]) if hdr.frag_offset == 0 else None
        room = MAX_IP_PAYLOAD - hl
        whole = self._add(
            ts,
            key,
            hdr.proto,
            header,
            hdr.frag_offset,
            data,
            hdr.more_fragments,
            hdr.total_len,
            room,
            weirds,
        )
        if whole is None:
            return Defragmented(None, weirds)
        first, payload = whole
        out = bytearray(first)
        _U16.pack_into(out, 2, len(out) + len(payload))  # total length
        _U16.pack_into(out, 6, 0x4000 if hdr.dont_fragment else 0)  # no MF, no offset
        _U16.pack_into(out, 10, 0)
        _U16.pack_into(out, 10, ipv4_checksum(out))
        out += payload
        return Defragmented(bytes(out), weirds)

    def add_ipv6(self, ts: float, hdr: IPv6Header, packet: memoryview) -> Defragmented:
        """Add one IPv6 fragment (``hdr.frag_at`` set); ``packet`` is the captured IP packet."""
        weirds: list[DecodeError] = []
        at = hdr.frag_at
        data = self._fragment_data(packet, at + 8, hdr.total_len, weirds)
        if data is None:
            return Defragmented(None, weirds)
        next_proto = packet[at]  # the fragment header's next header
        key = (hdr.src, hdr.dst, hdr.frag_ident or 0, -1)
        header = None
        if hdr.frag_offset == 0:
            # The unfragmentable part, with the fragment header's next header moved into the
            # header that named the fragment header (RFC 8200 section 4.5).
            unfrag = bytearray(packet[:at])
            unfrag[hdr.frag_nh_at] = next_proto
            header = bytes(unfrag)
        room = MAX_IP_PAYLOAD - (at - 40)
        whole = self._add(
            ts,
            key,
            next_proto,
            header,
            hdr.frag_offset,
            data,
            hdr.more_fragments,
            hdr.total_len,
            room,
            weirds,
        )
        if whole is None:
            return Defragmented(None, weirds)
        first, payload = whole
        out = bytearray(first)
        _U16.pack_into(out, 4, len(out) - 40 + len(payload))  # payload length
        out += payload
        return Defragmented(bytes(out), weirds)

    # -- time and end of input ------------------------------------------------------------------

    def expire(self, now: float) -> int:
        """Drop the datagrams whose time ran out at packet time ``now``; return how many."""
        pending = self._pending
        n = 0
        while pending:
            key = next(iter(pending))
            if pending[key].deadline > now:
                break
            self._drop(key)
            n += 1
        self.stats.timeouts += n
        return n

    def clear(self) -> int:
        """Forget every pending datagram (end of input); return how many were incomplete."""
        n = len(self._pending)
        self._pending.clear()
        self.held_bytes = 0
        self.stats.incomplete += n
        return n

    # -- internals ------------------------------------------------------------------------------

    def _fragment_data(
        self, packet: memoryview, start: int, ip_len: int, weirds: list[DecodeError]
    ) -> memoryview | None:
        """The fragment's share of the datagram, or None (and why) if it cannot be used."""
        self.stats.fragments += 1
        if ip_len < start:  # a zero (offloaded) or impossible length
            weirds.append(DecodeError("IP", "fragment_protocol_inconsistency", f"length {ip_len}"))
        elif len(packet) < ip_len:
            weirds.append(DecodeError("IP", "incompletely_captured_fragment"))
        else:
            return packet[start:ip_len]
        self.stats.dropped += 1
        return None

    def _add(
        self,
        ts: float,
        key: _Key,
        next_proto: int,
        header: bytes | None,
        offset: int,
        data: memoryview,
        more: bool,
        ip_len: int,
        room: int,
        weirds: list[DecodeError],
    ) -> tuple[bytes, bytes] | None:
        stats = self.stats
        cfg = self.config
        if self._pending:
            self.expire(ts)
        if more and ip_len < MIN_ACCEPTABLE_FRAG_SIZE:
            weirds.append(DecodeError("IP", "excessively_small_fragment"))
        upper = offset + len(data)
        if upper > min(cfg.max_datagram, room):
            weirds.append(DecodeError("IP", "excessively_large_fragment", f"ends at {upper}"))
            stats.dropped += 1
            return None
        dgram = self._pending.get(key)
        if dgram is None:
            dgram = _Datagram(ts + cfg.timeout, next_proto)
            self._pending[key] = dgram
        elif next_proto != dgram.next_proto:
            weirds.append(DecodeError("IP", "fragment_protocol_inconsistency"))
        if header is not None:
            dgram.next_proto = next_proto  # the first fragment's word is final (as Zeek)
            if dgram.header is None:
                dgram.header = header
                self._charge(dgram, len(header))

        # The datagram's size: set by the last fragment, raised (with a weird) by anything that
        # reaches beyond it, as Zeek does.
        if not more:
            if dgram.size is None:
                dgram.size = max(upper, dgram.max_end())
                if dgram.size != upper:
                    weirds.append(DecodeError("IP", "fragment_size_inconsistency"))
            elif upper != dgram.size:
                weirds.append(DecodeError("IP", "fragment_size_inconsistency"))
                dgram.size = max(dgram.size, upper)
        elif dgram.size is not None and upper > dgram.size:
            weirds.append(DecodeError("IP", "fragment_size_inconsistency"))
            dgram.size = upper

        if data:
            self._insert(dgram, offset, data, weirds)
        whole = self._complete(key, dgram)
        if whole is None:
            self._enforce_limits()
        return whole

    def _insert(
        self, dgram: _Datagram, offset: int, data: memoryview, weirds: list[DecodeError]
    ) -> None:
        """Store the parts of ``data`` no held piece covers; report each overlapped piece."""
        starts, pieces = dgram.starts, dgram.pieces
        upper = offset + len(data)
        i = bisect.bisect_right(starts, offset) - 1
        if i < 0 or starts[i] + len(pieces[i][1]) <= offset:
            i += 1
        pos = offset  # the next byte of ``data`` not yet stored or found held
        new: list[tuple[int, bytes]] = []
        overlapped = False
        while i < len(pieces) and starts[i] < upper:
            p_start, p_data = pieces[i]
            p_end = p_start + len(p_data)
            if pos < p_start:
                new.append((pos, bytes(data[pos - offset : p_start - offset])))
            lo, hi = max(pos, p_start), min(upper, p_end)
            same = data[lo - offset : hi - offset] == p_data[lo - p_start : hi - p_start]
            weirds.append(
                DecodeError("IP", "fragment_overlap" if same else "fragment_inconsistency")
            )
            overlapped = True
            pos = max(pos, p_end)
            i += 1
        if pos < upper:
            new.append((pos, bytes(data[pos - offset :])))
        if overlapped:
            self.stats.overlaps += 1
        for start, chunk in new:
            j = bisect.bisect_left(starts, start)
            starts.insert(j, start)
            pieces.insert(j, (start, chunk))
            dgram.covered += len(chunk)
            self._charge(dgram, len(chunk) + _BLOCK_OVERHEAD)

    def _complete(self, key: _Key, dgram: _Datagram) -> tuple[bytes, bytes] | None:
        size, header = dgram.size, dgram.header
        if size is None or header is None or dgram.covered < size:
            return None
        # Pieces never overlap and none ends beyond ``size``, so full coverage means no holes.
        self._drop(key)
        # The length field covers the IPv4 header, but not IPv6's fixed 40 bytes.
        if size + len(header) - (40 if key[3] < 0 else 0) > MAX_IP_PAYLOAD:
            self.stats.dropped += 1  # the first fragment's header leaves no room for the rest
            return None
        self.stats.datagrams += 1
        return header, b"".join(data for _, data in dgram.pieces)

    def _charge(self, dgram: _Datagram, n: int) -> None:
        dgram.held += n
        self.held_bytes += n

    def _drop(self, key: _Key) -> None:
        dgram = self._pending.pop(key)
        self.held_bytes -= dgram.held

    def _enforce_limits(self) -> None:
        cfg = self.config
        pending = self._pending
        while pending and (self.held_bytes > cfg.max_bytes or len(pending) > cfg.max_pending):
            self._drop(next(iter(pending)))
            self.stats.evictions += 1


def ipv4_checksum(header: bytes | bytearray) -> int:
    """The Internet checksum of an IPv4 header whose checksum field is zero."""
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header[: len(header) // 2 * 2]))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


__all__ = ["DefragConfig", "DefragStats", "Defragmented", "Reassembler", "ipv4_checksum"]
