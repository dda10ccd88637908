"""``make bench-ingest``: how fast ``events.store_batch`` writes agent batches into the store.

For each write path, a fresh PostgreSQL database (migrated, reached as the unprivileged
application role, so row-level security is on) receives the same agent-format batches from
``--tenants`` tenants, one tenant-scoped transaction per batch as the ingest worker does:

- ``array insert``: ``store_batch`` itself, the batch's key (``event_batches``, ``ON CONFLICT
  DO NOTHING``) and ``INSERT ... SELECT FROM unnest(column arrays)`` in one statement per batch
  (ADR 0021, 0026);
- ``raw COPY``: the same rows COPY'd straight into ``events`` as the table owner (no batch
  key, no RLS), the ceiling of what the store can take from Python;

(The staged COPY path before ADR 0021 was measured here until ADR 0026 took the per-event key
it deduplicated against: docs/benchmarks.md keeps its figures.)

and, for reference, the embedded SQLite store with its INSERT path. Single writer, no bus:
this measures the store half of ingest, not end to end.

Tenant isolation under a flood is bench/bench_contention.py. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import psycopg
from sqlalchemy import JSON

from a2z.records import Batch, Conn, Dns, Http, Record, Ssl
from a2z.server.agents import service as agents
from a2z.server.events import service as events
from a2z.server.events.maintenance import StoreMaintenance
from a2z.server.events.models import Event
from a2z.server.metrics import ServerMetrics
from a2z.server.store.engine import open_store
from a2z.server.store.session import SessionFactory
from a2z.server.tenants import service as tenants

T0 = time.time() - 3600  # records of the last hour: they land in today's day partition
PG_ADMIN_DSN = os.environ.get("A2Z_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
APP_ROLE = "a2z_app"


def records(rng: random.Random, n: int, t0: float) -> list[Record]:
    """A realistic mix (mostly conn and dns), ~200 bytes of JSON each."""
    out: list[Record] = []
    for i in range(n):
        tup: dict[str, Any] = {
            "ts": t0 + i * 0.01,
            "uid": f"C{rng.getrandbits(64):016x}",
            "orig_h": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "orig_p": rng.randrange(1024, 65536),
            "resp_h": f"192.0.2.{rng.randrange(1, 255)}",
            "resp_p": rng.choice((53, 80, 443, 22)),
        }
        kind = rng.random()
        if kind < 0.5:
            out.append(Conn(proto="tcp", duration=rng.random(), orig_bytes=512, **tup))
        elif kind < 0.8:
            name = f"host{rng.randrange(1000)}.example.com"
            out.append(Dns(proto="udp", trans_id=i % 65536, query=name, qtype_name="A", **tup))
        elif kind < 0.9:
            out.append(Http(host="www.example.com", uri=f"/p/{i}", status_code=200, **tup))
        else:
            out.append(Ssl(server_name=f"s{rng.randrange(100)}.example.net", **tup))
    return out


@contextmanager
def scratch_database() -> Iterator[str]:
    """A new PostgreSQL database, dropped afterwards; yields its SQLAlchemy URL."""
    name = f"a2z_bench_{uuid.uuid4().hex[:10]}"
    info = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    # As docs/operating.md advises where ingest shares cores with the API: the extension that
    # lets a niced process's backends follow it (store/backend_priority.py), when installed.
    dsn = psycopg.conninfo.make_conninfo(PG_ADMIN_DSN, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as db:
        if db.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'prioritize'").fetchone():
            db.execute("CREATE EXTENSION prioritize")
    try:
        host, port = info.get("host", "127.0.0.1"), info.get("port", 5432)
        yield f"postgresql+psycopg://{info.get('user', 'postgres')}@{host}:{port}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def create_owners(sessions: SessionFactory, n_tenants: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """``n_tenants`` tenants with one agent each: (tenant id, agent id)."""
    owners = []
    for t in range(n_tenants):
        with sessions.system() as session:
            tenant = tenants.create_tenant(session=session, name=f"bench-{t}")
        with sessions.tenant(tenant.id) as session:
            owners.append((tenant.id, agents.create(session=session, name="sensor").id))
    return owners


def workload(
    sessions: SessionFactory, n_tenants: int, n_batches: int, size: int
) -> list[tuple[uuid.UUID, uuid.UUID, Batch]]:
    """Tenants and agents in the store, and the batches to write (round-robin over tenants)."""
    rng = random.Random(7)
    owners = create_owners(sessions, n_tenants)
    work = []
    for b in range(n_batches):
        tenant_id, agent_id = owners[b % n_tenants]
        recs = records(rng, size, T0 + b)
        batch = Batch(agent_id=str(agent_id), boot_epoch=1, seq=b + 1, sent_at=0.0, records=recs)
        work.append((tenant_id, agent_id, batch))
    return work


def make_partitions(url: str, sessions: SessionFactory) -> None:
    """The day partitions the server creates at start (PostgreSQL), so rows land in today's."""
    if url.startswith("postgresql"):
        StoreMaintenance(
            sessions, ServerMetrics(), owner_url=url, app_role=APP_ROLE
        ).ensure_partitions()


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def run_store_batch(url: str, args: argparse.Namespace) -> float:
    """Rows/s through ``store_batch`` into a fresh store at ``url``."""
    engine = open_store(url, app_role=APP_ROLE, pool_size=1)
    sessions = SessionFactory(engine)
    make_partitions(url, sessions)
    work = workload(sessions, args.tenants, args.batches, args.batch_size)
    started = time.perf_counter()
    stored = 0
    for tenant_id, agent_id, batch in work:
        with sessions.tenant(tenant_id) as session:
            stored += events.store_batch(session=session, agent_id=agent_id, batch=batch)
    elapsed = time.perf_counter() - started
    engine.dispose()
    assert stored == args.batches * args.batch_size, stored
    return stored / elapsed


