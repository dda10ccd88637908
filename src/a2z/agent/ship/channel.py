"""Channel client: streams frames from an outbox over a WebSocket and settles them on reply.

Delivery is at-least-once: whatever a connection leaves unacked is sent again, oldest first,
on the next one, and the server collapses duplicates by ``(agent_id, boot_epoch, seq)``.
Reconnects back off exponentially with full jitter. TLS (mTLS) comes in through ``ssl``.
Flow control (the tenant is over a limit: a reply with ``retry_after``) holds the sender on the
same connection: once every frame in flight is answered, the deferred ones are sent again after
the wait, oldest first; a reconnect would cost the server a TLS handshake per deferral. A
deferral also halves how many frames the sender keeps in flight, and acks grow it back by about
one frame per window (TCP's additive increase, multiplicative decrease): a tenant held at its
quota sends about one frame per frame the server can take, not a full window of frames to be
refused after every wait.

Server messages with a ``type`` are control messages (configuration pushes, commands), not
batch replies: they go, in order, to the ``control`` handler on a task of their own, so a slow
one (compiling a filter, collecting diagnostics) never holds up the acks.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl as _ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection, connect

from a2z.agent.ship.outbox import MemoryOutbox, Outbox, Outgoing
from a2z.agent.ship.spool import SpoolStats
from a2z.records import MAX_FRAME_BYTES, Batch

log = logging.getLogger(__name__)


class Reply(msgspec.Struct):
    """The server's answer to one batch (see the server's channel module), or, when ``type``
    is set, a control message for the ``control`` handler."""

    type: str | None = None
    ack: int | None = None
    nack: int | None = None
    epoch: int | None = None
    error: str | None = None
    retry: bool = False
    retry_after: float | None = None  # flow control: the tenant is over a server-side limit


class ChannelRefused(Exception):
    """The server refused the agent's credential; retrying will not help."""


class ChannelDown(ConnectionError):
    """The connection failed or the server asked for a re-send; reconnect and retry."""


@dataclass
class _Hold:
    """Flow control on one connection: send nothing before ``until`` (monotonic seconds), and
    keep no more than ``limit`` frames in flight (at most the client's ``window``)."""

    window: int
    active: bool = False
    until: float = 0.0
    limit: float = field(init=False)  # the window until the first deferral

    def __post_init__(self) -> None:
        self.limit = float(self.window)

    def held(self) -> bool:
        """A deferral is being sat out (a method: it changes while the sender awaits)."""
        return self.active

    def room(self, inflight: int) -> bool:
        """Whether one more frame may go out with ``inflight`` unanswered."""
        return inflight < int(self.limit)

    def defer(self, retry_after: float) -> None:
        wait = min(max(retry_after, 0.0), MAX_THROTTLE_WAIT_S)
        if not self.active:
            # Once per deferral, not per deferred frame: the frames already in flight were
            # sent under the old limit, and their refusals are the same news.
            self.limit = max(1.0, self.limit / 2)
        self.until = max(self.until if self.active else 0.0, time.monotonic() + wait)
        self.active = True

    def acked(self) -> None:
        # About one more frame in flight per window of acks: back to the full window within a
        # few dozen acks once the server stops deferring, without a burst it would refuse.
        self.limit = min(float(self.window), self.limit + 1 / self.limit)


MAX_THROTTLE_WAIT_S = 300.0  # never sleep longer than this on one server's word

MAX_PENDING_CONTROL = 64  # control messages waiting for the handler; more are dropped (re-sent)
ControlHandler = Callable[[str], Awaitable[str | None]]

_RETRYABLE = (OSError, websockets.ConnectionClosed, websockets.InvalidHandshake, TimeoutError)


@dataclass
class ShipStats:
    """What the shipper did, for the agent's summary and heartbeat."""

    batches_sent: int = 0
    batches_acked: int = 0
    records_acked: int = 0
    resends: int = 0
    reconnects: int = 0
    connections: int = 0  # connections opened (a deferral keeps its connection)
    throttled: int = 0  # batches the server deferred for a tenant limit
    refused: list[str] = field(default_factory=list)
    spool: SpoolStats | None = None  # the disk spool's counters, when there is one


