"""Wires the agent's stages: capture source -> pipeline -> batcher -> channel client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from a2z.agent.config import AgentConfig
from a2z.agent.replay import iter_records
from a2z.agent.ship.batcher import batches
from a2z.agent.ship.channel import ChannelClient, ShipStats
from a2z.records import Batch


async def _in_thread(source: Iterator[Batch], rate: float | None) -> AsyncIterator[Batch]:
    # Decoding is CPU-bound and synchronous: each batch is cut in a worker thread so the
    # event loop keeps reading acks. ``rate`` (records/s) paces replays for demos.
    start = time.monotonic()
    sent = 0
    while (batch := await asyncio.to_thread(next, source, None)) is not None:
        if rate:
            sent += len(batch.records)
            await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
        yield batch


async def ship_capture(
    config: AgentConfig, capture: Path, *, rate: float | None = None
) -> ShipStats:
    """Replay a capture through the pipeline and deliver its records to the server."""
    boot_epoch = time.time_ns()  # a new epoch per run: seq restarts at 1 without colliding
    stream = batches(
        iter_records(capture),
        agent_id=config.agent_id,
        boot_epoch=boot_epoch,
        size=config.batch_size,
    )
    client = ChannelClient(url=config.server, token=config.token)
    return await client.ship(_in_thread(stream, rate))
