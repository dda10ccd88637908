"""Live capture from a Linux interface: an AF_PACKET socket with a TPACKET_V3 ring (a PacketSource).

Why TPACKET_V3 and not recvmmsg-style batching: the kernel writes frames into a ring shared
with us (mmap) and hands over whole *blocks* of them; we pay one poll() per block, not one
syscall per packet, and get nanosecond kernel timestamps for free. Python has no recvmmsg, so
batched reads would mean ctypes and iovec bookkeeping per batch. Measured with
bench/bench_capture.py (docs/benchmarks.md): 1.2 us of CPU per frame with the ring against
3.9 us with one recv() per frame, which also dropped 1.6 % of a burst the ring took whole; the
ring code is about as long. It is also what libpcap, Suricata and Zeek use on Linux.

The kernel runs the BPF filter (compiled by libpcap, see bpf.py) before a frame reaches the
ring, so filtered-out traffic costs us nothing. With ``fanout_group`` set, N sockets (one per
worker process) share the interface through PACKET_FANOUT by flow hash; IP fragments are
defragmented for the hash (PACKET_FANOUT_FLAG_DEFRAG) so all pieces of a datagram meet in one
worker.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from a2z.agent.capture.bpf import DEFAULT_SNAPLEN, BpfProgram, compile_bpf
from a2z.agent.capture.errors import CaptureError, CaptureOpenError
from a2z.agent.capture.packet import RawPacket

# <linux/if_packet.h>, <linux/if_ether.h>, <asm-generic/socket.h>
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
TPACKET_V3 = 2
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27
SIOCGIFHWADDR = 0x8927  # <linux/sockios.h>: the interface's hardware address and ARPHRD type
PACKET_OUTGOING = 4

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6

# ARPHRD_* (from /sys/class/net/IF/type) to the LINKTYPE_* our decoders know.
_LINKTYPES = {1: 1, 772: 1, 0xFFFE: 101}  # Ethernet, loopback (Ethernet framing), none (raw IP)

# struct tpacket_block_desc + tpacket_hdr_v1: version, offset_to_priv, block_status, num_pkts,
# offset_to_first_pkt (the rest of the header we do not need).
_BLOCK = struct.Struct("=IIIII")
# struct tpacket3_hdr: next_offset, sec, nsec, snaplen, len, status, mac, net,
# rxhash, vlan_tci, vlan_tpid.
_PKT = struct.Struct("=IIIIIIHHIIH")
_SLL_OFFSET = 48  # TPACKET_ALIGN(sizeof(struct tpacket3_hdr)): the sockaddr_ll follows
_SLL_PKTTYPE = _SLL_OFFSET + 10  # sockaddr_ll.sll_pkttype
_U32 = struct.Struct("=I")


@dataclass(frozen=True, slots=True)
class RingConfig:
    """Size and latency of the capture ring."""

    block_size: int = 1 << 20  # bytes per block (a power of two, multiple of the page size)
    block_count: int = 16  # blocks in the ring: block_size * block_count bytes of kernel memory
    block_timeout_ms: int = 50  # the kernel hands over a block that is not full after this long
    snaplen: int = DEFAULT_SNAPLEN  # bytes kept per frame (the BPF accept value)
    promiscuous: bool = True  # see frames for other hosts too (as tcpdump does by default)


@dataclass(slots=True)
class CaptureCounters:
    """Kernel counters of one socket (PACKET_STATISTICS), summed over reads."""

    received: int = 0  # frames that passed the filter (tp_packets)
    dropped: int = 0  # of those, frames dropped because the ring was full (tp_drops)
    freezes: int = 0  # times the ring froze for lack of free blocks (tp_freeze_q_cnt)
    delivered: int = 0  # frames we yielded


class AfPacketSource:
    """Frames of one interface as RawPacket, batched a ring block at a time.

    Iterate it (blocks until ``close()`` or forever), or call ``batch(timeout)`` to get what is
    ready within ``timeout`` seconds, which lets a caller check its own deadlines between.
    """

    def __init__(
        self,
        interface: str,
        *,
        bpf: str | None = None,
        fanout_group: int | None = None,
        ring: RingConfig | None = None,
    ) -> None:
        self.interface = interface
        self.ring_config = ring = ring or RingConfig()
        self.counters = CaptureCounters()
        self.linktype = _interface_linktype(interface)
        self._ifindex = _ifindex(interface)
        self._loopback = _arphrd(interface) == 772
        self.program: BpfProgram | None = (
            compile_bpf(bpf, self.linktype, ring.snaplen, interface) if bpf else None
        )
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # no frames until bind
        self._ring: mmap.mmap | None = None
        try:
            self._setup(fanout_group)
        except OSError as exc:
            self.close()
            raise CaptureOpenError(
                f"cannot capture on {interface}: {exc.strerror or exc}"
                + (" (capturing needs root or CAP_NET_RAW)" if exc.errno in (1, 13) else "")
            ) from exc
        self._block = 0
        self._poll = select.poll()
        self._poll.register(self._sock.fileno(), select.POLLIN | select.POLLERR)
        self._closed = False

    def _setup(self, fanout_group: int | None) -> None:
        sock, cfg = self._sock, self.ring_config
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        frame_size = 2048  # only used by the kernel to validate the request in V3
        req = struct.pack(
            "=IIIIIII",
            cfg.block_size,
            cfg.block_count,
            frame_size,
            cfg.block_size * cfg.block_count // frame_size,
            cfg.block_timeout_ms,
            0,  # sizeof_priv
            0,  # feature_req_word
        )
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self._ring = mmap.mmap(
            sock.fileno(),
            cfg.block_size * cfg.block_count,
            flags=mmap.MAP_SHARED,
            prot=mmap.PROT_READ | mmap.PROT_WRITE,
        )
        if self.program is not None:
            _attach_filter(sock, self.program)
        sock.bind((self.interface, ETH_P_ALL))
        if fanout_group is not None:
            mode = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG
            arg = (fanout_group & 0xFFFF) | (mode << 16)
            sock.setsockopt(SOL_PACKET, PACKET_FANOUT, _U32.pack(arg))
        if cfg.promiscuous:
            mreq = struct.pack("=iHH8s", self._ifindex, PACKET_MR_PROMISC, 0, b"")
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)

    # -- reading --------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[RawPacket]:
        while not self._closed:
            yield from self.batch(1.0)

    def batch(self, timeout: float) -> list[RawPacket]:
        """Frames of every block the kernel has handed over; waits up to ``timeout`` for one."""
        ring = self._ring
        if ring is None:
            return []
        cfg = self.ring_config
        base = self._block * cfg.block_size
        if not _U32.unpack_from(ring, base + 8)[0] & TP_STATUS_USER:
            try:
                self._poll.poll(max(int(timeout * 1000), 0))
            except InterruptedError:  # a signal: let the caller look at its flags
                return []
        out: list[RawPacket] = []
        linktype = self.linktype
        skip_outgoing = self._loopback  # lo shows each frame twice (out and in), as libpcap knows
        unpack_pkt = _PKT.unpack_from
        for _ in range(cfg.block_count):
            base = self._block * cfg.block_size
            _ver, _priv, status, num, first = _BLOCK.unpack_from(ring, base)
            if not status & TP_STATUS_USER:
                break
            off = base + first
            for _ in range(num):
                (nxt, sec, nsec, snap, wirelen, pstatus, mac, _net, _hash, tci, tpid) = unpack_pkt(
                    ring, off
                )
                if not (skip_outgoing and ring[off + _SLL_PKTTYPE] == PACKET_OUTGOING):
                    start = off + mac
                    data = ring[start : start + snap]
                    if pstatus & TP_STATUS_VLAN_VALID and linktype == 1:
                        # The NIC took the 802.1Q tag off: put it back as it was on the wire.
                        proto = tpid if pstatus & TP_STATUS_VLAN_TPID_VALID and tpid else 0x8100
                        data = data[:12] + struct.pack("!HH", proto, tci & 0xFFFF) + data[12:]
                        wirelen += 4
                    out.append(RawPacket(sec + nsec / 1e9, linktype, data, wirelen))
                off += nxt
            _U32.pack_into(ring, base + 8, TP_STATUS_KERNEL)  # hand the block back
            self._block = (self._block + 1) % cfg.block_count
        self.counters.delivered += len(out)
        return out

    def set_filter(self, bpf: str | None) -> None:
        """Replace the kernel filter on the open socket; None or "" captures everything.

        The expression is compiled first (FilterError leaves the old filter in place); the
        kernel then swaps the program atomically (SO_ATTACH_FILTER on a socket that has one
        replaces it under the socket lock), so no frame is judged by neither filter and the
        ring keeps what it holds: the capture goes on without a gap.
        """
        if self._closed:
            raise CaptureError("the capture is closed")
        if bpf:
            program = compile_bpf(bpf, self.linktype, self.ring_config.snaplen, self.interface)
            _attach_filter(self._sock, program)
            self.program = program
        elif self.program is not None:
            # Detaching is atomic too: frames are judged by the old program or by none.
            self._sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
            self.program = None

    def read_counters(self) -> CaptureCounters:
        """Add the kernel's counters since the last read (reading resets them) and return all."""
        if not self._closed:
            raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
            packets, drops, freezes = struct.unpack("=III", raw)
            c = self.counters
            c.received += packets
            c.dropped += drops
            c.freezes += freezes
        return self.counters

    def close(self) -> None:
        """Release the ring and the socket (the kernel leaves promiscuous mode with it)."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        self._sock.close()

    def __enter__(self) -> AfPacketSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _attach_filter(sock: socket.socket, program: BpfProgram) -> None:
    insns = ctypes.create_string_buffer(program.pack())
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; } (native layout)
    fprog = struct.pack("HL", len(program), ctypes.addressof(insns))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _arphrd(interface: str) -> int:
    # SIOCGIFHWADDR rather than /sys/class/net/IF/type: sysfs shows the network namespace of
    # whoever mounted it, the ioctl that of the calling thread, which is where we capture.
    if len(interface.encode()) >= 16:  # IFNAMSIZ
        raise CaptureOpenError(f"no such network interface: {interface}")
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifreq = fcntl.ioctl(
            probe.fileno(), SIOCGIFHWADDR, struct.pack("16s16x", interface.encode())
        )
    except OSError as exc:
        raise CaptureOpenError(f"no such network interface: {interface}") from exc
    finally:
        probe.close()
    family: int = struct.unpack_from("=H", ifreq, 16)[0]  # ifr_hwaddr.sa_family
    return family


def _ifindex(interface: str) -> int:
    try:
        return socket.if_nametoindex(interface)
    except OSError as exc:
        raise CaptureOpenError(f"no such network interface: {interface}") from exc


def _interface_linktype(interface: str) -> int:
    if "/" in interface or interface in ("", ".", ".."):
        raise CaptureOpenError(f"not an interface name: {interface!r}")
    arphrd = _arphrd(interface)
    linktype = _LINKTYPES.get(arphrd)
    if linktype is None:
        raise CaptureError(
            f"{interface}: link type ARPHRD {arphrd} is not supported for live capture "
            "(Ethernet, loopback and raw-IP interfaces are)"
        )
    return linktype


def fanout_group_id() -> int:
    """A fanout group id unlikely to clash with another capture on this host."""
    return (os.getpid() ^ int(time.monotonic() * 1000)) & 0xFFFF


__all__ = [
    "AfPacketSource",
    "CaptureCounters",
    "RingConfig",
    "fanout_group_id",
]
