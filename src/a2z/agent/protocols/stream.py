"""In-order delivery of one direction of a TCP stream to an application analyzer.

Only what the analyzers need: segments are released in sequence order, retransmitted bytes
are dropped, a bounded number of out-of-order bytes wait for the hole to fill, and anything
that never arrives (or was cut by the snap length) becomes a gap, reported as its length.
"""

from __future__ import annotations

_M32 = 0xFFFFFFFF
_HALF = 0x80000000

Chunk = bytes | int
"""A piece of the stream in order: bytes that were seen, or the length of a gap."""


def seq_diff(a: int, b: int) -> int:
    """Signed 32-bit difference ``a - b`` of two sequence numbers."""
    return ((a - b + _HALF) & _M32) - _HALF


class StreamReassembler:
    """One direction of a TCP connection: segments in, ordered chunks out, memory bounded."""

    __slots__ = ("max_pending", "max_segments", "next_seq", "pending", "pending_bytes")

    def __init__(self, next_seq: int, *, max_pending: int = 65536, max_segments: int = 64) -> None:
        self.next_seq = next_seq & _M32  # sequence number of the next byte to deliver
        self.max_pending = max_pending  # out-of-order bytes held at most
        self.max_segments = max_segments  # out-of-order segments held at most
        self.pending: dict[int, tuple[bytes, int]] = {}  # seq -> (captured bytes, wire length)
        self.pending_bytes = 0

    def add(self, seq: int, data: bytes, wire_len: int) -> list[Chunk]:
        """Add a segment (``data`` may be shorter than ``wire_len`` if snapped); return chunks."""
        out: list[Chunk] = []
        if wire_len <= 0:
            return out
        ahead = seq_diff(seq, self.next_seq)
        if ahead > 0:
            if (
                self.pending_bytes + len(data) <= self.max_pending
                and len(self.pending) < self.max_segments
            ):
                old = self.pending.get(seq)
                if old is None or old[1] < wire_len:
                    if old is not None:
                        self.pending_bytes -= len(old[0])
                    self.pending[seq] = (data, wire_len)
                    self.pending_bytes += len(data)
                return out
            # No room to wait for the hole: give it up as a gap and go on.
            self._flush_into(out)
            ahead = seq_diff(seq, self.next_seq)
            if ahead > 0:
                out.append(ahead)
                self.next_seq = seq & _M32
        self._take(seq, data, wire_len, out)
        if self.pending:
            self._drain(out)
        return out

    def acked(self, ack: int) -> list[Chunk]:
        """The peer acknowledged bytes up to ``ack``: holes below it will never fill.

        (The receiver has those bytes; the capture missed them.) Release the held segments
        that start below ``ack``, with the holes before them as gaps.
        """
        out: list[Chunk] = []
        if not self.pending or seq_diff(ack, self.next_seq) <= 0:
            return out
        base = self.next_seq
        for seq in sorted(self.pending, key=lambda s: seq_diff(s, base)):
            if seq_diff(seq, ack) >= 0:
                break
            data, wire_len = self.pending.pop(seq)
            self.pending_bytes -= len(data)
            ahead = seq_diff(seq, self.next_seq)
            if ahead > 0:
                out.append(ahead)
                self.next_seq = seq & _M32
            self._take(seq, data, wire_len, out)
        if out and self.pending:
            self._drain(out)
        return out

    def flush(self) -> list[Chunk]:
        """Release everything held, holes as gaps (end of stream)."""
        out: list[Chunk] = []
        self._flush_into(out)
        return out

    def _take(self, seq: int, data: bytes, wire_len: int, out: list[Chunk]) -> None:
        skip = -seq_diff(seq, self.next_seq)  # bytes we already delivered (retransmission)
        if skip >= wire_len:
            return
        got = 0
        if skip < len(data):
            out.append(data[skip:] if skip else data)
            got = len(data) - skip
        missing = wire_len - skip - got  # cut by the capture's snap length
        if missing > 0:
            out.append(missing)
        self.next_seq = (self.next_seq + wire_len - skip) & _M32

    def _drain(self, out: list[Chunk]) -> None:
        progressed = True
        while progressed and self.pending:
            progressed = False
            for seq in list(self.pending):
                if seq_diff(seq, self.next_seq) <= 0:
                    data, wire_len = self.pending.pop(seq)
                    self.pending_bytes -= len(data)
                    self._take(seq, data, wire_len, out)
                    progressed = True

    def _flush_into(self, out: list[Chunk]) -> None:
        base = self.next_seq
        for seq in sorted(self.pending, key=lambda s: seq_diff(s, base)):
            data, wire_len = self.pending.pop(seq)
            ahead = seq_diff(seq, self.next_seq)
            if ahead > 0:
                out.append(ahead)
                self.next_seq = seq & _M32
            self._take(seq, data, wire_len, out)
        self.pending_bytes = 0


__all__ = ["Chunk", "StreamReassembler", "seq_diff"]
