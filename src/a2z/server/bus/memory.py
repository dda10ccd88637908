"""In-process bus for the embedded server: publishing runs the subscribers to completion.

Durability here is the subscriber's: ``publish`` returns after the ingest handler committed the
batch to the store, so the channel's ack after ``publish`` still means "stored". A handler error
propagates to the publisher, which then does not ack; the agent re-sends.
"""

from __future__ import annotations

from a2z.server.bus.base import Handler, Message


class MemoryBus:
    """Synchronous fan-out to subscribers in the same process."""

    def __init__(self) -> None:
        self._subscribers: dict[str, tuple[str, Handler]] = {}
        self._closed = False

    async def start(self) -> None:
        """Nothing to connect."""

    async def publish(self, message: Message) -> None:
        """Run every matching subscriber; return when all have finished."""
        if self._closed:
            raise RuntimeError("bus is closed")
        for prefix, handler in self._subscribers.values():
            if message.subject.startswith(prefix):
                await handler(message)

    def subscribe(
        self, subject_prefix: str, handler: Handler, *, group: str, in_flight: int | None = None
    ) -> None:
        """Add a subscriber; in one process a group has exactly one. Each publish runs the
        handler itself, so ``in_flight`` is as many as the publishers."""
        if group in self._subscribers:
            raise ValueError(f"group {group!r} already has a subscriber")
        self._subscribers[group] = (subject_prefix, handler)

    async def close(self) -> None:
        """Refuse further publishes."""
        self._closed = True
