"""CPU seconds per part of a deployment under benchmark (psutil): less sensitive to a shared
machine's load than rates are. Used by bench_contention.py and bench_pipeline.py."""

from __future__ import annotations

from typing import Any

import psutil


class CpuMeter:
    """CPU seconds each part of the deployment used between two samples.

    ``parts`` names process ids (e.g. ``{"api": [pid]}``). PostgreSQL backends count as
    ``postgres`` when they serve ``database`` (their process title names it); the shared
    auxiliary processes (WAL writer, checkpointer, ...) count as ``pg other``, whoever caused
    their work.
    """

    def __init__(self, parts: dict[str, list[int]], database: str) -> None:
        self.parts = {part: [psutil.Process(pid) for pid in pids] for part, pids in parts.items()}
        self.database = f" {database} "

    def sample(self) -> dict[tuple[str, int], float]:
        seen: dict[tuple[str, int], float] = {}
        for part, procs in self.parts.items():
            for proc in procs:
                seen[(part, proc.pid)] = _cpu(proc)
        for proc in psutil.process_iter(["name", "cmdline"]):
            if proc.info["name"] != "postgres":
                continue
            title = " ".join(proc.info["cmdline"] or ())
            part = "postgres" if self.database in title else "pg other"
            try:
                seen[(part, proc.pid)] = _cpu(proc)
            except psutil.NoSuchProcess:
                continue
        return seen

    @staticmethod
    def spent(
        before: dict[tuple[str, int], float], after: dict[tuple[str, int], float]
    ) -> dict[str, float]:
        """CPU seconds per part from ``before`` to ``after`` (a process new since counts whole)."""
        out: dict[str, float] = {}
        for (part, pid), t in after.items():
            out[part] = out.get(part, 0.0) + t - before.get((part, pid), 0.0)
        return out


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def busy_share(before: Any, after: Any) -> float:
    """Share of the machine's CPU time busy between two ``psutil.cpu_times()`` (everyone's)."""
    idle = (after.idle + after.iowait) - (before.idle + before.iowait)
    total = sum(after) - sum(before)
    return 1.0 - idle / total if total else 0.0
