"""Wires the agent's stages: record source -> batcher -> disk spool -> channel client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from a2z.agent.commands import CommandRunner, Upgrader
from a2z.agent.config import MIN_SPOOL_BYTES, AgentConfig, ConfigError
from a2z.agent.control import AgentRuntime, LogRing
from a2z.agent.heartbeat import HeartbeatSource
from a2z.agent.identity import IdentityFiles
from a2z.agent.live import LiveCapture
from a2z.agent.pushed_rules import PushedRules
from a2z.agent.replay import iter_records
from a2z.agent.ship.batcher import BatchLimits, batches
from a2z.agent.ship.channel import ChannelClient, ShipStats
from a2z.agent.ship.outbox import SpoolOutbox
from a2z.agent.ship.spool import Spool, SpoolSettings
from a2z.agent.upgrade import make_upgrader
from a2z.records import Batch, Record

if TYPE_CHECKING:  # the stage loads the detections: only when one is passed
    from a2z.agent.detect import EdgeDetector

Progress = Callable[[ShipStats], None]


def spool_settings(
    config: AgentConfig, *, spool_dir: Path | None = None, spool_max_bytes: int | None = None
) -> SpoolSettings | None:
    """The spool to use: command-line values over the config file's; None for no spool."""
    directory = spool_dir or (Path(config.spool_dir) if config.spool_dir else None)
    if directory is None:
        return None
    max_bytes = config.spool_max_bytes if spool_max_bytes is None else spool_max_bytes
    if max_bytes < MIN_SPOOL_BYTES:
        raise ConfigError(f"spool size {max_bytes} is below the minimum of {MIN_SPOOL_BYTES}")
    return SpoolSettings(
        directory=directory, max_bytes=max_bytes, fsync_interval_s=config.spool_fsync_interval_s
    )


def client_tls(config: AgentConfig) -> ssl.SSLContext | None:
    """The enrolled identity's mutual-TLS context, or None for a token-only config."""
    if not config.identity_dir:
        return None
    return IdentityFiles(Path(config.identity_dir)).client_context()


async def ship_capture(
    config: AgentConfig,
    capture: Path,
    *,
    rate: float | None = None,
    spool_dir: Path | None = None,
    spool_max_bytes: int | None = None,
    ssl: ssl.SSLContext | None = None,
    detector: EdgeDetector | None = None,
) -> ShipStats:
    """Replay a capture through the pipeline and deliver its records to the server.

    With a spool (``spool_dir`` or the config's), batches left by an earlier run are delivered
    first, with their original ``(epoch, seq)``.
    """
    return await ship_records(
        config,
        iter_records(capture),
        rate=rate,
        spool=spool_settings(config, spool_dir=spool_dir, spool_max_bytes=spool_max_bytes),
        ssl=ssl,
        detector=detector,
    )


async def ship_records(
    config: AgentConfig,
    records: Iterable[Record | None],
    *,
    rate: float | None = None,
    spool: SpoolSettings | None = None,
    ssl: ssl.SSLContext | None = None,
    progress: Progress | None = None,
    progress_interval_s: float = 1.0,
    capture: LiveCapture | None = None,
    upgrade: Upgrader | None = None,
    detector: EdgeDetector | None = None,
) -> ShipStats:
    """Batch ``records`` and deliver them; return once every batch is settled.

    A live source may yield ``None`` ticks so that a waiting batch goes out within a second.

    Without a spool, unacked batches live in memory only (lost if the agent dies).
    ``progress`` is called every ``progress_interval_s`` with the live counters.
    The server's configuration pushes and commands are applied meanwhile: to ``capture`` (the
    live capture the records come from, if any), the batcher, the spool and the record stream.
    With a ``detector`` (edge detection), its alerts are shipped among the records.
    """
    if detector is not None:
        records = detector.live(records)
    client = ChannelClient(
        url=config.server,
        token=config.token,
        max_backoff_s=config.reconnect_max_s,
        ssl=ssl if ssl is not None else client_tls(config),
        heartbeat_interval_s=config.heartbeat_interval_s,
    )
    stats = client.stats
    heartbeat = client.heartbeat = HeartbeatSource(
        records_acked=lambda: stats.records_acked,
        reconnects=lambda: stats.reconnects,
        drops=lambda: stats.spool.total("dropped").records if stats.spool else 0,
        spool_bytes=lambda: stats.spool.bytes if stats.spool else 0,
    )
    runtime = AgentRuntime(
        state_dir=Path(config.identity_dir) if config.identity_dir else None,
        capture=capture,
        limits=BatchLimits(size=config.batch_size),
    )
    runtime.on_applied = lambda version: setattr(heartbeat, "config_version", version)
    pushed = PushedRules(
        detector,
        state_dir=runtime.state_dir,
        on_applied=lambda digest: setattr(heartbeat, "rules_digest", digest),
    )
    runtime.apply_rules = pushed.apply
    logs = LogRing()
    runtime.run_command = CommandRunner(
        runtime, stats, logs, upgrade or make_upgrader(config), detector=detector
    )
    client.control = runtime.handle
    kept = (r for r in records if r is None or runtime.keeps(r))
    logging.getLogger("a2z").addHandler(logs)
    try:
        await asyncio.to_thread(pushed.resume)
        if spool is None:
            await asyncio.to_thread(runtime.resume)
            stream = batches(
                kept, agent_id=config.agent_id, boot_epoch=time.time_ns(), limits=runtime.limits
            )
            async with _reporting(client.stats, progress, progress_interval_s):
                return await client.ship(_paced(stream, rate))
        store = await asyncio.to_thread(Spool, spool)
        try:
            client.stats.spool, runtime.spool = store.stats, store
            await asyncio.to_thread(runtime.resume)
            # A new epoch for new batches; spooled ones keep theirs, so the server de-duplicates.
            epoch = await asyncio.to_thread(store.new_epoch)
            stream = batches(
                kept, agent_id=config.agent_id, boot_epoch=epoch, limits=runtime.limits
            )
            async with _reporting(client.stats, progress, progress_interval_s):
                await _deliver_spooled(client, store, stream, rate)
        finally:
            await asyncio.to_thread(store.close)
        return client.stats
    finally:
        logging.getLogger("a2z").removeHandler(logs)


