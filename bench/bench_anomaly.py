"""What the anomaly model costs the detect role: model time per record, and the bulk write of
the scores (one statement per batch) on SQLite and, when reachable, PostgreSQL.

Run: ``.venv/bin/python bench/bench_anomaly.py [--pg postgresql+psycopg://postgres@127.0.0.1/DB]``
(the PostgreSQL database must exist and be empty; it is migrated here).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.rules.test_anomaly import usual_traffic

from a2z.records import Conn
from a2z.rules.anomaly import AnomalySettings, SourceAnomalyModel
from a2z.server.events import scores
from a2z.server.store.engine import make_engine
from a2z.server.store.migrate import upgrade
from a2z.server.store.session import SessionFactory

BATCH = 500


def bench_model(n: int) -> None:
    records = usual_traffic(random.Random(1), n)
    model = SourceAnomalyModel(AnomalySettings(warm_up=1_000, window=250))
    started = time.perf_counter()
    for record in records:
        model.observe(record)
    seconds = time.perf_counter() - started
    conns = sum(isinstance(r, Conn) for r in records)
    print(f"model: {len(records):,} records ({conns:,} conns) {seconds / len(records) * 1e6:.0f} us"
          f"/record, {seconds / conns * 1e6:.0f} us/conn (windows + score + learn)")  # fmt: skip


def bench_writes(label: str, url: str, batches: int) -> None:
    engine = make_engine(url)
    upgrade(engine)
    sessions = SessionFactory(engine)
    tenant = uuid.uuid4()
    started = time.perf_counter()
    for b in range(batches):
        rows = [(f"C{b}-{i}", 1.7e9 + i, 0.5) for i in range(BATCH)]
        with sessions.tenant(tenant) as session:
            scores.store(session=session, scores=rows)
    seconds = time.perf_counter() - started
    rows_total = batches * BATCH
    per_score = seconds / rows_total * 1e6
    per_score = seconds / rows_total * 1e6
    print(
        f"{label}: {rows_total:,} scores in batches of {BATCH}: {per_score:.1f} us/score, "
        f"{rows_total / seconds:,.0f} scores/s"
    )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--pg", help="an empty PostgreSQL database URL to migrate and write to")
    args = parser.parse_args()
    bench_model(args.records)
    with tempfile.TemporaryDirectory() as tmp:
        bench_writes("SQLite", f"sqlite:///{tmp}/bench.db", args.batches)
    if args.pg:
        bench_writes("PostgreSQL", args.pg, args.batches)


if __name__ == "__main__":
    main()
