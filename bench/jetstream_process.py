"""Benchmark plumbing for the JetStream deployment: a private nats-server, headless ingest
processes (``a2z server --role ingest``) and the wait until they are all fetching.

Shared by bench_pipeline.py (end to end) and bench_contention.py (``--bus``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import nats
import nats.js.errors

from a2z.server.config import JetStreamSettings
from a2z.server.ingest.runner import INGEST_GROUP

Process = subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def nats_server(workdir: Path) -> Iterator[str]:
    """A private JetStream server that fsyncs before it acknowledges; yields its URL."""
    port = free_port()
    conf = workdir / "nats.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\n"
        f"jetstream {{ store_dir: {workdir / 'js'}, sync_interval: always }}\n"
    )
    binary = Path(sys.executable).parent / "nats-server"
    proc = subprocess.Popen([str(binary), "-c", str(conf)], stderr=subprocess.DEVNULL)
    url = f"nats://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                asyncio.run(_ping(url))
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def _quiet(_exc: Exception) -> None:
    """nats-py prints every failed connect attempt; polling a starting server expects some."""


async def _ping(url: str) -> None:
    nc = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=0, error_cb=_quiet)
    await nc.close()


async def _pulling(url: str, group: str) -> int:
    """Pull requests the group's consumer has waiting: one per fetching worker (0 if none)."""
    nc = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=0, error_cb=_quiet)
    try:
        info = await nc.jetstream().consumer_info(JetStreamSettings().stream, group)
        return int(info.num_waiting or 0)
    except nats.js.errors.NotFoundError:
        return 0
    finally:
        await nc.close()


def wait_for_workers(url: str, n: int, timeout: float = 120) -> None:
    """Return once ``n`` ingest processes are up and fetching."""
    deadline = time.monotonic() + timeout
    while asyncio.run(_pulling(url, INGEST_GROUP)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} ingest workers did not start fetching")
        time.sleep(0.2)


def start_ingest_workers(
    n: int, db_url: str, bus_url: str, data_dir: Path, niceness: int = 0, log: Path | None = None
) -> list[Process]:
    """``n`` headless ingest processes at ``niceness`` (added to this process's), fetching."""
    command = [
        sys.executable, "-m", "a2z", "server", "--role", "ingest", "--db", db_url,
        "--bus", bus_url, "--data-dir", str(data_dir),
    ]  # fmt: skip
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    workers = []
    for _ in range(n):
        port = free_port()
        worker = subprocess.Popen(
            [*command, "--listen", f"127.0.0.1:{port}"],
            stdout=out,
            stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
            preexec_fn=(lambda: os.nice(niceness)) if niceness else None,
        )
        METRICS_PORTS[worker.pid] = port
        workers.append(worker)
    wait_for_workers(bus_url, n)
    return workers


METRICS_PORTS: dict[int, int] = {}  # ingest process pid -> its /metrics port


_GROUP_COMMIT = (
    "a2z_ingest_group_batches_count",
    "a2z_ingest_group_batches_sum",
    "a2z_ingest_group_retried_total",
)


def group_commit_counts(workers: list[Process]) -> dict[str, float]:
    """The group-commit samples (no labels) summed over ``workers``: one scrape each."""
    totals = dict.fromkeys(_GROUP_COMMIT, 0.0)
    for worker in workers:
        text = httpx.get(f"http://127.0.0.1:{METRICS_PORTS[worker.pid]}/metrics", timeout=10).text
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in totals:
                totals[name] += float(value)
    return totals


def group_commit_summary(before: dict[str, float], after: dict[str, float]) -> str:
    """What group commit did between two ``group_commit_counts``."""
    seen = {name: after[name] - before[name] for name in _GROUP_COMMIT}
    txns = seen["a2z_ingest_group_batches_count"]
    mean = seen["a2z_ingest_group_batches_sum"] / txns if txns else 0.0
    return (
        f"{txns:,.0f} ingest transactions, {mean:.1f} batches each on average, "
        f"{seen['a2z_ingest_group_retried_total']:,.0f} groups written again one by one"
    )


def stop(processes: list[Process]) -> None:
    """SIGTERM (ingest processes drain: finish and ack what they hold), then wait."""
    for p in processes:
        p.terminate()
    for p in processes:
        p.wait(timeout=60)
