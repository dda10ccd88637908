"""``make bench-ingest``, end to end: agent batches in -> queryable in the store, and search.

What runs, in one process tree on this machine:

- **PostgreSQL + JetStream**: a private nats-server (JetStream, ``sync_interval: always``, as
  docs/operating.md requires) and a scratch PostgreSQL database; ``--workers`` headless ingest
  processes (``a2z server --role ingest``); this process plays the api role's gateway: it
  validates each agent-format frame (``decode_batch``) and publishes it on the JetStream bus,
  ``--inflight`` publishes outstanding, as many agent connections would.
  * throughput: every batch published as fast as the bus takes them; events/s from the first
    publish to the moment the last row is queryable;
  * latency: a second run paced at ``--paced-share`` of that throughput, after a CHECKPOINT
    (so the throughput run's dirty pages are not flushed during it); for each batch, the time
    from its publish to its rows being visible to a query (polled every few ms, by the batch's
    key, which commits with them; the poll interval is printed, it bounds the resolution).
- **Embedded default**: in-process bus -> SQLite, the same batches; ``publish`` returns once the
  batch is committed, so its duration is the ingest-to-queryable latency.
- **Search**: the PostgreSQL store grown to ``--search-rows`` events (the run's rows copied with
  shifted sequence numbers and times, server-side), then the REST search API (``/api/v1/events``
  with the dashboard's filters, histogram and top-N) for random tenants as the unprivileged
  application role with row-level security: p50/p99 per query kind.

The raw COPY ceiling is measured on the same rows first (``bench_ingest.raw_copy``: COPY straight
into ``events`` as the owner, one COPY per batch), and the end-to-end rate is printed as a share
of it. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import psycopg
from fastapi.testclient import TestClient

from a2z.records import Batch, decode_batch, encode_batch
from a2z.server.app import build_context, create_app
from a2z.server.bus import JetStreamBus, Message
from a2z.server.bus.base import events_subject
from a2z.server.config import JetStreamSettings, ServerRole, Settings
from a2z.server.metrics import ServerMetrics
from a2z.server.store.engine import open_store
from a2z.server.store.session import SessionFactory
from a2z.server.tenants import service as tenants
from a2z.server.tenants.models import Role
from bench_ingest import (
    PG_ADMIN_DSN,
    create_owners,
    make_partitions,
    raw_copy,
    records,
    scratch_database,
)
from jetstream_process import (
    group_commit_counts,
    group_commit_summary,
    nats_server,
    start_ingest_workers,
    stop,
)
from process_cpu import CpuMeter, busy_share

APP_ROLE = "a2z_app"
PASSWORD = "bench-password-123"
Work = list[tuple[uuid.UUID, uuid.UUID, bytes, int]]  # tenant, agent, frame, seq


def workload(
    sessions: SessionFactory, n_tenants: int, n_batches: int, size: int, first_seq: int = 1
) -> Work:
    """Tenants with one agent each in the store, and their encoded batches (round-robin)."""
    owners = create_owners(sessions, n_tenants)
    with sessions.tenant(owners[0][0]) as session:  # the search benchmark logs in as this one
        tenants.create_user(
            session=session, email="bench@example.test", password=PASSWORD, role=Role.VIEWER
        )
    rng = random.Random(7)
    return frames(owners, rng, n_batches, size, first_seq)


def frames(
    owners: list[tuple[uuid.UUID, uuid.UUID]],
    rng: random.Random,
    n_batches: int,
    size: int,
    first_seq: int,
) -> Work:
    work = []
    now = time.time()
    for b in range(n_batches):
        tenant_id, agent_id = owners[b % len(owners)]
        seq = first_seq + b // len(owners)
        recs = records(rng, size, now - 3600 + b * 0.01)
        batch = Batch(agent_id=str(agent_id), boot_epoch=1, seq=seq, sent_at=now, records=recs)
        work.append((tenant_id, agent_id, encode_batch(batch), seq))
    return work


class Visibility:
    """Polls the store (as its owner) for each published batch's rows, by the batch's key."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.published: dict[tuple[uuid.UUID, int], float] = {}
        self.tenant_of: dict[uuid.UUID, uuid.UUID] = {}
        self.latencies: list[float] = []
        self.rounds = 0
        self.round_seconds = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def mark(self, tenant_id: uuid.UUID, agent_id: uuid.UUID, seq: int) -> None:
        with self._lock:
            self.tenant_of[agent_id] = tenant_id
            self.published[(agent_id, seq)] = time.perf_counter()

    def wait_all(self, total: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.latencies) < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.latencies)}/{total} batches visible")
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        # A batch's key commits in the transaction of its rows (ADR 0026): visible together.
        # (``events`` has no index on the batch's place; polling it would be a scan per round.)
        sql = (
            "SELECT seq FROM event_batches WHERE tenant_id = %s AND agent_id = %s"
            " AND boot_epoch = 1 AND seq = ANY(%s)"
        )
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.is_set():
                started = time.perf_counter()
                with self._lock:
                    pending: dict[uuid.UUID, list[int]] = {}
                    for agent_id, seq in self.published:
                        pending.setdefault(agent_id, []).append(seq)
                for agent_id, seqs in pending.items():
                    rows = conn.execute(sql, (self.tenant_of[agent_id], agent_id, seqs)).fetchall()
                    seen = time.perf_counter()
                    with self._lock:
                        for (seq,) in rows:
                            sent = self.published.pop((agent_id, seq), None)
                            if sent is not None:
                                self.latencies.append(seen - sent)
                self.rounds += 1
                self.round_seconds += time.perf_counter() - started
                time.sleep(0.002)


