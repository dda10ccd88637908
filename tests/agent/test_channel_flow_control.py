"""The channel's flow control: a deferred sender shrinks its window, then grows it back.

A server holding a tenant at its quota should not have to refuse a full window of frames after
every wait; a sender the server stops deferring should be back at its full window soon after.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import msgspec
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from a2z.agent.ship.channel import ChannelClient
from a2z.records import Batch, Conn, decode_batch

WINDOW = 8


async def batches(count: int) -> AsyncIterator[Batch]:
    for seq in range(1, count + 1):
        record = Conn(
            ts=1_700_000_000.0 + seq, uid=f"C{seq}", orig_h="10.0.0.1", orig_p=1024,
            resp_h="10.0.0.2", resp_p=443, proto="tcp", conn_state="SF",
        )  # fmt: skip
        yield Batch(agent_id="agent-1", boot_epoch=1, seq=seq, sent_at=0.0, records=[record])


def ack(b: Batch) -> str:
    return msgspec.json.encode({"ack": b.seq, "epoch": b.boot_epoch}).decode()


def defer(b: Batch, retry_after: float) -> str:
    reply = {"nack": b.seq, "retry": True, "retry_after": retry_after, "error": "over rate"}
    return msgspec.json.encode(reply).decode()


async def test_a_sender_held_at_its_quota_sends_about_one_frame_per_frame_taken() -> None:
    # The server takes one frame every 20 ms (a token bucket of one), as a gateway does for a
    # tenant at its quota, and tells a refused frame how long until it would fit.
    interval, count = 0.02, 40
    refused = taken = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal refused, taken
        next_free = time.monotonic()
        async for frame in ws:
            assert isinstance(frame, bytes)
            b = decode_batch(frame)
            now = time.monotonic()
            if now >= next_free:
                taken += 1
                next_free = now + interval
                await ws.send(ack(b))
            else:
                refused += 1
                await ws.send(defer(b, next_free - now))

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        client = ChannelClient(f"ws://127.0.0.1:{port}", window=WINDOW)
        stats = await asyncio.wait_for(client.ship(batches(count)), timeout=60)

    assert stats.batches_acked == taken == count and stats.connections == 1
    assert stats.throttled == refused > 0
    # A sender that resumed with its whole window would see about WINDOW - 1 refusals per frame
    # taken (measured before this flow control: 7); halving on each deferral keeps it near one.
    assert refused <= 2 * count


async def test_a_sender_no_longer_deferred_grows_back_to_its_full_window() -> None:
    # The whole first window is deferred (a short burst over the quota), answered once all of
    # it has arrived; from then on the server takes everything but answers only once WINDOW
    # frames are waiting (or after a pause), so how many wait at once is how many the sender
    # keeps in flight.
    count = 120
    waiting: list[int] = []  # frames unanswered when each frame arrived, after the deferral

    async def handler(ws: ServerConnection) -> None:
        first = [decode_batch(await ws.recv(decode=False)) for _ in range(WINDOW)]
        for b in first:
            await ws.send(defer(b, 0.01))
        held: list[Batch] = []

        async def answer_held() -> None:
            for b in held:
                await ws.send(ack(b))
            held.clear()

        while True:
            try:
                # recv() may be cancelled without losing a frame (websockets' asyncio API).
                frame = await asyncio.wait_for(ws.recv(decode=False), timeout=0.2 if held else None)
            except TimeoutError:  # the sender sends no more until answered: answer it
                await answer_held()
                continue
            except ConnectionClosed:
                return
            held.append(decode_batch(frame))
            waiting.append(len(held))
            if len(held) >= WINDOW:
                await answer_held()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        client = ChannelClient(f"ws://127.0.0.1:{port}", window=WINDOW)
        stats = await asyncio.wait_for(client.ship(batches(count)), timeout=60)

    assert stats.batches_acked == count and stats.throttled == WINDOW
    # How many the sender had in flight each time the server answered (the last, partial
    # round aside): half the window right after the deferral, then more, never fewer, up to
    # the full window again.
    rounds = [n for n, after in itertools.pairwise(waiting) if after == 1]
    assert rounds[0] == WINDOW // 2
    assert rounds == sorted(rounds) and rounds[-1] == WINDOW
