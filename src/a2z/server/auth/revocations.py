"""A counter that grows whenever a credential may have been revoked, shared by every server
process on one data directory (``a2z server --workers N``) through a memory-mapped file.

The principal cache keeps an entry only while the counter has not moved since the entry was
verified, so a revocation committed in any of these processes takes effect on the next request
everywhere, without a database round trip per request.
"""

from __future__ import annotations

from pathlib import Path

from a2z.server.counters import SharedCounters


class RevocationCounter(SharedCounters):
    """One shared counter (file ``revocations``, 8 bytes); ``path=None`` keeps it in-process."""

    def __init__(self, path: Path | None = None) -> None:
        super().__init__(path, slots=1)
