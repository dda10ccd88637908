"""CPU seconds per part of a deployment under benchmark (psutil): less sensitive to a shared
machine's load than rates are. Used by bench_contention.py and bench_pipeline.py."""

from __future__ import annotations

import os
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


def stolen_share(before: Any, after: Any) -> float:
    """Share of the machine's CPU time the hypervisor gave to other guests between two
    ``psutil.cpu_times()`` (steal): a neighbour on the host slows everything measured here, and
    a run where it was busy compares nothing."""
    total = sum(after) - sum(before)
    return (getattr(after, "steal", 0.0) - getattr(before, "steal", 0.0)) / total if total else 0.0


def run_queue_waits(pids: list[int]) -> dict[int, float]:
    """Seconds each of ``pids`` (its threads summed) has spent runnable but waiting for a core
    since it started: the kernel's schedstat. Threads that ended are gone from the sum."""
    waits = {}
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        waited = 0
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as stat:
                    waited += int(stat.read().split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
        waits[pid] = waited / 1e9
    return waits


def backends_of(pid: int, database: str) -> list[int]:
    """The PostgreSQL backends of ``database`` serving process ``pid``'s TCP connections (a
    backend's title names its client's address and port)."""
    ports = {c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.raddr}
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        title = " ".join(proc.info["cmdline"] or ())
        if proc.info["name"] != "postgres" or f" {database} " not in title:
            continue
        port = title.rsplit("(", 1)[-1].split(")", 1)[0]
        if port.isdigit() and int(port) in ports:
            found.append(proc.pid)
    return found
