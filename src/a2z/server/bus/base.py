"""The Bus protocol: publish returns only once the message is durable.

Two implementations: the in-process bus (embedded default) and NATS JetStream for scale-out
(docs/adr/0004-jetstream-bus.md). Subjects are ``a2z.events.<tenant>.<agent>``; batches no
consumer can ever store go to ``a2z.dlq.events.<tenant>.<agent>``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Message:
    """One bus message; ``msg_id`` lets the bus and consumers drop re-sent duplicates."""

    subject: str
    payload: bytes
    msg_id: str


Handler = Callable[[Message], Awaitable[None]]
"""A consumer: returns once the message's effect is committed (the bus acks then); raises
``ValueError`` (e.g. ``PoisonMessage``, ``WireError``) for a message no retry can handle and
any other exception for a transient failure (the bus redelivers later)."""


class BusError(Exception):
    """The bus could not make a message durable (publish) or reach its server."""


class PoisonMessage(ValueError):
    """A message no retry can handle (undecodable, or refused by the store's constraints)."""


class Bus(Protocol):
    """Durable publish, durable consume."""

    async def start(self) -> None:
        """Connect and begin delivering to the subscribers (call once, inside the event loop)."""
        ...

    async def publish(self, message: Message) -> None:
        """Return when the message is durable; raise if it could not be made so."""
        ...

    def subscribe(
        self, subject_prefix: str, handler: Handler, *, group: str, in_flight: int | None = None
    ) -> None:
        """Deliver every message under ``subject_prefix`` (ending in ".") to ``handler``.

        Each ``group`` (a role, e.g. "ingest") gets every message once; the processes that
        subscribe under the same group share the messages between them. Call before ``start``.
        ``in_flight``: how many messages this process hands the handler at once, where the bus
        delivers concurrently (default: the bus's setting).
        """
        ...

    async def close(self) -> None:
        """Stop taking new messages, let the ones in hand finish, and release resources."""
        ...


def events_subject(tenant_id: str, agent_id: str) -> str:
    """Subject for one agent's record batches."""
    return f"a2z.events.{tenant_id}.{agent_id}"


def parse_events_subject(subject: str) -> tuple[str, str]:
    """Inverse of ``events_subject``: (tenant_id, agent_id); ValueError if not one."""
    parts = subject.split(".")
    if len(parts) != 4 or parts[:2] != ["a2z", "events"]:
        raise ValueError(f"not an events subject: {subject!r}")
    return parts[2], parts[3]


def dead_letter_subject(subject: str) -> str:
    """Where a message of ``subject`` goes when no consumer can handle it: a2z.dlq.<rest>."""
    if not subject.startswith("a2z."):
        raise ValueError(f"not an a2z subject: {subject!r}")
    return "a2z.dlq." + subject.removeprefix("a2z.")
