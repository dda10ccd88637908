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
from a2z.records import BudgetReport, Heartbeat


@dataclass
class HeartbeatSource:
    """Builds heartbeats from live counters; each call measures since the previous one."""

    records_acked: Callable[[], int]
    reconnects: Callable[[], int]
    drops: Callable[[], int] = lambda: 0
    spool_bytes: Callable[[], int] = lambda: 0
    intel_version: Callable[[], int] = lambda: 0  # the threat-intel set applied (ADR 12)
    budget: Callable[[], BudgetReport | None] = lambda: None  # the governor's report
    config_version: int = 0
    rules_digest: str = ""  # the pushed rule set the edge runs
    _process: psutil.Process = field(default_factory=psutil.Process)
    _children: dict[int, psutil.Process] = field(default_factory=dict)
    _last: tuple[float, int] = (0.0, 0)

    def __post_init__(self) -> None:
        self._process.cpu_percent(None)  # the first reading only starts the measurement
        self._last = (time.monotonic(), self.records_acked())

    def __call__(self) -> str:
        """The next heartbeat as a JSON text frame."""
        now, acked = time.monotonic(), self.records_acked()
        then, before = self._last
        self._last = (now, acked)
        cpu, rss = self._usage()
        beat = Heartbeat(
            ts=time.time(),
            version=__version__,
            config_version=self.config_version,
            cpu_percent=cpu,
            rss_bytes=rss,
            records_per_s=(acked - before) / (now - then) if now > then else 0.0,
            records_acked=acked,
            reconnects=self.reconnects(),
            drops=self.drops(),
            spool_bytes=self.spool_bytes(),
            rules_digest=self.rules_digest,
            intel_version=self.intel_version(),
            budget=self.budget(),
        )
        return msgspec.json.encode(beat).decode()

    def _usage(self) -> tuple[float, int]:
        """CPU % (of one core) and resident bytes of the agent with its child processes.

        With ``--workers N`` the capture and decoding run in child processes; the agent's cost
        is theirs plus its own. A child's first reading only starts its CPU measurement (psutil
        measures between calls on the same Process object, hence the cache by pid).
        """
        cpu = self._process.cpu_percent(None)
        rss = self._process.memory_info().rss
        seen: dict[int, psutil.Process] = {}
        try:
            children = self._process.children(recursive=True)
        except psutil.Error:
            children = []
        for child in children:
            proc = self._children.get(child.pid, child)
            try:
                cpu += proc.cpu_percent(None)
                rss += proc.memory_info().rss
            except psutil.Error:  # it exited meanwhile
                continue
            seen[child.pid] = proc
        self._children = seen
        return cpu, rss
