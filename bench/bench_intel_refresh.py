"""``make bench-rules`` (intel, backend): the detect role's refresh cost for a stored set.

A tenant holds N indicators in the store (SQLite in a temporary directory by default, or
``--db`` PostgreSQL). The detect role's IntelDetector loads the whole set on the tenant's first
batch; after 1% of the set changes (half deleted, half new) it brings the set up to date from
the rows changed since its version. Both are timed (wall and CPU seconds), with the delta an
agent at the old version would be sent.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select, update

from a2z.records import Conn
from a2z.rules.intel import make
from a2z.rules.intel.transfer import pack, split
from a2z.server.app import build_context
from a2z.server.config import ServerRole, Settings
from a2z.server.detect.intel import IntelDetector
from a2z.server.intel import delivery
from a2z.server.intel import service as intel
from a2z.server.intel.models import TenantIndicator
from a2z.server.tenants import service as tenants
from bench_intel import raw_values


class Clock:
    """The detector's refresh clock, moved on by hand."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


def timed(label: str, fn: object) -> object:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()  # type: ignore[operator]
    print(
        f"  {label}: {time.perf_counter() - wall:.2f} s wall, {time.process_time() - cpu:.2f} s CPU"
    )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--indicators", type=int, default=1_000_000)
    parser.add_argument("--db", help="SQLAlchemy URL (default: SQLite in a temporary directory)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp), db_url=args.db, roles=frozenset({ServerRole.API, ServerRole.INGEST})
        )
        run(settings, args.indicators)


def run(settings: Settings, size: int) -> None:
    ctx = build_context(settings)
    rng = random.Random(11)
    with ctx.sessions.system() as session:
        tenant = tenants.create_tenant(session=session, name=f"bench-{uuid.uuid4().hex[:8]}")
    indicators = [make(k, v, source="bench", confidence=80) for k, v in raw_values(size, rng)]
    print(f"{len(indicators):,} stored indicators ({ctx.sessions.engine.dialect.name})")

    def store() -> None:
        with ctx.sessions.tenant(tenant.id) as session:
            intel.import_indicators(session, intel.TENANT, indicators)

    timed("import through the service (one transaction)", store)
    clock = Clock()
    detector = IntelDetector(ctx.sessions, ctx.metrics, clock=clock)
    probe = [Conn(ts=1.8e9, uid="C1", orig_h="10.0.0.1", orig_p=1, resp_h="192.0.2.1",
                  resp_p=2, proto="tcp")]  # fmt: skip
    timed(
        "detect role, first batch (loads the whole set)",
        lambda: detector.detect(str(tenant.id), probe),
    )

    changed = max(size // 200, 1)
    with ctx.sessions.tenant(tenant.id) as session:
        ids = list(session.scalars(select(TenantIndicator.id).limit(changed)))
        version = intel.bump(session, intel.TENANT)
        session.execute(
            update(TenantIndicator).where(TenantIndicator.id.in_(ids))
            .values(removed_version=version, version=version)
        )  # fmt: skip
        fresh = [make(k, v, source="bench-new", confidence=80)
                 for k, v in raw_values(changed, random.Random(12))]  # fmt: skip
        intel.import_indicators(session, intel.TENANT, fresh)
    print(f"  changed: {changed:,} deleted, {len(fresh):,} added (1% of the set)")
    clock.now += 3600
    before = detector.refreshes
    timed(
        "detect role, next batch (brings the set up to date)",
        lambda: detector.detect(str(tenant.id), probe),
    )
    assert detector.refreshes == before + 1

    with ctx.sessions.tenant(tenant.id) as session:
        base = delivery.combine(0, version - 1)
        change = delivery.delta(session, base)
    sent = sum(len(pack(p)) for p in split(change))
    print(
        f"  an agent one change behind is sent {len(change.added):,} added and"
        f" {len(change.removed):,} removed: {sent / 2**10:,.0f} KiB (full: {change.full})"
    )
    ctx.sessions.engine.dispose()


if __name__ == "__main__":
    main()
