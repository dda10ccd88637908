"""The message bus between the agent channel and the ingest workers."""

from a2z.server.bus.base import Bus, BusError, Handler, Message, PoisonMessage
from a2z.server.bus.jetstream import JetStreamBus
from a2z.server.bus.memory import MemoryBus
from a2z.server.config import Settings
from a2z.server.metrics import ServerMetrics

__all__ = [
    "Bus",
    "BusError",
    "Handler",
    "JetStreamBus",
    "MemoryBus",
    "Message",
    "PoisonMessage",
    "open_bus",
]


def open_bus(settings: Settings, metrics: ServerMetrics) -> Bus:
    """The in-process bus, or JetStream when ``settings.bus_url`` names NATS servers."""
    if settings.bus_url is None:
        return MemoryBus()
    if not all(
        url.strip().startswith(("nats://", "tls://")) for url in settings.bus_url.split(",")
    ):
        raise ValueError(f"bus URL must be nats://host:port[,nats://...]: {settings.bus_url!r}")
    return JetStreamBus(settings.bus_url, settings.jetstream, metrics)
