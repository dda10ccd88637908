"""Monotonic counters shared by every server process on one data directory.

A counter here answers one question cheaply on every request: "has anything I depend on changed
since I last looked?". Readers load an aligned 8-byte word from a memory-mapped file (no lock,
no system call); writers add one under an ``flock`` of the file, so increments from several
processes are never lost. A reader keeps whatever it derived (a verified principal, a rendered
page) only while the counter still holds the value it read *before* deriving it.

Users: the revocation counter (one slot, ``auth/revocations.py``) and the page cache's
per-tenant write generations (``page-generations``, ``page_cache.py``).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
from pathlib import Path

_WORD = struct.Struct("<Q")


class SharedCounters:
    """``slots`` counters; ``path=None`` keeps them in this process only (tests, tools)."""

    def __init__(self, path: Path | None = None, slots: int = 1) -> None:
        if slots < 1:
            raise ValueError("at least one slot")
        self.slots = slots
        self._lock = threading.Lock()
        self._path = path
        size = slots * _WORD.size
        if path is None:
            # Anonymous memory: the same read/bump code for both cases.
            self._map = mmap.mmap(-1, size)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                # Growing to the same size twice (two processes racing) keeps the values.
                os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)  # the mapping outlives the descriptor
        finally:
            os.close(fd)

    def read(self, slot: int = 0) -> int:
        """The slot's current value (an aligned 8-byte load: no lock needed to read it)."""
        value: int = _WORD.unpack_from(self._map, slot * _WORD.size)[0]
        return value

    def bump(self, slot: int = 0) -> None:
        """Add one to ``slot``, atomically across the processes sharing the file."""
        offset = slot * _WORD.size
        if not 0 <= slot < self.slots:
            raise IndexError(slot)
        with self._lock:
            if self._path is None:
                _WORD.pack_into(self._map, offset, (self.read(slot) + 1) % 2**64)
                return
            # Opening the file for its lock each time keeps no descriptor per counter (tests
            # build hundreds of servers in one process); a bump costs ~10 us, once per commit.
            fd = os.open(self._path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                _WORD.pack_into(self._map, offset, (self.read(slot) + 1) % 2**64)
            finally:
                os.close(fd)  # releases the lock
