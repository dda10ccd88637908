"""The resource budget (``cpu_percent_max``, ``rss_max_bytes``): measure, shed load, report.

What operators of Zeek or Suricata expect from a sensor on a shared host: past its CPU budget
it sheds the costly part (deep protocol analysis, HTTP and TLS first, then DNS) and keeps
writing conn records; past its memory budget it bounds the flow table tighter (evicting the
least recently active flows, whose conn records are written early) and drops the per-flow
analysis buffers. Each step needs several samples in a row over the budget, and is undone only
after several in a row well under it (hysteresis), so the agent does not flap. Measurement is
injected (a ``UsageSource``), so the policy is tested with exact numbers.

Threads: ``sample`` runs on the event loop (every ``interval_s``); ``enforce`` runs on the
pipeline's thread between batches, the only place the flow table is touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from a2z.agent.flows.table import FlowConfig, FlowTable
from a2z.agent.protocols.analyzer import SERVICES, AnalyzerSwitch
from a2z.records import AgentSettings, BudgetReport

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Usage:
    """One measurement of the agent's process."""

    cpu_percent: float  # of one core, since the previous measurement
    rss_bytes: int  # resident memory


UsageSource = Callable[[], Usage]


def process_usage() -> UsageSource:
    """Measures this process with psutil (CPU since the previous call, RSS now)."""
    proc = psutil.Process()
    proc.cpu_percent(None)  # the first reading only starts the measurement

    def measure() -> Usage:
        return Usage(proc.cpu_percent(None), proc.memory_info().rss)

    return measure


# What each CPU level sheds: HTTP and TLS analysis reassemble streams and parse large headers
# and handshakes (most of the per-packet cost after decode); DNS is one datagram per message
# and feeds the most detections, so it goes last. Conn records are never shed.
CPU_SHEDS: tuple[frozenset[str], ...] = (
    frozenset(),
    frozenset({"http", "ssl"}),
    frozenset(SERVICES),
)


@dataclass(frozen=True, slots=True)
class BudgetPolicy:
    """The tunables of shedding; the defaults suit the 5-second sampling interval."""

    interval_s: float = 5.0  # how often usage is measured
    trip_samples: int = 3  # samples in a row over the budget before one more step is shed
    clear_samples: int = 6  # samples in a row under the release mark before one step returns
    release_ratio: float = 0.8  # "well under": below this share of the budget
    min_flows: int = 1024  # the flow-table bound never shrinks below this


