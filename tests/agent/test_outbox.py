"""The in-memory outbox the channel client sends from (no disk spool)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from a2z.agent.ship.outbox import MemoryOutbox
from a2z.records import Batch


def _batch(seq: int) -> Batch:
    return Batch(agent_id="agent", boot_epoch=1, seq=seq, sent_at=0.0, records=[])


def test_memory_outbox_keeps_its_source_when_a_get_is_cancelled_while_the_source_waits() -> None:
    # The channel cancels its sender when a connection ends (a throttle, a drop); a paced or live
    # source is usually waiting then. The stream must go on after it, not end there.
    async def run() -> list[int | None]:
        waiting, go = asyncio.Event(), asyncio.Event()

        async def source() -> AsyncIterator[Batch]:
            waiting.set()
            await go.wait()
            yield _batch(1)
            yield _batch(2)

        outbox = MemoryOutbox(source())
        getter = asyncio.create_task(outbox.get())
        await waiting.wait()
        getter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await getter
        go.set()
        got = [await outbox.get() for _ in range(3)]
        return [item.key[1] if item is not None else None for item in got]

    assert asyncio.run(run()) == [1, 2, None]


def test_memory_outbox_close_stops_a_pull_that_is_still_waiting() -> None:
    async def run() -> bool:
        waiting, closed = asyncio.Event(), asyncio.Event()

        async def source() -> AsyncIterator[Batch]:
            try:
                waiting.set()
                await asyncio.Event().wait()  # never set: a source with nothing more to give
                yield _batch(1)
            finally:
                closed.set()

        outbox = MemoryOutbox(source())
        getter = asyncio.create_task(outbox.get())
        await waiting.wait()
        getter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await getter
        outbox.close()
        await asyncio.wait_for(closed.wait(), timeout=5)
        return closed.is_set()

    assert asyncio.run(run())
