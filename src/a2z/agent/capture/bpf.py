"""BPF filter expressions (tcpdump syntax) to classic BPF programs the kernel runs on a socket.

We compile with libpcap's own ``pcap_compile`` through ctypes: it is the compiler tcpdump uses,
so an expression means exactly what it means to tcpdump, with no subprocess and no parser of
ours. Without libpcap we refuse filters with a clear error rather than guess.

For a live interface we compile on a briefly activated libpcap handle of that interface, as
tcpdump does: on Linux the NIC usually strips 802.1Q tags into packet metadata, and only a live
handle makes libpcap emit the kernel's VLAN ancillary loads, so that ``vlan 7`` matches.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
from dataclasses import dataclass
from functools import cache

from a2z.agent.capture.errors import CaptureError

_INSN = struct.Struct("HBBI")  # struct sock_filter / bpf_insn: code, jt, jf, k (native order)
DEFAULT_SNAPLEN = 262_144  # what tcpdump uses; the program's accept return value


class FilterError(CaptureError):
    """The filter expression does not compile, or there is no compiler (libpcap) here."""


class _BpfInsn(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    )


class _BpfProgram(ctypes.Structure):
    _fields_ = (("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_BpfInsn)))


@dataclass(frozen=True, slots=True)
class BpfProgram:
    """A compiled classic BPF program: what SO_ATTACH_FILTER takes."""

    expression: str  # the source expression, for messages
    instructions: tuple[tuple[int, int, int, int], ...]  # (code, jt, jf, k) each

    def __len__(self) -> int:
        return len(self.instructions)

    def pack(self) -> bytes:
        """The instructions as the kernel's ``struct sock_filter`` array."""
        return b"".join(_INSN.pack(*insn) for insn in self.instructions)


@cache
def _libpcap() -> ctypes.CDLL:
    name = ctypes.util.find_library("pcap")
    if name is None:
        raise FilterError(
            "a BPF filter needs libpcap to compile it, and libpcap was not found "
            "(Debian/Ubuntu: apt-get install libpcap0.8)"
        )
    lib = ctypes.CDLL(name)
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_open_dead.argtypes = (ctypes.c_int, ctypes.c_int)
    lib.pcap_compile.restype = ctypes.c_int
    lib.pcap_compile.argtypes = (
        ctypes.c_void_p,
        ctypes.POINTER(_BpfProgram),
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint32,
    )
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_geterr.argtypes = (ctypes.c_void_p,)
    lib.pcap_freecode.restype = None
    lib.pcap_freecode.argtypes = (ctypes.POINTER(_BpfProgram),)
    lib.pcap_close.restype = None
    lib.pcap_close.argtypes = (ctypes.c_void_p,)
    lib.pcap_create.restype = ctypes.c_void_p
    lib.pcap_create.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
    lib.pcap_set_snaplen.restype = ctypes.c_int
    lib.pcap_set_snaplen.argtypes = (ctypes.c_void_p, ctypes.c_int)
    lib.pcap_set_buffer_size.restype = ctypes.c_int
    lib.pcap_set_buffer_size.argtypes = (ctypes.c_void_p, ctypes.c_int)
    lib.pcap_activate.restype = ctypes.c_int
    lib.pcap_activate.argtypes = (ctypes.c_void_p,)
    return lib


PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
# libpcap's compiler takes DLT_* values, which differ from the LINKTYPE_* numbers of files and
# our decoders for a few types; raw IP is the one our live capture can meet.
_LINKTYPE_TO_DLT = {101: 12}  # LINKTYPE_RAW -> DLT_RAW (Linux value)


def _live_handle(lib: ctypes.CDLL, interface: str, snaplen: int) -> int | None:
    """An activated libpcap handle on ``interface``, or None if libpcap cannot open it."""
    errbuf = ctypes.create_string_buffer(256)  # PCAP_ERRBUF_SIZE
    handle: int | None = lib.pcap_create(interface.encode(), errbuf)
    if not handle:
        return None
    lib.pcap_set_snaplen(handle, snaplen)
    lib.pcap_set_buffer_size(handle, 1 << 16)  # it only lives to compile: keep its ring small
    if lib.pcap_activate(handle) < 0:  # > 0 are warnings (e.g. promiscuous mode unsupported)
        lib.pcap_close(handle)
        return None
    return handle


def compile_bpf(
    expression: str,
    linktype: int,
    snaplen: int = DEFAULT_SNAPLEN,
    interface: str | None = None,
) -> BpfProgram:
    """Compile a tcpdump-style expression for frames of ``linktype`` (1 Ethernet, 101 raw IP).

    With ``interface``, compile as tcpdump would for that live interface (see the module
    docstring); if libpcap cannot open it we compile for the bare link type instead, and the
    capture itself reports why the interface cannot be opened.
    """
    lib = _libpcap()
    handle = _live_handle(lib, interface, snaplen) if interface else None
    if handle is None:
        handle = lib.pcap_open_dead(_LINKTYPE_TO_DLT.get(linktype, linktype), snaplen)
    if not handle:
        raise FilterError(f"libpcap cannot compile for link type {linktype}")
    program = _BpfProgram()
    try:
        rc = lib.pcap_compile(
            handle, ctypes.byref(program), expression.encode(), 1, PCAP_NETMASK_UNKNOWN
        )
        if rc != 0:
            message = (lib.pcap_geterr(handle) or b"syntax error").decode(errors="replace")
            raise FilterError(f"bad BPF filter {expression!r}: {message}")
        insns = tuple(
            (
                program.bf_insns[i].code,
                program.bf_insns[i].jt,
                program.bf_insns[i].jf,
                program.bf_insns[i].k,
            )
            for i in range(program.bf_len)
        )
        lib.pcap_freecode(ctypes.byref(program))
    finally:
        lib.pcap_close(handle)
    return BpfProgram(expression, insns)


__all__ = ["DEFAULT_SNAPLEN", "BpfProgram", "FilterError", "compile_bpf"]
