"""Heartbeats: the agent's health, sent on the channel every few seconds.

The backend keeps the latest one per agent and shows an agent as offline once heartbeats stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import psutil

from a2z import __version__
from a2z.records import Heartbeat


@dataclass
class HeartbeatSource:
    """Builds heartbeats from live counters; each call measures since the previous one."""

    records_acked: Callable[[], int]
    reconnects: Callable[[], int]
    drops: Callable[[], int] = lambda: 0
    spool_bytes: Callable[[], int] = lambda: 0
    config_version: int = 0
    rules_digest: str = ""  # the pushed rule set the edge runs
    _process: psutil.Process = field(default_factory=psutil.Process)
    _last: tuple[float, int] = (0.0, 0)

    def __post_init__(self) -> None:
        self._process.cpu_percent(None)  # the first reading only starts the measurement
        self._last = (time.monotonic(), self.records_acked())

    def __call__(self) -> str:
        """The next heartbeat as a JSON text frame."""
        now, acked = time.monotonic(), self.records_acked()
        then, before = self._last
        self._last = (now, acked)
        beat = Heartbeat(
            ts=time.time(),
            version=__version__,
            config_version=self.config_version,
            cpu_percent=self._process.cpu_percent(None),
            rss_bytes=self._process.memory_info().rss,
            records_per_s=(acked - before) / (now - then) if now > then else 0.0,
            records_acked=acked,
            reconnects=self.reconnects(),
            drops=self.drops(),
            spool_bytes=self.spool_bytes(),
            rules_digest=self.rules_digest,
        )
        return msgspec.json.encode(beat).decode()