def wait_stored(dsn: str, batches: int, timeout: float) -> None:
    """Until the store holds ``batches`` batches: their keys commit with their rows (ADR 0026).
    One count every 10 ms, as the owner: the throughput run's observer costs next to nothing.
    (Polling per batch, as ``Visibility`` does for the paced run, took ~7 CPU-ms per 1,000
    events from the machine being measured: publisher 6 -> 2, PostgreSQL 22 -> 19.)"""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT count(*) FROM event_batches").fetchone()
            if row is not None and row[0] >= batches:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{row}/{batches} batches stored")
            time.sleep(0.01)


async def publish(
    url: str, work: Work, inflight: int, rate: float | None, visible: Visibility | None
) -> float:
    """Publish every frame as the gateway does; returns the seconds it took."""
    bus = JetStreamBus(url, JetStreamSettings(), ServerMetrics())
    await bus.start()
    gate = asyncio.Semaphore(inflight)
    started = time.perf_counter()

    async def one(i: int, tenant: uuid.UUID, agent: uuid.UUID, frame: bytes, seq: int) -> None:
        if rate is not None:  # paced: batch i leaves at i / rate seconds
            await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        async with gate:
            batch = decode_batch(frame)  # the gateway validates every frame before publishing
            if visible is not None:
                visible.mark(tenant, agent, seq)
            await bus.publish(
                Message(
                    subject=events_subject(str(tenant), str(agent)),
                    payload=frame,
                    msg_id=f"{agent}:{batch.boot_epoch}:{batch.seq}",
                )
            )

    await asyncio.gather(*(one(i, *w) for i, w in enumerate(work)))
    elapsed = time.perf_counter() - started
    await bus.close()
    return elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_postgres(args: argparse.Namespace, tmp: Path) -> None:
    with scratch_database() as db_url, nats_server(tmp) as bus_url:
        engine = open_store(db_url, app_role=APP_ROLE, pool_size=2)
        sessions = SessionFactory(engine)
        work = workload(sessions, args.tenants, args.batches, args.batch_size)
        owners = sorted({(t, a) for t, a, _, _ in work})
        dsn = db_url.replace("+psycopg", "")
        total = len(work) * args.batch_size
        ceiling = ceiling_rate(db_url, sessions, work, total)
        workers = start_ingest_workers(args.workers, db_url, bus_url, tmp)
        try:
            meter = CpuMeter(
                {
                    "publisher": [os.getpid()],
                    "ingest": [w.pid for w in workers],
                    "nats": [
                        c.pid for c in psutil.Process().children() if c.name() == "nats-server"
                    ],
                },
                db_url.rsplit("/", 1)[1],
            )
            groups = group_commit_counts(workers)
            cpu_before, machine_before = meter.sample(), psutil.cpu_times()
            started = time.perf_counter()
            publish_s = asyncio.run(publish(bus_url, work, args.inflight, None, None))
            wait_stored(dsn, len(work), timeout=1800)
            elapsed = time.perf_counter() - started
            cpu = CpuMeter.spent(cpu_before, meter.sample())
            busy = busy_share(machine_before, psutil.cpu_times())
            with psycopg.connect(dsn) as conn:  # every row, once (outside what is measured)
                stored = conn.execute("SELECT count(*) FROM events").fetchone()
            assert stored == (total,), f"{stored} rows stored, {total} sent"
            rate = total / elapsed
            print(
                f"PostgreSQL + JetStream, {args.workers} ingest processes: {total:,} events in "
                f"{elapsed:.1f} s = {rate:,.0f} events/s end to end "
                f"(publishing took {publish_s:.1f} s = {total / publish_s:,.0f} events/s), "
                f"{rate / ceiling:.1%} of the raw COPY ceiling"
            )
            per = ", ".join(f"{k} {v * 1000 / total * 1000:.0f}" for k, v in sorted(cpu.items()))
            print(f"  CPU ms per 1,000 events: {per}; machine {busy:.0%} busy")
            after = group_commit_counts(workers)
            print(f"  group commit: {group_commit_summary(groups, after)}")
            groups = after
            # Latency at a steady offered load below capacity, measured after a CHECKPOINT:
            # otherwise the checkpoint the throughput run's WAL set off flushes its dirty pages
            # during this phase, and the p99 measures that burst's wake (124/44 ms with it,
            # 385/1,070 ms without, in interleaved runs on 2026-11-29), not the steady load.
            with psycopg.connect(dsn, autocommit=True) as owner:
                owner.execute("CHECKPOINT")
            paced_rate = args.paced_share * rate / args.batch_size  # batches/s
            n_paced = max(len(owners), int(paced_rate * args.paced_seconds))
            paced = frames(owners, random.Random(8), n_paced, args.batch_size, first_seq=10**6)
            visible = Visibility(dsn)
            visible.start()
            asyncio.run(publish(bus_url, paced, args.inflight, paced_rate, visible))
            visible.wait_all(len(paced), timeout=600)
            visible.stop()
            lat = visible.latencies
            poll = visible.round_seconds / max(visible.rounds, 1)
            print(
                f"  ingest-to-queryable at {paced_rate * args.batch_size:,.0f} events/s "
                f"({args.paced_share:.0%} of the above, after a CHECKPOINT), {len(lat)} batches: "
                f"p50 {pct(lat, 0.5) * 1000:.0f} ms, p99 {pct(lat, 0.99) * 1000:.0f} ms "
                f"(poll round {poll * 1000:.0f} ms)"
            )
            print(f"  group commit: {group_commit_summary(groups, group_commit_counts(workers))}")
        finally:
            stop(workers)
        engine.dispose()
        if args.search_rows > 0:  # growing the store to 10 million rows takes minutes
            search(args, db_url, dsn, tmp)


