"""The store half of ingest alone: CPU per 1,000 events of the ingest process and of
its PostgreSQL backend, without the bus.

One process decodes agent-format frames (``decode_batch``) and writes each through
``IngestWorker.write`` as an ingest process does (one transaction per ``--group`` batches, the
group commit of ADR 0027 under load: events, usage ledger, agent progress, each tenant in
turn), into a scratch PostgreSQL database reached as the application role (row-level security
on), one pooled connection. It prints, per 1,000 events,
the CPU of this process (``client``), of its backend (``backend``, psutil on the connection's
server process) and the rate. The first ``--warmup`` batches of each pass are not counted (psycopg
prepares the statement after five executions).

``--indexes`` then measures the backend's share of each secondary index of ``events``: the same
pass again with that one index dropped (as the owner), on an emptied table, and with all of
them dropped; ``--narrow-data`` adds a pass storing ``{}`` as every record's ``data`` (what the
JSONB document costs). These are scratch-database experiments, not proposals to ship as they
are. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from typing import Any
from unittest import mock

import psutil
import psycopg
from sqlalchemy import text

from a2z.records import decode_batch
from a2z.server.events import service as events
from a2z.server.ingest.worker import Delivery, IngestWorker
from a2z.server.metrics import ServerMetrics
from a2z.server.store.engine import open_store
from a2z.server.store.session import SessionFactory
from bench_ingest import create_owners, make_partitions, scratch_database
from bench_pipeline import APP_ROLE, Work, frames


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def backend_of(sessions: SessionFactory) -> psutil.Process:
    """The server process of the engine's one pooled connection."""
    with sessions.engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    return psutil.Process(int(pid))


def one_pass(
    worker: IngestWorker, backend: psutil.Process, work: Work, warmup: int, group: int
) -> tuple[float, float, float]:
    """(client CPU ms, backend CPU ms per 1,000 events, events/s) of writing ``work``,
    ``group`` batches per transaction."""

    def write(items: Work) -> None:
        for at in range(0, len(items), group):
            worker.write(
                [
                    Delivery(f"{agent}:{seq}", tenant, agent, decode_batch(frame))
                    for tenant, agent, frame, seq in items[at : at + group]
                ]
            )

    write(work[:warmup])
    counted = work[warmup:]
    n = sum(len(decode_batch(frame).records) for _, _, frame, _ in counted)
    client0, backend0, started = time.process_time(), _cpu(backend), time.perf_counter()
    write(counted)
    elapsed = time.perf_counter() - started
    client, server = time.process_time() - client0, _cpu(backend) - backend0
    return client * 1e6 / n, server * 1e6 / n, n / elapsed


def secondary_indexes(dsn: str) -> list[tuple[str, str]]:
    """(name, CREATE statement) of each index on the partitioned ``events`` (it has no key)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events'"
            " ORDER BY indexname"
        ).fetchall()
    return [(str(name), str(sql)) for name, sql in rows]


def row_widths(dsn: str) -> str:
    """Average stored sizes of a row and of its ``data`` document, in bytes."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT avg(pg_column_size(e.*)), avg(pg_column_size(data)), avg(length(data::text))"
            " FROM events e"
        ).fetchone()
    assert row is not None
    return f"row {row[0]:.0f} B, data {row[1]:.0f} B as JSONB ({row[2]:.0f} characters as text)"


def narrow_data() -> AbstractContextManager[Any]:
    """``store_batch`` with every record's ``data`` stored as ``{}`` (what the document costs)."""
    original: Callable[..., Any] = events.event_columns

    def narrowed(batch: Any) -> Any:
        columns, sizes = original(batch)
        columns["data"] = ["{}"] * len(columns["data"])
        return columns, sizes

    return mock.patch.object(events, "event_columns", narrowed)


@contextmanager
def without_indexes(dsn: str, indexes: list[tuple[str, str]]) -> Iterator[None]:
    """``events`` without ``indexes`` (name, CREATE statement), recreated on the emptied table
    afterwards (an index on no rows builds at once)."""
    with psycopg.connect(dsn, autocommit=True) as owner:
        for name, _ in indexes:
            owner.execute(f"DROP INDEX {name}")
        try:
            yield
        finally:
            owner.execute("TRUNCATE events, event_batches, stored_usage")
            for _, create in indexes:
                owner.execute(create)


BATCH_KEYS = ("event_batches", "event_batches_pkey", "ix_event_batches_tenant_day")


