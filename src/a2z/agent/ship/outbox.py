"""Outboxes: where the channel client takes frames from and reports their fate.

Two today: the disk spool (durable) and an in-memory window over an async batch iterator.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from a2z.agent.ship.spool import Key, Spool
from a2z.records import Batch, encode_batch


@dataclass(eq=False, slots=True)
class Outgoing:
    """One frame on its way; compared by identity (the same batch may be in flight twice)."""

    key: Key  # (boot_epoch, seq)
    records: int
    frame: bytes
    resend: bool = False


class Outbox(Protocol):
    """The channel's source of frames; the client calls it from one event loop."""

    async def get(self) -> Outgoing | None:
        """The next frame to send, waiting for one; None once closed with nothing unsent."""
        ...

    def ack(self, item: Outgoing) -> bool:
        """The server stored ``item``; False if it was settled already."""
        ...

    def reject(self, item: Outgoing) -> bool:
        """The server refused ``item`` for good."""
        ...

    def rewind(self) -> None:
        """The connection ended: everything in flight is to be sent again, oldest first."""
        ...

    def finished(self) -> bool:
        """Closed, and every frame settled."""
        ...

    async def wait_finished(self) -> None:
        """Return once ``finished()``."""
        ...


class SpoolOutbox:
    """Frames from a disk spool; the producer calls ``notify`` after each append."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._available = asyncio.Event()
        self._finished = asyncio.Event()
        self._closed = False

    def notify(self) -> None:
        """New frames were appended."""
        self._available.set()

    def close(self) -> None:
        """No more appends: ``get`` returns None once the spool has nothing unsent."""
        self._closed = True
        self._available.set()
        self._check_finished()

    async def get(self) -> Outgoing | None:
        """See :class:`Outbox`."""
        while True:
            taken = self._spool.take()
            if taken is not None:
                entry = taken.entry
                return Outgoing(entry.key, entry.records, taken.frame, taken.resend)
            self._check_finished()  # a corrupt read-back may have settled the last entry
            if self._closed:
                return None
            self._available.clear()
            await self._available.wait()

    def ack(self, item: Outgoing) -> bool:
        """See :class:`Outbox`."""
        settled = self._spool.ack(item.key)
        self._check_finished()
        return settled

    def reject(self, item: Outgoing) -> bool:
        """See :class:`Outbox`."""
        settled = self._spool.reject(item.key)
        self._check_finished()
        return settled

    def rewind(self) -> None:
        """See :class:`Outbox`."""
        self._spool.rewind()
        self._available.set()

    def finished(self) -> bool:
        """See :class:`Outbox`."""
        return self._closed and self._spool.pending == 0

    async def wait_finished(self) -> None:
        """See :class:`Outbox`."""
        self._check_finished()
        await self._finished.wait()

    def _check_finished(self) -> None:
        if self.finished():
            self._finished.set()


class MemoryOutbox:
    """Frames from an async batch iterator, kept in memory until acked (no disk)."""

    def __init__(self, batches: AsyncIterator[Batch]) -> None:
        self._source = batches
        self._exhausted = False
        self._unacked: list[Outgoing] = []  # sent, oldest first
        self._resend: deque[Outgoing] = deque()
        self._finished = asyncio.Event()
        self._pull: asyncio.Task[Batch | None] | None = None  # the source's next batch, awaited

    async def get(self) -> Outgoing | None:
        """See :class:`Outbox`."""
        if self._resend:
            return self._resend.popleft()
        if self._exhausted:
            return None
        # The source is advanced in a task of its own, which outlives a cancelled caller: the
        # channel cancels its sender whenever a connection ends (a throttle, a drop), often while
        # the source waits (a paced replay sleeps, a capture waits for packets), and the
        # cancellation thrown into an async generator would end it for good, so the rest of the
        # stream was silently taken for its end. The next call awaits the same pull.
        if self._pull is None:
            self._pull = asyncio.create_task(_next(self._source))
        batch = await asyncio.shield(self._pull)
        self._pull = None
        if batch is None:
            self._exhausted = True
            self._check_finished()
            return None
        item = Outgoing((batch.boot_epoch, batch.seq), len(batch.records), encode_batch(batch))
        self._unacked.append(item)
        return item

    def ack(self, item: Outgoing) -> bool:
        """See :class:`Outbox`."""
        return self._settle(item)

    def reject(self, item: Outgoing) -> bool:
        """See :class:`Outbox`."""
        return self._settle(item)

    def rewind(self) -> None:
        """See :class:`Outbox`."""
        for item in self._unacked:
            item.resend = True
        self._resend = deque(self._unacked)

    def finished(self) -> bool:
        """See :class:`Outbox`."""
        return self._exhausted and not self._unacked

    async def wait_finished(self) -> None:
        """See :class:`Outbox`."""
        self._check_finished()
        await self._finished.wait()

    def close(self) -> None:
        """Stop a pull still waiting on the source (delivery gave up before the end)."""
        if self._pull is not None:
            self._pull.cancel()
            self._pull = None

    def _settle(self, item: Outgoing) -> bool:
        try:
            self._unacked.remove(item)
        except ValueError:
            return False
        self._check_finished()
        return True

    def _check_finished(self) -> None:
        if self.finished():
            self._finished.set()


async def _next(source: AsyncIterator[Batch]) -> Batch | None:
    return await anext(source, None)