class ResourceGovernor:
    """Keeps the agent within its budget by shedding in steps; reports what it shed."""

    def __init__(
        self,
        analyzers: AnalyzerSwitch,
        usage: UsageSource | None = None,
        policy: BudgetPolicy | None = None,
        *,
        max_flows: int = FlowConfig().max_flows,
        settings: AgentSettings | None = None,
    ) -> None:
        self.analyzers = analyzers
        self.policy = policy or BudgetPolicy()
        self._usage = usage or process_usage()
        defaults = settings or AgentSettings()
        self.cpu_percent_max = defaults.cpu_percent_max
        self.rss_max_bytes = defaults.rss_max_bytes
        self.full_flows = max_flows  # the bound with no memory pressure
        self.max_flows = max_flows  # the bound now; ``enforce`` moves the table to it
        self.cpu_level = 0
        self.memory_level = 0
        self.last = Usage(0.0, 0)
        self.evicted_flows = 0
        self.cpu_sheds = 0
        self.memory_sheds = 0
        self._over = {"cpu": 0, "rss": 0}  # samples in a row over the budget
        self._under = {"cpu": 0, "rss": 0}  # samples in a row under the release mark

    @property
    def max_memory_level(self) -> int:
        """The level at which the flow bound reaches the floor."""
        level, flows = 0, self.full_flows
        while flows > self.policy.min_flows:
            flows //= 2
            level += 1
        return level

    def set_budget(self, cpu_percent_max: float, rss_max_bytes: int) -> None:
        """A new budget (from a pushed configuration); the next samples judge against it."""
        self.cpu_percent_max, self.rss_max_bytes = cpu_percent_max, rss_max_bytes

    def sample(self) -> None:
        """Measure once and move the CPU and memory levels by at most one step each."""
        usage = self.last = self._usage()
        cpu = self._step(
            "cpu", usage.cpu_percent, self.cpu_percent_max, self.cpu_level, len(CPU_SHEDS) - 1
        )
        rss = self._step(
            "rss", usage.rss_bytes, self.rss_max_bytes, self.memory_level, self.max_memory_level
        )
        if cpu != self.cpu_level:
            if cpu > self.cpu_level:
                self.cpu_sheds += 1
            log.warning(
                "CPU %.0f%% against a budget of %.0f%%: protocol analysis shed level %d -> %d",
                usage.cpu_percent, self.cpu_percent_max, self.cpu_level, cpu,
            )  # fmt: skip
            self.cpu_level = cpu
        if rss != self.memory_level:
            if rss > self.memory_level:
                self.memory_sheds += 1
            log.warning(
                "RSS %d bytes against a budget of %d: memory shed level %d -> %d",
                usage.rss_bytes, self.rss_max_bytes, self.memory_level, rss,
            )  # fmt: skip
            self.memory_level = rss
        self.max_flows = max(self.policy.min_flows, self.full_flows >> self.memory_level)
        shed = CPU_SHEDS[self.cpu_level]
        if self.memory_level:
            shed = CPU_SHEDS[-1]  # analysis buffers are the per-flow memory beyond the flow
        self.analyzers.shed(shed)

    def enforce(self, table: FlowTable) -> None:
        """Move the flow table to the current bound (pipeline thread, between batches)."""
        if table.config.max_flows != self.max_flows:
            self.evicted_flows += table.set_max_flows(self.max_flows)

    def report(self) -> BudgetReport:
        """The state for heartbeats (and the API, which shows the latest heartbeat)."""
        shedding = self.cpu_level > 0 or self.memory_level > 0
        return BudgetReport(
            state="shedding" if shedding else "normal",
            cpu_level=self.cpu_level,
            memory_level=self.memory_level,
            max_flows=self.max_flows,
            shed_protocols=sorted(self.analyzers.shedding),
            cpu_percent=round(self.last.cpu_percent, 1),
            rss_bytes=self.last.rss_bytes,
            shed_flows=sum(self.analyzers.shed_flows.values()),
            evicted_flows=self.evicted_flows,
            cpu_sheds=self.cpu_sheds,
            memory_sheds=self.memory_sheds,
        )

    def _step(self, name: str, value: float, budget: float, level: int, top: int) -> int:
        # Over the budget for trip_samples in a row: one level up. Under the release mark for
        # clear_samples in a row: one level down. In between: stay (the hysteresis band).
        policy = self.policy
        if value > budget:
            self._over[name] += 1
            self._under[name] = 0
            if self._over[name] >= policy.trip_samples and level < top:
                self._over[name] = 0
                return level + 1
        elif value < budget * policy.release_ratio:
            self._under[name] += 1
            self._over[name] = 0
            if self._under[name] >= policy.clear_samples and level > 0:
                self._under[name] = 0
                return level - 1
        else:
            self._over[name] = self._under[name] = 0
        return level


def merge_reports(reports: list[BudgetReport]) -> BudgetReport | None:
    """Several capture processes' states as one: the highest levels, summed figures."""
    if not reports:
        return None
    return BudgetReport(
        state="shedding" if any(r.state == "shedding" for r in reports) else "normal",
        cpu_level=max(r.cpu_level for r in reports),
        memory_level=max(r.memory_level for r in reports),
        max_flows=sum(r.max_flows for r in reports),
        shed_protocols=sorted({p for r in reports for p in r.shed_protocols}),
        cpu_percent=round(sum(r.cpu_percent for r in reports), 1),
        rss_bytes=sum(r.rss_bytes for r in reports),
        shed_flows=sum(r.shed_flows for r in reports),
        evicted_flows=sum(r.evicted_flows for r in reports),
        cpu_sheds=sum(r.cpu_sheds for r in reports),
        memory_sheds=sum(r.memory_sheds for r in reports),
    )


__all__ = [
    "CPU_SHEDS",
    "BudgetPolicy",
    "ResourceGovernor",
    "Usage",
    "UsageSource",
    "merge_reports",
    "process_usage",
]
