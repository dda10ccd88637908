"""Ingest under faults: an ingest worker killed with -9 mid-stream, a JetStream node killed.

Both end with the store holding every acknowledged event exactly once (RELIABILITY.md §3,
kill9-worker and nats-faults). The store is PostgreSQL; counts are read as the superuser.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from pathlib import Path

import nats
import psycopg
import pytest

from a2z.records import Batch, Conn, encode_batch
from a2z.server.agents import service as agents
from a2z.server.bus import BusError, JetStreamBus, Message
from a2z.server.bus.base import events_subject
from a2z.server.config import JetStreamSettings
from a2z.server.ingest.runner import INGEST_GROUP, wire_ingest
from a2z.server.metrics import ServerMetrics
from a2z.server.store.engine import open_store
from a2z.server.store.session import SessionFactory
from a2z.server.tenants import service as tenants
from tests.nats_servers import (
    NatsCluster,
    delete_streams,
    eventually,
    nats_server_binary,
    require_nats,
    scratch_jetstream,
)
from tests.services import PG_ADMIN_DSN, pg_url, scratch_database

pytestmark = pytest.mark.e2e
log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
APP_ROLE = "a2z_app"


class Store:
    """A scratch PostgreSQL database with one tenant and one agent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.url = pg_url(name)
        self.engine = open_store(self.url, app_role=APP_ROLE, pool_size=8)
        self.sessions = SessionFactory(self.engine)
        with self.sessions.system() as session:
            self.tenant_id = tenants.create_tenant(session=session, name="faults").id
        with self.sessions.tenant(self.tenant_id) as session:
            self.agent_id = agents.create(session=session, name="sensor").id

    def query(self, sql: str) -> int:
        """One number, read as the superuser (no row-level security in the way)."""
        dsn = psycopg.conninfo.make_conninfo(PG_ADMIN_DSN, dbname=self.name)
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(sql).fetchone()
        assert row is not None
        return int(row[0])

    def rows(self) -> int:
        return self.query("SELECT count(*) FROM events")

    def distinct_rows(self) -> int:
        return self.query(
            "SELECT count(*) FROM (SELECT DISTINCT tenant_id, agent_id, boot_epoch, seq, idx "
            "FROM events) AS d"
        )

    def distinct_batches(self) -> int:
        return self.query("SELECT count(DISTINCT seq) FROM events")

    def message(self, seq: int, records: int, epoch: int = 7) -> Message:
        """The bus message the agent channel would publish for batch ``seq``."""
        batch = Batch(
            agent_id=str(self.agent_id),
            boot_epoch=epoch,
            seq=seq,
            sent_at=0.0,
            records=[_conn(seq, i) for i in range(records)],
        )
        return Message(
            subject=events_subject(str(self.tenant_id), str(self.agent_id)),
            payload=encode_batch(batch),
            msg_id=f"{self.agent_id}:{epoch}:{seq}",
        )


def _conn(seq: int, i: int) -> Conn:
    return Conn(
        ts=1_700_000_000.0 + seq + i / 10_000, uid=f"C{seq}x{i}", orig_h="10.1.0.5",
        orig_p=1024 + i, resp_h="10.1.0.9", resp_p=53, proto="udp", conn_state="SF",
        orig_bytes=40, resp_bytes=120,
    )  # fmt: skip


@pytest.fixture
def store() -> Iterator[Store]:
    with scratch_database() as name:
        made = Store(name)
        try:
            yield made
        finally:
            made.engine.dispose()


@pytest.fixture
async def scratch_streams() -> AsyncIterator[list[JetStreamSettings]]:
    """Settings appended here have their streams deleted from the shared server after."""
    made: list[JetStreamSettings] = []
    yield made
    for settings in made:
        await delete_streams(require_nats(), settings)


