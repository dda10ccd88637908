"""Channel client: streams batches over a WebSocket, keeps each until the server acks it.

Delivery is at-least-once: unacked batches are re-sent after a reconnect, and the server
collapses duplicates by ``(agent_id, boot_epoch, seq)``. Reconnects back off exponentially with
full jitter. The disk spool and mTLS come with the channel issue; this keeps batches in memory.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection, connect

from a2z.records import MAX_FRAME_BYTES, Batch, encode_batch

log = logging.getLogger(__name__)


class Reply(msgspec.Struct):
    """The server's answer to one batch (see the server's channel module)."""

    ack: int | None = None
    nack: int | None = None
    epoch: int | None = None
    error: str | None = None
    retry: bool = False


class ChannelRefused(Exception):
    """The server refused the agent's credential; retrying will not help."""


@dataclass
class ShipStats:
    """What the shipper did, for the agent's summary and heartbeat."""

    batches_sent: int = 0
    batches_acked: int = 0
    records_acked: int = 0
    resends: int = 0
    reconnects: int = 0
    refused: list[str] = field(default_factory=list)


@dataclass
class ChannelClient:
    """Sends batches to ``url`` with ``token`` as bearer credential, ``window`` in flight."""

    url: str
    token: str
    window: int = 16
    max_backoff_s: float = 30.0
    stats: ShipStats = field(default_factory=ShipStats)

    async def ship(self, batches: AsyncIterator[Batch]) -> ShipStats:
        """Deliver every batch; return once the server acked all of them."""
        pending: OrderedDict[int, tuple[Batch, bytes]] = OrderedDict()
        source = batches
        exhausted = False
        attempt = 0
        while not exhausted or pending:
            try:
                async with connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {self.token}"},
                    max_size=MAX_FRAME_BYTES,
                ) as ws:
                    attempt = 0
                    exhausted = await self._stream(ws, source, pending, exhausted)
            except websockets.InvalidStatus as exc:
                if exc.response.status_code in (401, 403):
                    raise ChannelRefused(f"server refused the agent: {exc}") from exc
                await self._backoff(attempt := attempt + 1, exc)
            except (OSError, websockets.ConnectionClosed, TimeoutError) as exc:
                await self._backoff(attempt := attempt + 1, exc)
        return self.stats

    async def _stream(
        self,
        ws: ClientConnection,
        source: AsyncIterator[Batch],
        pending: OrderedDict[int, tuple[Batch, bytes]],
        exhausted: bool,
    ) -> bool:
        # Re-send whatever a previous connection left unacked, oldest first.
        for _batch, frame in pending.values():
            await ws.send(frame)
            self.stats.resends += 1
        while not exhausted or pending:
            while not exhausted and len(pending) < self.window:
                batch = await anext(source, None)
                if batch is None:
                    exhausted = True
                    break
                frame = encode_batch(batch)
                pending[batch.seq] = (batch, frame)
                await ws.send(frame)
                self.stats.batches_sent += 1
            if pending:
                self._settle(msgspec.json.decode(await ws.recv(), type=Reply), pending)
        return exhausted

    def _settle(self, reply: Reply, pending: OrderedDict[int, tuple[Batch, bytes]]) -> None:
        if reply.ack is not None:
            if (entry := pending.pop(reply.ack, None)) is not None:
                self.stats.batches_acked += 1
                self.stats.records_acked += len(entry[0].records)
            return
        log.warning("server refused batch %s: %s", reply.nack, reply.error)
        if reply.retry:
            # Not stored for a transient reason: reconnect and re-send everything unacked.
            raise ConnectionResetError(f"server asked for a retry: {reply.error}")
        # Refused for good (it would be refused again): count it and let the rest flow.
        self.stats.refused.append(reply.error or "refused")
        if reply.nack is not None:
            pending.pop(reply.nack, None)
        elif pending:
            # A frame the server could not even parse has no seq; replies come in frame order
            # on one connection, so it is the oldest one in flight.
            pending.popitem(last=False)

    async def _backoff(self, attempt: int, exc: BaseException) -> None:
        self.stats.reconnects += 1
        delay = random.uniform(0, min(self.max_backoff_s, 0.2 * 2**attempt))  # noqa: S311
        log.info("channel down (%s); reconnecting in %.2fs", exc, delay)
        await asyncio.sleep(delay)
