"""The message bus between the agent channel and the ingest workers."""

from a2z.server.bus.base import Bus, Handler, Message
from a2z.server.bus.memory import MemoryBus

__all__ = ["Bus", "Handler", "MemoryBus", "Message"]