def run_raw_copy(url: str, args: argparse.Namespace) -> float:
    """Rows/s of COPY straight into ``events`` as the owner, same rows, one COPY per batch."""
    engine = open_store(url, app_role=APP_ROLE, pool_size=1)
    make_partitions(url, SessionFactory(engine))
    work = workload(SessionFactory(engine), args.tenants, args.batches, args.batch_size)
    engine.dispose()
    rows = args.batches * args.batch_size
    return rows / raw_copy(url.replace("+psycopg", ""), work)


def raw_copy(dsn: str, work: Iterable[tuple[uuid.UUID, uuid.UUID, Batch]]) -> float:
    """Seconds to COPY ``work``'s rows into ``events`` as the owner at ``dsn``, one COPY and
    commit per batch: no staging, no duplicate check, no RLS (the ceiling from Python)."""
    documents = {c.name for c in Event.__table__.columns if isinstance(c.type, JSON)}
    columns = [c.name for c in Event.__table__.columns]  # the order store.bulk uses
    sql = f"COPY events ({', '.join(columns)}) FROM STDIN"
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        for tenant_id, agent_id, batch in work:
            with conn.cursor() as cur, cur.copy(sql) as cp:
                for row in events.event_rows(tenant_id, agent_id, batch)[0]:
                    cp.write_row([_json(row[c]) if c in documents else row[c] for c in columns])
            conn.commit()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--batches", type=int, default=400, help="batches per path")
    parser.add_argument("--batch-size", type=int, default=500, help="records per batch")
    args = parser.parse_args()
    rows = args.batches * args.batch_size
    print(f"{rows:,} rows per path, {args.tenants} tenants, batches of {args.batch_size}")
    results: dict[str, float] = {}
    with scratch_database() as url:
        results["PostgreSQL array insert (RLS)"] = run_store_batch(url, args)
    with scratch_database() as url:
        results["PostgreSQL raw COPY (owner, ceiling)"] = run_raw_copy(url, args)
    with tempfile.TemporaryDirectory() as tmp:
        results["SQLite insert (embedded)"] = run_store_batch(f"sqlite:///{tmp}/bench.db", args)
    ceiling = results["PostgreSQL raw COPY (owner, ceiling)"]
    for name, rate in results.items():
        print(f"{name:<38} {rate:>10,.0f} rows/s  {rate / ceiling:6.1%} of raw COPY")


if __name__ == "__main__":
    main()
