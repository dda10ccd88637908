"""The JetStream bus: publish -> durable pull consumer -> commit -> ack, dedup, dead letters, roles.

Each test runs on its own stream and subject namespace on the shared NATS server (deleted
afterwards), and, through the ``ctx`` fixture, once on SQLite and once on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import msgspec
import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import StorageType
from sqlalchemy import func, select

from a2z.records import Batch, Conn, Record, encode_batch
from a2z.server.agents.channel import handle_frame
from a2z.server.app import build_context
from a2z.server.bus import BusError, JetStreamBus, Message
from a2z.server.bus.base import events_subject
from a2z.server.config import JetStreamSettings, ServerRole, Settings
from a2z.server.context import ServerContext
from a2z.server.events.models import Event
from a2z.server.ingest.runner import INGEST_GROUP, wire_ingest
from a2z.server.ingest.worker import IngestWorker
from a2z.server.metrics import ServerMetrics
from a2z.server.pki.x509 import AgentIdentity
from a2z.server.workers import serve_workers
from tests.nats_servers import (
    NatsNode,
    delete_streams,
    eventually,
    require_nats,
    scratch_jetstream,
)
from tests.server.conftest import TenantFixture, make_tenant, message

Streams = Callable[..., JetStreamSettings]


def conn(seq: int, i: int) -> Conn:
    return Conn(
        ts=1_700_000_000.0 + seq + i / 1000, uid=f"C{seq}-{i}", orig_h="10.0.0.1",
        orig_p=40000 + i, resp_h="10.0.0.2", resp_p=443, proto="tcp", conn_state="SF",
    )  # fmt: skip


def make_batch(tenant: TenantFixture, seq: int, n: int = 20, epoch: int = 1) -> Batch:
    records: list[Record] = [conn(seq, i) for i in range(n)]
    return Batch(
        agent_id=str(tenant.agent_id), boot_epoch=epoch, seq=seq, sent_at=0.0, records=records
    )


def stored(ctx: ServerContext, tenant: TenantFixture) -> int:
    with ctx.sessions.tenant(tenant.id) as session:
        return session.scalar(select(func.count(Event.idx))) or 0


def sample(metrics: ServerMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def streams() -> AsyncIterator[Streams]:
    """Make scratch JetStream settings; their streams are deleted after the test."""
    url = require_nats()
    made: list[JetStreamSettings] = []

    def make(**overrides: object) -> JetStreamSettings:
        made.append(scratch_jetstream(**overrides))
        return made[-1]

    yield make
    for settings in made:
        await delete_streams(url, settings)


@pytest.fixture
async def js() -> AsyncIterator[JetStreamContext]:
    """A plain JetStream client to look at streams and consumers from outside the bus."""
    nc = await nats.connect(require_nats(), connect_timeout=5)
    yield nc.jetstream()
    await nc.close()


@asynccontextmanager
async def running(bus: JetStreamBus) -> AsyncIterator[JetStreamBus]:
    await bus.start()
    try:
        yield bus
    finally:
        await bus.close()


def ingest_bus(ctx: ServerContext, settings: JetStreamSettings) -> JetStreamBus:
    bus = JetStreamBus(require_nats(), settings, ctx.metrics)
    wire_ingest(bus, ctx.sessions, ctx.metrics)
    return bus


async def settled(js: JetStreamContext, settings: JetStreamSettings) -> bool:
    """Everything in the stream was delivered to the ingest group and acked."""
    info = await js.consumer_info(settings.stream, INGEST_GROUP)
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


async def test_round_trip_publish_consume_commit_ack(
    ctx: ServerContext, tenant_a: TenantFixture, streams: Streams, js: JetStreamContext
) -> None:
    settings = streams()
    async with running(ingest_bus(ctx, settings)) as bus:
        for seq in range(1, 6):
            await bus.publish(message(tenant_a, make_batch(tenant_a, seq)))
        await eventually(lambda: stored(ctx, tenant_a) == 100, 20, "100 stored rows")
        await eventually(lambda: settled(js, settings), 20, "the ingest group to ack all")
    stream = await js.stream_info(settings.stream)
    assert stream.config.duplicate_window == settings.duplicate_window
    assert stream.config.storage == StorageType.FILE
    assert stream.state.messages == 5
    m = ctx.metrics
    assert sample(m, "a2z_bus_published_total") == 5
    assert sample(m, "a2z_bus_acked_total", group=INGEST_GROUP) == 5
    assert sample(m, "a2z_events_stored_total") == 100
    assert sample(m, "a2z_bus_consumer_lag", group=INGEST_GROUP) == 0


async def test_duplicate_msg_id_within_window_is_one_message(
    ctx: ServerContext, tenant_a: TenantFixture, streams: Streams, js: JetStreamContext
) -> None:
    settings = streams()
    msg = message(tenant_a, make_batch(tenant_a, seq=1))
    async with running(JetStreamBus(require_nats(), settings, ctx.metrics)) as publisher:
        for _ in range(3):  # e.g. the agent re-sent after a lost ack, to another api process
            await publisher.publish(msg)
    assert (await js.stream_info(settings.stream)).state.messages == 1
    assert sample(ctx.metrics, "a2z_bus_publish_duplicates_total") == 2

    async with running(ingest_bus(ctx, settings)):
        await eventually(lambda: settled(js, settings), 20, "the ingest group to ack all")
    assert stored(ctx, tenant_a) == 20
    assert sample(ctx.metrics, "a2z_bus_consumed_total", group=INGEST_GROUP) == 1


async def test_poison_message_is_dead_lettered_and_the_stream_flows(
    ctx: ServerContext, tenant_a: TenantFixture, streams: Streams, js: JetStreamContext
) -> None:
    settings = streams()
    good = message(tenant_a, make_batch(tenant_a, seq=1))
    poison = replace(good, payload=b"\x28\xb5\x2f\xfd not a batch", msg_id="poison:1:2")
    after = message(tenant_a, make_batch(tenant_a, seq=3))
    async with running(ingest_bus(ctx, settings)) as bus:
        for msg in (good, poison, after):
            await bus.publish(msg)
        await eventually(lambda: stored(ctx, tenant_a) == 40, 20, "both good batches stored")
        await eventually(lambda: settled(js, settings), 20, "the ingest group to settle")

    m = ctx.metrics
    assert sample(m, "a2z_bus_dead_lettered_total", group=INGEST_GROUP, reason="poison") == 1
    assert sample(m, "a2z_bus_retries_total", group=INGEST_GROUP) == 0  # no retry burnt
    dlq = f"{settings.stream}_DLQ"
    assert (await js.stream_info(dlq)).state.messages == 1
    parked = await js.get_msg(dlq, seq=1)
    assert parked.subject == f"{settings.namespace}a2z.dlq.events.{tenant_a.id}.{tenant_a.agent_id}"
    assert parked.data == poison.payload
    assert parked.headers is not None
    assert parked.headers["A2Z-Reason"] == "poison"
    assert parked.headers["A2Z-Msg-Id"] == "poison:1:2"
    assert "WireError" in parked.headers["A2Z-Error"]


async def test_transient_failure_is_retried_then_dead_lettered_after_max_deliver(
    streams: Streams, js: JetStreamContext
) -> None:
    settings = streams(max_deliver=3, backoff=(0.2, 0.3))
    metrics = ServerMetrics()
    deliveries: dict[str, int] = {}
    handled: list[str] = []

    async def flaky(msg: Message) -> None:
        deliveries[msg.msg_id] = deliveries.get(msg.msg_id, 0) + 1
        if msg.msg_id == "down":
            raise ConnectionError("database unavailable")
        handled.append(msg.msg_id)

    bus = JetStreamBus(require_nats(), settings, metrics)
    bus.subscribe("a2z.events.", flaky, group="probe")
    subject = events_subject(str(uuid.uuid4()), str(uuid.uuid4()))
    async with running(bus):
        for msg_id in ("before", "down", "after"):
            await bus.publish(Message(subject=subject, payload=b"x", msg_id=msg_id))
        await eventually(
            lambda: sample(metrics, "a2z_bus_dead_lettered_total", group="probe", reason="max_deliver")
            == 1,
            20,
            "the failing message to be dead-lettered",
        )  # fmt: skip
    assert deliveries == {"before": 1, "down": 3, "after": 1}
    assert handled == ["before", "after"]
    assert sample(metrics, "a2z_bus_retries_total", group="probe") == 2
    assert sample(metrics, "a2z_bus_redelivered_total", group="probe") == 2
    parked = await js.get_msg(f"{settings.stream}_DLQ", seq=1)
    assert parked.headers is not None
    assert parked.headers["A2Z-Deliveries"] == "3"


async def test_message_never_answered_is_dead_lettered_after_max_deliver(
    streams: Streams, js: JetStreamContext
) -> None:
    """A batch that kills its worker on every delivery (out of memory, a driver crash) is never
    answered; JetStream stops after max_deliver and only says so in an advisory, which puts it
    on the dead-letter stream instead of letting it vanish. The stream keeps flowing."""
    settings = streams(max_deliver=2, backoff=(0.3,))
    metrics = ServerMetrics()
    deliveries: dict[str, int] = {}
    handled: list[str] = []

    async def dies_on_one(msg: Message) -> None:
        deliveries[msg.msg_id] = deliveries.get(msg.msg_id, 0) + 1
        if msg.msg_id == "killer":
            # What the server sees of a worker killed mid-handling: no ack, no nak, no term.
            raise asyncio.CancelledError
        handled.append(msg.msg_id)

    bus = JetStreamBus(require_nats(), settings, metrics)
    bus.subscribe("a2z.events.", dies_on_one, group="probe")
    subject = events_subject(str(uuid.uuid4()), str(uuid.uuid4()))
    async with running(bus):
        for msg_id in ("before", "killer", "after"):
            await bus.publish(Message(subject=subject, payload=b"x", msg_id=msg_id))
        await eventually(
            lambda: sample(metrics, "a2z_bus_dead_lettered_total", group="probe", reason="unanswered")
            == 1,
            30,
            "the unanswered message to be dead-lettered",
        )  # fmt: skip
    assert handled == ["before", "after"]
    assert deliveries["killer"] == 2
    parked = await js.get_msg(f"{settings.stream}_DLQ", seq=1)
    assert parked.data == b"x"
    assert parked.headers is not None
    assert parked.headers["A2Z-Reason"] == "unanswered"
    assert parked.headers["A2Z-Msg-Id"] == "killer"


async def test_resend_beyond_dedup_window_adds_no_rows(
    ctx: ServerContext, tenant_a: TenantFixture, streams: Streams, js: JetStreamContext
) -> None:
    settings = streams(duplicate_window=1.0, backoff=(0.3, 0.5))
    batch = make_batch(tenant_a, seq=1)
    async with running(ingest_bus(ctx, settings)) as bus:
        await bus.publish(message(tenant_a, batch))
        await eventually(lambda: stored(ctx, tenant_a) == 20, 20, "the batch stored")
        await eventually(lambda: settled(js, settings), 20, "the batch acked")

    # The consumer is paused (no ingest process) past the window; the same batch comes back.
    await asyncio.sleep(settings.duplicate_window + 0.5)
    async with running(JetStreamBus(require_nats(), settings, ctx.metrics)) as publisher:
        await publisher.publish(message(tenant_a, batch))
    assert (await js.stream_info(settings.stream)).state.messages == 2  # JetStream kept both
    assert sample(ctx.metrics, "a2z_bus_publish_duplicates_total") == 0

    # Resume; the first delivery of the copy fails, so it is also redelivered.
    failures = [ConnectionError("blip")]
    bus = JetStreamBus(require_nats(), settings, ctx.metrics)
    worker = IngestWorker(ctx.sessions, ctx.metrics)

    async def blip_once(msg: Message) -> None:
        if failures:
            raise failures.pop()
        await worker.handle(msg)

    bus.subscribe("a2z.events.", blip_once, group=INGEST_GROUP)
    async with running(bus):
        await eventually(lambda: settled(js, settings), 20, "the copy acked")
    assert stored(ctx, tenant_a) == 20
    m = ctx.metrics
    assert sample(m, "a2z_bus_redelivered_total", group=INGEST_GROUP) == 1
    assert sample(m, "a2z_events_duplicate_total") == 20  # the copy collapsed onto its rows


def test_in_process_bus_needs_the_ingest_role(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, roles=frozenset({ServerRole.API}))
    with pytest.raises(ValueError, match="ingest role"):
        build_context(settings)


@pytest.fixture
def api_only(store_url: str, tmp_path: Path, streams: Streams) -> Iterator[ServerContext]:
    settings = Settings(
        data_dir=tmp_path,
        db_url=store_url,
        pool_size=2,
        bus_url=require_nats(),
        roles=frozenset({ServerRole.API}),
        jetstream=streams(),
    )
    context = build_context(settings)
    yield context
    context.sessions.engine.dispose()


async def test_api_role_publishes_and_a_separate_ingest_role_stores(
    api_only: ServerContext, js: JetStreamContext
) -> None:
    tenant = make_tenant(api_only, "alpha")
    identity = AgentIdentity(tenant_id=tenant.id, agent_id=tenant.agent_id)
    frame = encode_batch(make_batch(tenant, seq=1))
    stream = api_only.settings.jetstream.stream
    await api_only.bus.start()
    try:
        answer = await handle_frame(api_only, identity, frame)  # what the agent gateway does
    finally:
        await api_only.bus.close()
    assert msgspec.json.decode(answer) == {"ack": 1, "epoch": 1}  # acked on PubAck
    state = (await js.stream_info(stream)).state
    assert (state.messages, state.consumer_count) == (1, 0)  # nothing consumes in this process
    assert stored(api_only, tenant) == 0

    stop = asyncio.Event()
    ingest = replace(api_only.settings, roles=frozenset({ServerRole.INGEST}), port=0)
    worker = asyncio.create_task(serve_workers(ingest, stop))
    try:
        await eventually(
            lambda: stored(api_only, tenant) == 20 or worker.done(), 30, "the ingest role"
        )
        assert not worker.done(), worker
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)
    assert stored(api_only, tenant) == 20
    assert await settled(js, api_only.settings.jetstream)


async def test_start_refuses_a_server_that_acks_before_fsync(
    tmp_path: Path, streams: Streams
) -> None:
    node = NatsNode("lazy", tmp_path / "lazy", sync_always=False)
    node.start()
    try:
        await eventually(node.healthy, 20, "nats-server to start")
        settings = streams(monitor_urls=(node.monitor_url,))
        bus = JetStreamBus(node.url, settings, ServerMetrics())
        with pytest.raises(BusError, match="sync_interval: always"):
            await bus.start()
        await bus.close()
    finally:
        node.stop()


async def test_publish_without_a_stream_leader_fails_within_the_deadline(
    tmp_path: Path, streams: Streams
) -> None:
    node = NatsNode("gone", tmp_path / "gone")
    node.start()
    await eventually(node.healthy, 20, "nats-server to start")
    settings = streams(publish_timeout=1.5, monitor_urls=(node.monitor_url,))
    metrics = ServerMetrics()
    bus = JetStreamBus(node.url, settings, metrics)
    await bus.start()  # sync_interval: always -> accepted
    try:
        node.kill9()
        with pytest.raises(BusError):
            await asyncio.wait_for(bus.publish(Message("a2z.events.t.a", b"x", "m1")), 10)
        assert sample(metrics, "a2z_bus_published_total") == 0
        assert sample(metrics, "a2z_bus_publish_errors_total") >= 1
    finally:
        await asyncio.wait_for(bus.close(), 20)
