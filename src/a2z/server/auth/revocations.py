"""A counter that grows whenever a credential may have been revoked, shared by every server
process on one data directory (``a2z server --workers N``) through a memory-mapped file.

The principal cache keeps an entry only while the counter has not moved since the entry was
verified, so a revocation committed in any of these processes takes effect on the next request
everywhere, without a database round trip per request.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
from pathlib import Path

_FORMAT = struct.Struct("<Q")


class RevocationCounter:
    """A monotonic number; ``path=None`` keeps it in this process only."""

    def __init__(self, path: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._local = 0
        self._path = path
        self._map: mmap.mmap | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size < _FORMAT.size:
                    # Growing to the same size twice (two processes racing) keeps the value.
                    os.ftruncate(fd, _FORMAT.size)
                self._map = mmap.mmap(fd, _FORMAT.size)  # the mapping outlives the descriptor
            finally:
                os.close(fd)

    def read(self) -> int:
        """The current value (an aligned 8-byte load: no lock needed to read it)."""
        if self._map is None:
            return self._local
        value: int = _FORMAT.unpack_from(self._map)[0]
        return value

    def bump(self) -> None:
        """Add one, atomically across the processes sharing the file."""
        with self._lock:
            if self._map is None or self._path is None:
                self._local += 1
                return
            # Revocations are rare: opening the file for its lock each time keeps no
            # descriptor per counter (tests build hundreds of servers in one process).
            fd = os.open(self._path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                _FORMAT.pack_into(self._map, 0, (self.read() + 1) % 2**64)
            finally:
                os.close(fd)  # releases the lock
