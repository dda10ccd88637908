"""Capture workers (``--workers N``) steered as one agent: configurations and restarts reach
every worker, all or none, and one applied version is reported."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from a2z.agent.commands import CommandRunner
from a2z.agent.control import AgentRuntime
from a2z.agent.workers import WorkerPool
from a2z.records import AgentSettings, Command, Conn, Dns, Record
from tests.agent.fake_fanout import AGE, FakeOpener, port_base


class Collector:
    """Reads the pool's records on a thread (as the batcher does) and keeps them."""

    def __init__(self, pool: WorkerPool) -> None:
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(pool.records(),), daemon=True)
        self._thread.start()

    def _run(self, stream: Iterator[Record | None]) -> None:
        for record in stream:
            if record is not None:
                with self._lock:
                    self.records.append(record)

    def since(self, stamp: float) -> list[Record]:
        with self._lock:
            return [r for r in self.records if r.ts + AGE > stamp]

    def wait(self, stamp: float, done: Callable[[list[Record]], bool]) -> list[Record]:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            seen = self.since(stamp)
            if done(seen):
                return seen
            time.sleep(0.05)
        pytest.fail(f"records after {stamp} never showed: {self.since(stamp)[-5:]}")

    def join(self) -> None:
        self._thread.join(30)


def from_both(records: list[Record]) -> bool:
    ports = {r.orig_p // 10000 * 10000 for r in records if isinstance(r, Conn)}
    return {port_base(0), port_base(1)} <= ports


@pytest.fixture
def pool(request: pytest.FixtureRequest) -> Iterator[WorkerPool]:
    opener = getattr(request, "param", FakeOpener())
    workers = WorkerPool(opener, 2)
    workers.start()
    try:
        yield workers
    finally:
        workers.stop()


def test_config_reaches_every_worker_and_one_version_is_reported(
    pool: WorkerPool, tmp_path: Path
) -> None:
    runtime = AgentRuntime(state_dir=tmp_path, workers=pool)
    collected = Collector(pool)
    before = collected.wait(time.time(), from_both)
    assert {r.resp_p for r in before if isinstance(r, Conn)} == {53, 9999}
    assert any(isinstance(r, Dns) for r in before)

    # Narrower filter, DNS analysis off: every worker, and the version once.
    result = runtime.apply(4, AgentSettings(bpf="udp port 53", protocols=["http", "ssl"]))
    applied_at = time.time()
    assert result.applied and runtime.version == 4
    assert [(s["bpf"], s["protocols"]) for s in pool.state()] == [
        ("udp port 53", ["ftp", "http", "ssl"])
    ] * 2
    after = collected.wait(applied_at, from_both)
    assert {r.resp_p for r in after if isinstance(r, Conn)} == {53}
    assert not [r for r in after if isinstance(r, Dns)]  # the analyzers are off in each worker

    # Back on: DNS records come back from both workers without a restart.
    assert runtime.apply(5, AgentSettings(bpf="udp port 53")).applied
    again = time.time()
    dns = collected.wait(
        again, lambda rs: {r.orig_p // 10000 for r in rs if isinstance(r, Dns)} == {2, 3}
    )
    assert dns

    # restart-capture restarts every worker's socket; diagnostics count the workers' frames.
    runner = CommandRunner(runtime)
    restart = asyncio.run(runner(Command(id=str(uuid.uuid4()), kind="restart-capture")))
    assert restart.ok and restart.result == {"restarts": 1, "filter": "udp port 53"}
    assert [s["restarts"] for s in pool.state()] == [1, 1]
    budget = pool.budget()
    assert budget is not None and budget.state == "normal" and budget.max_flows == 2 * 12_288
    pool.stop()
    collected.join()


@pytest.mark.parametrize("pool", [FakeOpener(refuse="udp port 5353")], indirect=True)
def test_one_worker_refusing_puts_every_worker_back(pool: WorkerPool, tmp_path: Path) -> None:
    runtime = AgentRuntime(state_dir=tmp_path, workers=pool)
    collected = Collector(pool)
    assert runtime.apply(1, AgentSettings(bpf="udp port 53", batch_size=50)).applied
    result = runtime.apply(2, AgentSettings(bpf="udp port 5353", batch_size=70))
    assert not result.applied
    assert "worker 1" in result.reason and "refused" in result.reason
    assert runtime.version == 1 and runtime.limits.size == 50  # the parent's parts went back too
    assert [s["bpf"] for s in pool.state()] == ["udp port 53"] * 2  # worker 0 was put back
    pool.stop()
    collected.join()