def sizes_per_thousand(dsn: str, indexes: list[tuple[str, str]], rows: int) -> str:
    """Bytes on disk per 1,000 stored rows of the heap, each index and the batch keys."""
    names = ["events", *(n for n, _ in indexes), *BATCH_KEYS]
    with psycopg.connect(dsn) as conn:
        parts = []
        for name in names:
            row = conn.execute(
                "SELECT coalesce(sum(pg_relation_size(relid)), pg_relation_size(%s::regclass))"
                " FROM pg_partition_tree(%s::regclass)",  # (no rows for an unpartitioned one)
                [name, name],
            ).fetchone()
            assert row is not None
            size = int(row[0]) * 1000 / rows / 1024
            parts.append(f"{name} {size:.0f}" if size >= 10 else f"{name} {size:.1f}")
    return "KiB per 1,000 rows: " + ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--batches", type=int, default=400, help="batches per pass")
    parser.add_argument("--batch-size", type=int, default=500, help="records per batch")
    parser.add_argument("--warmup", type=int, default=20, help="uncounted batches per pass")
    parser.add_argument("--indexes", action="store_true", help="a pass per dropped index")
    parser.add_argument("--narrow-data", action="store_true", help="a pass with data = {}")
    parser.add_argument("--rounds", type=int, default=1, help="every pass this many times")
    parser.add_argument(
        "--group", type=int, nargs="+", default=[1], help="batches per transaction (each a pass)"
    )
    args = parser.parse_args()
    with scratch_database() as url:
        engine = open_store(url, app_role=APP_ROLE, pool_size=1)
        sessions = SessionFactory(engine)
        make_partitions(url, sessions)
        owners = create_owners(sessions, args.tenants)
        work = frames(owners, random.Random(7), args.batches, args.batch_size, 1)
        worker = IngestWorker(sessions, ServerMetrics())
        backend = backend_of(sessions)
        dsn = url.replace("+psycopg", "")
        print(
            f"{len(work) - args.warmup} batches of {args.batch_size} per pass "
            f"(+{args.warmup} warm-up), {args.tenants} tenants, pid {os.getpid()}"
        )
        indexes = secondary_indexes(dsn)
        passes: list[tuple[str, int, Callable[[], AbstractContextManager[Any]]]] = [
            (
                "all indexes" + (f", {g} per transaction" if len(args.group) > 1 else ""),
                g,
                nullcontext,
            )
            for g in args.group
        ]
        base_label = passes[0][0]
        group = args.group[0]
        if args.narrow_data:
            passes.append(("data stored as {}", group, narrow_data))
        if args.indexes:
            for index in indexes:
                drop = partial(without_indexes, dsn, [index])
                passes.append((f"without {index[0]}", group, drop))
            drop_all = partial(without_indexes, dsn, indexes)
            passes.append(("without any secondary index", group, drop_all))
        seen: dict[str, list[tuple[float, float, float]]] = {label: [] for label, _, _ in passes}
        for round_ in range(args.rounds):
            for label, per_txn, setting in passes:
                with psycopg.connect(dsn, autocommit=True) as owner:
                    owner.execute("TRUNCATE events, event_batches, stored_usage")
                with setting():
                    client, server, rate = one_pass(worker, backend, work, args.warmup, per_txn)
                    if round_ == 0 and label == base_label:
                        print(f"  {row_widths(dsn)}")
                        rows = (len(work) - args.warmup) * args.batch_size
                        print(f"  {sizes_per_thousand(dsn, indexes, rows)}")
                seen[label].append((client, server, rate))
                print(
                    f"{label:<36} client {client:5.1f}  backend {server:5.1f}  total "
                    f"{client + server:6.1f} CPU-ms per 1,000 events; {rate:,.0f} events/s"
                )
        if args.rounds > 1:  # the machine is shared: the median of interleaved rounds
            print(f"median of {args.rounds} rounds (backend: less than {base_label} by):")
            base = statistics.median(s for _, s, _ in seen[base_label])
            for label, results in seen.items():
                client = statistics.median(c for c, _, _ in results)
                server = statistics.median(s for _, s, _ in results)
                print(
                    f"{label:<36} client {client:5.1f}  backend {server:5.1f}"
                    f" ({base - server:+5.1f}) CPU-ms per 1,000 events"
                )
        engine.dispose()


if __name__ == "__main__":
    main()