def ceiling_rate(db_url: str, sessions: SessionFactory, work: Work, total: int) -> float:
    """Rows/s of the same rows COPY'd straight into ``events`` as the owner (bench_ingest's raw
    COPY), then emptied again so the pipeline starts on the same empty table."""
    make_partitions(db_url, sessions)
    decoded = [(tenant, agent, decode_batch(frame)) for tenant, agent, frame, _ in work]
    dsn = db_url.replace("+psycopg", "")
    rate = total / raw_copy(dsn, decoded)
    print(f"raw COPY ceiling (owner, one COPY per batch, same rows): {rate:,.0f} rows/s")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE events")
    return rate


def grow(dsn: str, target: int) -> int:
    """Copy the stored rows with shifted seq and ts (server-side) until ``target`` rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        base = conn.execute("SELECT count(*) FROM events").fetchone()
        assert base is not None
        have = int(base[0])
        cols = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'events' AND table_schema = 'public' ORDER BY ordinal_position"
            ).fetchall()
        ]
        copies = 0
        while have * (copies + 1) < target:
            copies += 1
            shifted = [
                f"seq + {copies * 10**7}"
                if c == "seq"
                else f"ts - {copies * 3600}"
                if c == "ts"
                else c
                for c in cols
            ]
            conn.execute(
                f"INSERT INTO events ({', '.join(cols)}) SELECT {', '.join(shifted)} FROM events"
                f" WHERE seq < {10**7}"
            )
        if copies:
            # What ingest keeps in the same transaction as the rows (events.usage), rebuilt for
            # the rows written here behind its back: the quota check and the rollups (ADR 0019)
            # read it. Bytes approximated by the stored document's size.
            conn.execute("DELETE FROM stored_usage")
            conn.execute(
                "INSERT INTO stored_usage (tenant_id, day, events, bytes)"
                " SELECT tenant_id, floor(ts / 86400)::int, count(*), sum(length(data::text))"
                " FROM events GROUP BY 1, 2"
            )
            conn.execute(  # and the copies' batch keys (ADR 0026), as ingest would have made
                "INSERT INTO event_batches (tenant_id, agent_id, boot_epoch, seq, day, events)"
                " SELECT tenant_id, agent_id, boot_epoch, seq, floor(max(ts) / 86400)::int,"
                f" count(*) FROM events WHERE seq >= {10**7} GROUP BY 1, 2, 3, 4"
            )
        conn.execute("ANALYZE events")
        conn.execute("ANALYZE stored_usage")
        row = conn.execute("SELECT count(*) FROM events").fetchone()
        assert row is not None
        return int(row[0])


QUERIES = {
    "newest page": "",
    "type=dns": "type=dns",
    "query prefix": "type=dns&query=host12*",
    "orig_h CIDR": "orig_h=10.1.0.0/16",
    "resp_p=443": "resp_p=443",
    "free text": "q=example.net",
    "free text rare": "q=host999.example",  # ~0.03 % of rows: fewer than a page per tenant
}


def search(args: argparse.Namespace, db_url: str, dsn: str, tmp: Path) -> None:
    started = time.perf_counter()
    rows = grow(dsn, args.search_rows)
    print(f"search over {rows:,} stored events (grown in {time.perf_counter() - started:.0f} s):")
    settings = Settings(
        data_dir=tmp / "api", db_url=db_url, agent_port=None, roles=frozenset({ServerRole.API}),
        bus_url="nats://127.0.0.1:1",  # never connected: the api role here only reads
    )  # fmt: skip
    ctx = build_context(settings)
    # What the server's maintenance job keeps up to date every few minutes (ADR 0019): here
    # once, over the whole grown store, timed. Its lag is set so that the newest hour of rows
    # (~10,000 per tenant, one copy) stays raw, as the open hours are in a live store: with
    # the server's 10 min lag and 5 min pass, 10 to 75 minutes of rows.
    with psycopg.connect(dsn, autocommit=True) as conn:
        newest = conn.execute("SELECT max(ts) FROM events").fetchone()
    assert newest is not None
    assert newest[0] is not None
    ctx.maintenance.rollup_lag_s = time.time() - float(newest[0]) // 3600 * 3600
    started = time.perf_counter()
    rolled = ctx.maintenance.refresh_rollups()
    total_rolled = sum(r.rolled_events for r in rolled.values())
    with psycopg.connect(dsn, autocommit=True) as conn:  # what autovacuum does after a backfill
        conn.execute("ANALYZE event_rollups")
        conn.execute("ANALYZE rollup_days")
        conn.execute("ANALYZE event_text_blocks")
    text = ctx.maintenance.last_text_blocks.values()
    print(
        f"  rollups refreshed for {len(rolled)} tenants in {time.perf_counter() - started:.1f} s"
        f" ({total_rolled:,} events rolled up in this pass; the newest hour is read raw);"
        f" of which free-text gram blocks {sum(t.seconds for t in text):.1f} s"
        f" ({sum(t.rows for t in text):,} events in {sum(t.blocks for t in text):,} blocks)"
    )
    app = create_app(context=ctx)
    client = TestClient(app)
    token = client.post(
        "/api/v1/auth/login", json={"email": "bench@example.test", "password": PASSWORD}
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    paths = {f"events {k}": f"/api/v1/events?limit=50&{v}" for k, v in QUERIES.items()}
    paths["histogram 1h"] = "/api/v1/events/histogram?bucket=3600"
    paths["top resp_h"] = "/api/v1/events/top?field=resp_h"
    for name, path in paths.items():
        times = []
        for _ in range(args.search_repeat):
            t = time.perf_counter()
            resp = client.get(path, headers=headers)
            times.append(time.perf_counter() - t)
            assert resp.status_code == 200, (path, resp.text)
        p50, p99 = pct(times, 0.5) * 1000, pct(times, 0.99) * 1000
        print(f"  {name:<22} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")
    ctx.sessions.engine.dispose()


def run_search_only(args: argparse.Namespace, tmp: Path) -> None:
    """The search part alone: the rows COPY'd straight in as the owner (the raw COPY ceiling's
    step, printed), grown to ``--search-rows``, then queried; with ``--search-db`` the database
    is kept and a later run that finds it grown skips straight to the queries."""
    with _search_database(args.search_db) as db_url:
        dsn = db_url.replace("+psycopg", "")
        engine = open_store(db_url, app_role=APP_ROLE, pool_size=2)  # migrates a kept one too
        sessions = SessionFactory(engine)
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM events").fetchone()
        if row is None or int(row[0]) == 0:
            work = workload(sessions, args.tenants, args.batches, args.batch_size)
            make_partitions(db_url, sessions)
            decoded = [(tenant, agent, decode_batch(frame)) for tenant, agent, frame, _ in work]
            total = len(work) * args.batch_size
            rate = total / raw_copy(dsn, decoded)
            print(f"raw COPY ceiling (owner, one COPY per batch, same rows): {rate:,.0f} rows/s")
        engine.dispose()
        search(args, db_url, dsn, tmp)


@contextmanager
def _search_database(name: str | None) -> Iterator[str]:
    if name is None:
        with scratch_database() as url:
            yield url
        return
    info = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        if (
            admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            is None
        ):
            admin.execute(f'CREATE DATABASE "{name}"')
    host, port = info.get("host", "127.0.0.1"), info.get("port", 5432)
    yield f"postgresql+psycopg://{info.get('user', 'postgres')}@{host}:{port}/{name}"


def run_embedded(args: argparse.Namespace, tmp: Path) -> None:
    ctx = build_context(
        Settings(
            data_dir=tmp / "embedded",
            agent_port=None,
            roles=frozenset({ServerRole.API, ServerRole.INGEST}),
        )
    )
    work = workload(ctx.sessions, args.tenants, args.embedded_batches, args.batch_size)

    async def run() -> list[float]:
        latencies = []
        for tenant_id, agent_id, frame, _ in work:
            t = time.perf_counter()
            batch = decode_batch(frame)
            await ctx.bus.publish(
                Message(
                    subject=events_subject(str(tenant_id), str(agent_id)),
                    payload=frame,
                    msg_id=f"{agent_id}:{batch.boot_epoch}:{batch.seq}",
                )
            )
            latencies.append(time.perf_counter() - t)
        return latencies

    started = time.perf_counter()
    lat = asyncio.run(run())
    elapsed = time.perf_counter() - started
    total = len(work) * args.batch_size
    p50, p99 = pct(lat, 0.5) * 1000, pct(lat, 0.99) * 1000
    print(
        f"embedded (in-process bus -> SQLite): {total:,} events, {total / elapsed:,.0f} events/s;"
        f" ingest-to-queryable p50 {p50:.0f} ms, p99 {p99:.0f} ms"
    )
    ctx.sessions.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--batches", type=int, default=2000, help="batches in the throughput run")
    parser.add_argument("--batch-size", type=int, default=500, help="records per batch")
    parser.add_argument("--workers", type=int, default=2, help="ingest processes")
    parser.add_argument("--inflight", type=int, default=64, help="publishes outstanding")
    parser.add_argument("--paced-share", type=float, default=0.5)
    parser.add_argument("--paced-seconds", type=float, default=20.0)
    parser.add_argument("--embedded-batches", type=int, default=400)
    parser.add_argument(
        "--search-rows", type=int, default=10_000_000, help="0: skip the search part"
    )
    parser.add_argument("--search-repeat", type=int, default=200)
    parser.add_argument(
        "--search-only", action="store_true", help="skip the pipeline and embedded runs"
    )
    parser.add_argument(
        "--search-db",
        metavar="NAME",
        help="with --search-only: a database kept between runs (created, migrated, grown once)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.search_only:
            run_search_only(args, Path(tmp))
            return
        run_postgres(args, Path(tmp))
        run_embedded(args, Path(tmp))


if __name__ == "__main__":
    main()