class IngestProcess:
    """``run_workers`` in a child process (tests/e2e/ingest_process.py), restartable."""

    def __init__(self, config: dict[str, object], logdir: Path) -> None:
        self.config = json.dumps(config)
        self.logdir = logdir
        logdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        logfile = (self.logdir / f"ingest-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.ingest_process", self.config],
            cwd=ROOT,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        logfile.close()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def terminate(self) -> int:
        """SIGTERM: the worker drains and exits; its exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.logdir.glob("ingest-*.log"))
        )


async def test_kill9_ingest_worker_mid_stream_keeps_exactly_100k_rows(
    store: Store, scratch_streams: list[JetStreamSettings], tmp_path: Path
) -> None:
    batches, per_batch, kills = 200, 500, 3
    total = batches * per_batch
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    settings = scratch_jetstream(backoff=(1.0, 2.0), max_deliver=20, concurrency=4)
    scratch_streams.append(settings)
    config: dict[str, object] = {
        "db_url": store.url,
        "bus_url": require_nats(),
        "data_dir": str(tmp_path / "worker"),
        "jetstream": asdict(settings),
    }
    # Two workers share the durable consumer (horizontal scale-out); one at a time is killed.
    workers = [IngestProcess(config, tmp_path / name) for name in ("w1", "w2")]
    messages = [store.message(seq, per_batch) for seq in range(1, batches + 1)]
    publisher = JetStreamBus(require_nats(), settings, ServerMetrics())
    await publisher.start()

    async def stream() -> None:  # the agents' traffic, as the api role publishes it
        # Paced (~10 s in all) so that every kill lands mid-stream even when the workers keep
        # up with the publisher; the kill points are asserted to fall inside the stream.
        for msg in messages:
            await publisher.publish(msg)
            await asyncio.sleep(0.05)

    kill_points: list[int] = []
    producer = asyncio.create_task(stream())
    try:
        for worker in workers:
            worker.start()
        for _ in range(kills):
            before = await asyncio.to_thread(store.rows)

            def progressed(before: int = before) -> bool:
                return store.rows() > before

            await eventually(progressed, 60, f"progress past {before} rows")
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            victim = rng.choice(workers)
            victim.kill9()
            kill_points.append(await asyncio.to_thread(store.rows))
            victim.start()
        await asyncio.wait_for(producer, 60)
        await eventually(lambda: store.rows() >= total, 90, f"{total} rows")
        await eventually(lambda: _settled(require_nats(), settings), 30, "all batches acked")
        for worker in workers:
            assert worker.terminate() == 0, worker.logs()  # graceful drain on SIGTERM
    except BaseException:
        logs = "\n".join(w.logs() for w in workers)
        log.error("seed %d, kills at %s rows; worker logs:\n%s", seed, kill_points, logs)
        raise
    finally:
        producer.cancel()
        for worker in workers:
            worker.ensure_stopped()
        await publisher.close()
    assert all(0 < k < total for k in kill_points), f"a kill missed the stream: {kill_points}"
    assert store.rows() == store.distinct_rows() == total, f"seed {seed}, kills {kill_points}"
    assert store.distinct_batches() == batches


async def _settled(url: str | list[str], settings: JetStreamSettings) -> bool:
    nc = await nats.connect(servers=url, connect_timeout=5, max_reconnect_attempts=5)
    try:
        info = await nc.jetstream().consumer_info(settings.stream, INGEST_GROUP)
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)
    finally:
        await nc.close()


async def test_three_node_cluster_loses_a_node_mid_stream_without_loss_or_duplicates(
    store: Store, tmp_path: Path
) -> None:
    nats_server_binary()
    batches, per_batch, kill_at = 240, 100, 80
    cluster = NatsCluster.start(tmp_path / "nats")
    settings = JetStreamSettings(
        stream=f"A2Z_EVENTS_{uuid.uuid4().hex[:6].upper()}",
        replicas=3,
        backoff=(1.0, 2.0),
        max_deliver=20,
        publish_timeout=30.0,
        monitor_urls=cluster.monitor_urls,  # start() refuses a node that acks before fsync
    )
    metrics = ServerMetrics()
    ingest = JetStreamBus(cluster.urls, settings, metrics)
    wire_ingest(ingest, store.sessions, metrics)
    api_metrics = ServerMetrics()
    api = JetStreamBus(cluster.urls, settings, api_metrics)
    nc = await nats.connect(servers=cluster.urls, connect_timeout=5, max_reconnect_attempts=-1)
    js = nc.jetstream()
    acked: list[int] = []
    resends = 0
    killed = ""
    try:
        await api.start()
        await ingest.start()
        info = await js.stream_info(settings.stream)
        assert info.config.num_replicas == 3
        for seq in range(1, batches + 1):
            if seq == kill_at:
                info = await js.stream_info(settings.stream)
                assert info.cluster is not None and info.cluster.leader
                killed = info.cluster.leader
                cluster.node(killed).kill9()  # the stream leader, mid-stream
            msg = store.message(seq, per_batch)
            for _attempt in range(5):  # as the agent does: re-send until acked
                try:
                    await api.publish(msg)
                    break
                except BusError:
                    resends += 1
            else:
                raise AssertionError(f"batch {seq} was never acked")
            acked.append(seq)
        await eventually(lambda: store.rows() >= batches * per_batch, 60, "every acked batch")
        await eventually(lambda: _consumer_settled(js, settings), 30, "all batches acked")
        state = (await js.stream_info(settings.stream)).state
    finally:
        await asyncio.wait_for(ingest.close(), 60)
        await asyncio.wait_for(api.close(), 60)
        await nc.close()
        cluster.stop()
    retried = api_metrics.registry.get_sample_value("a2z_bus_publish_errors_total")
    log.info("killed %s at %d; %s publish retries, %d re-sends", killed, kill_at, retried, resends)
    assert killed
    assert acked == list(range(1, batches + 1))
    assert state.messages == batches  # Nats-Msg-Id dedup held across the leader change
    assert store.rows() == store.distinct_rows() == batches * per_batch  # 0 lost, 0 duplicated
    assert store.distinct_batches() == batches


async def _consumer_settled(js: nats.js.JetStreamContext, settings: JetStreamSettings) -> bool:
    try:
        info = await js.consumer_info(settings.stream, INGEST_GROUP)
    except nats.errors.Error:
        return False  # mid-election
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)