@dataclass
class ChannelClient:
    """Sends frames to ``url``, ``window`` in flight, authenticated by ``token`` and/or ``ssl``.

    ``token`` (a bearer API key) may be empty once the client certificate in ``ssl`` is the
    credential.
    """

    url: str
    token: str = ""
    window: int = 16
    max_backoff_s: float = 30.0
    ssl: _ssl.SSLContext | None = None
    stats: ShipStats = field(default_factory=ShipStats)
    # Called every ``heartbeat_interval_s`` while connected (and once at connect); its text
    # frame goes to the server, which keeps the latest and does not answer it.
    heartbeat: Callable[[], str] | None = None
    heartbeat_interval_s: float = 30.0
    # Handles one server control message (JSON text); its answer, if any, goes back as text.
    control: ControlHandler | None = None
    control_dropped: int = 0  # control messages dropped because the handler fell behind

    async def ship(self, batches: AsyncIterator[Batch]) -> ShipStats:
        """Deliver every batch, holding the unacked ones in memory; return once all are acked."""
        outbox = MemoryOutbox(batches)
        try:
            return await self.deliver(outbox)
        finally:
            outbox.close()

    async def deliver(self, outbox: Outbox) -> ShipStats:
        """Send from ``outbox`` until it is finished, reconnecting as often as it takes."""
        attempt = 0
        while not outbox.finished():
            acked = self.stats.batches_acked
            try:
                async with self._connect() as ws:
                    self.stats.connections += 1
                    await self._session(ws, outbox)
            except websockets.InvalidStatus as exc:
                if exc.response.status_code in (401, 403):
                    raise ChannelRefused(f"server refused the agent: {exc}") from exc
                await self._backoff(attempt := attempt + 1, exc)
            except _RETRYABLE as exc:
                # Back off less only after a connection that got something through, so a
                # server that accepts and then drops us is not hammered.
                attempt = 1 if self.stats.batches_acked > acked else attempt + 1
                await self._backoff(attempt, exc)
        return self.stats

    def _connect(self) -> connect:
        # Frames are zstd already: permessage-deflate would only burn CPU on both ends.
        kwargs: dict[str, Any] = {
            "max_size": MAX_FRAME_BYTES,
            "open_timeout": 10,
            "compression": None,
        }
        if self.token:
            kwargs["additional_headers"] = {"Authorization": f"Bearer {self.token}"}
        if self.ssl is not None:
            kwargs["ssl"] = self.ssl
        return connect(self.url, **kwargs)

    async def _session(self, ws: ClientConnection, outbox: Outbox) -> None:
        # One connection: a sender keeps up to ``window`` frames in flight, a receiver settles
        # replies; either failing ends the connection, and what was in flight is sent again.
        outbox.rewind()
        inflight: deque[Outgoing] = deque()
        controls: asyncio.Queue[str] = asyncio.Queue(MAX_PENDING_CONTROL)
        hold, answered = _Hold(self.window), asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self._send_loop(ws, outbox, inflight, hold, answered)),
                    tg.create_task(
                        self._receive_loop(ws, outbox, inflight, controls, hold, answered)
                    ),
                ]
                if self.control is not None:
                    tasks.append(tg.create_task(self._control_loop(ws, controls, self.control)))
                if self.heartbeat is not None:
                    tasks.append(tg.create_task(self._heartbeat_loop(ws, self.heartbeat)))
                await outbox.wait_finished()
                for task in tasks:
                    task.cancel()
                if self.heartbeat is not None:
                    await ws.send(self.heartbeat())  # a last report, with the final counters
        except BaseExceptionGroup as group:
            retryable, other = group.split(_RETRYABLE)
            if other is not None or retryable is None:
                raise
            raise ChannelDown(str(retryable.exceptions[0])) from group
        finally:
            outbox.rewind()

    async def _send_loop(
        self,
        ws: ClientConnection,
        outbox: Outbox,
        inflight: deque[Outgoing],
        hold: _Hold,
        answered: asyncio.Event,
    ) -> None:
        while True:
            if hold.held():
                await self._sit_out(outbox, inflight, hold, answered)
                continue
            if not hold.room(len(inflight)):  # the window (smaller since a deferral) is full
                answered.clear()
                await answered.wait()
                continue
            item = await outbox.get()
            if item is None:  # nothing left to send, unless what is in flight comes back deferred
                await _all_answered(inflight, answered)
                if hold.held():
                    await self._sit_out(outbox, inflight, hold, answered)
                    continue
                return
            inflight.append(item)
            await ws.send(item.frame)
            self.stats.batches_sent += 1
            self.stats.resends += item.resend

    async def _sit_out(
        self, outbox: Outbox, inflight: deque[Outgoing], hold: _Hold, answered: asyncio.Event
    ) -> None:
        """A deferral: let every frame in flight be answered (more may be deferred), queue the
        deferred ones again, oldest first, and wait as long as the server asked."""
        await _all_answered(inflight, answered)
        outbox.rewind()  # nothing is in flight: this re-queues exactly the deferred frames
        delay = max(0.0, hold.until - time.monotonic())
        log.info("channel throttled by the server; re-sending in %.2fs", delay)
        await asyncio.sleep(delay)
        hold.active = False

    async def _heartbeat_loop(self, ws: ClientConnection, beat: Callable[[], str]) -> None:
        while True:
            await ws.send(beat())
            await asyncio.sleep(self.heartbeat_interval_s)

    async def _receive_loop(
        self,
        ws: ClientConnection,
        outbox: Outbox,
        inflight: deque[Outgoing],
        controls: asyncio.Queue[str],
        hold: _Hold,
        answered: asyncio.Event,
    ) -> None:
        while True:
            raw = await ws.recv()
            try:
                reply = msgspec.json.decode(raw, type=Reply)
            except msgspec.DecodeError:
                log.warning("channel: ignoring a server message that is not a reply")
                continue
            if reply.type is not None:
                self._queue_control(raw, reply.type, controls)
                continue
            item = _match(reply, inflight)
            if item is None:
                continue  # not a reply (a later server message kind) or a stale one
            inflight.remove(item)
            self._settle(reply, item, outbox, hold)
            answered.set()

    def _queue_control(self, raw: str | bytes, kind: str, controls: asyncio.Queue[str]) -> None:
        if self.control is None or not isinstance(raw, str):
            log.warning("channel: ignoring a %s message (no handler)", kind)
            return
        try:
            controls.put_nowait(raw)
        except asyncio.QueueFull:
            # The server re-sends what is still due at our next heartbeat; nothing is lost.
            self.control_dropped += 1
            log.warning("channel: control handler behind; dropped a %s message", kind)

    async def _control_loop(
        self, ws: ClientConnection, controls: asyncio.Queue[str], handle: ControlHandler
    ) -> None:
        while True:
            answer = await handle(await controls.get())
            if answer is not None:
                await ws.send(answer)

    def _settle(self, reply: Reply, item: Outgoing, outbox: Outbox, hold: _Hold) -> None:
        if reply.ack is not None:
            hold.acked()
            if outbox.ack(item):
                self.stats.batches_acked += 1
                self.stats.records_acked += item.records
            return
        if reply.retry and reply.retry_after is not None:
            # Flow control, not a failure: the frame stays unacked in the outbox and goes again
            # after the wait (``_sit_out``), on this connection.
            self.stats.throttled += 1
            hold.defer(reply.retry_after)
            return
        log.warning("server refused batch %s: %s", item.key, reply.error)
        if reply.retry:
            # Not stored for a transient reason: reconnect and re-send everything unacked.
            raise ChannelDown(f"server asked for a retry: {reply.error}")
        # Refused for good (it would be refused again): count it and let the rest flow.
        self.stats.refused.append(reply.error or "refused")
        outbox.reject(item)

    async def _backoff(self, attempt: int, exc: BaseException) -> None:
        self.stats.reconnects += 1
        delay = random.uniform(0, min(self.max_backoff_s, 0.2 * 2**attempt))  # noqa: S311
        log.info("channel down (%s); reconnecting in %.2fs", exc, delay)
        await asyncio.sleep(delay)


async def _all_answered(inflight: deque[Outgoing], answered: asyncio.Event) -> None:
    while inflight:
        answered.clear()
        await answered.wait()


def _match(reply: Reply, inflight: deque[Outgoing]) -> Outgoing | None:
    """The in-flight frame a reply answers: by (epoch, seq), by seq, else the oldest.

    Acks carry the epoch; nacks may carry only the seq; a frame too broken to parse gets a
    reply with neither, and replies come in frame order on one connection, so it is the oldest.
    """
    seq = reply.ack if reply.ack is not None else reply.nack
    if seq is None:
        return inflight[0] if inflight and reply.error is not None else None
    for item in inflight:
        if item.key[1] == seq and reply.epoch in (None, item.key[0]):
            return item
    return None
