"""The Bus protocol: publish returns only once the message is durable.

Two implementations are planned behind it: the in-process bus (embedded default, here) and
NATS JetStream for scale-out (ingest issue). Subjects are ``a2z.events.<tenant>.<agent>``.
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


class Bus(Protocol):
    """Durable publish, durable consume."""

    async def publish(self, message: Message) -> None:
        """Return when the message is durable; raise if it could not be made so."""
        ...

    def subscribe(self, subject_prefix: str, handler: Handler) -> None:
        """Deliver every message whose subject starts with ``subject_prefix`` to ``handler``."""
        ...

    async def close(self) -> None:
        """Stop delivering and release resources."""
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