def describe(stats: ShipStats) -> str:
    """One line for the operator: what was delivered, re-sent, refused, dropped, quarantined."""
    line = (
        f"delivered {stats.records_acked} records in {stats.batches_acked} batches "
        f"({stats.resends} re-sent, {stats.reconnects} reconnects, {len(stats.refused)} refused)"
    )
    if stats.spool is not None:
        spool = stats.spool
        dropped = ", ".join(
            f"{p.name.lower()} {c.dropped.records}" for p, c in sorted(spool.classes.items())
        )
        line += (
            f"; spool: {spool.total('recovered').batches} batches recovered, "
            f"{spool.total('pending').batches} pending, dropped records: {dropped}, "
            f"{spool.quarantined_regions} regions quarantined"
        )
    return line


async def _deliver_spooled(
    client: ChannelClient, store: Spool, stream: Iterator[Batch], rate: float | None
) -> None:
    # The producer fills the spool whether or not the server is reachable (the spool's cap
    # bounds it); the client drains it; both stop once the stream is spooled and all acked.
    outbox = SpoolOutbox(store)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_produce(store, outbox, stream, rate))
            syncer = tg.create_task(_sync_periodically(store))
            deliverer = tg.create_task(client.deliver(outbox))
            await asyncio.wait({deliverer})
            syncer.cancel()
    except BaseExceptionGroup as group:
        raise _first_error(group) from None


async def _produce(
    store: Spool, outbox: SpoolOutbox, stream: Iterator[Batch], rate: float | None
) -> None:
    async for _batch in _paced(stream, rate, spool=store):
        outbox.notify()
    outbox.close()


async def _paced(
    source: Iterator[Batch], rate: float | None, *, spool: Spool | None = None
) -> AsyncIterator[Batch]:
    # Cutting a batch is CPU-bound and appending it may fsync: both run in a worker thread so
    # the event loop keeps reading acks. ``rate`` (records/s) paces replays for demos.
    start = time.monotonic()
    sent = 0
    while (batch := await asyncio.to_thread(_next_batch, source, spool)) is not None:
        if rate:
            sent += len(batch.records)
            await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
        yield batch


def _next_batch(source: Iterator[Batch], spool: Spool | None) -> Batch | None:
    batch = next(source, None)
    if batch is not None and spool is not None:
        spool.append_batch(batch)
    return batch


async def _sync_periodically(store: Spool) -> None:
    # The spool's fsync policy: the producer only writes, this syncs what it wrote.
    interval = store.settings.fsync_interval_s
    if interval <= 0:
        return
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(store.sync)


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_error(first) if isinstance(first, BaseExceptionGroup) else first


@contextlib.asynccontextmanager
async def _reporting(
    stats: ShipStats, progress: Progress | None, interval: float
) -> AsyncIterator[None]:
    if progress is None:
        yield
        return

    async def report() -> None:
        while True:
            await asyncio.sleep(interval)
            progress(stats)

    task = asyncio.create_task(report())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        progress(stats)
