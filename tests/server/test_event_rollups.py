"""Rollups of closed hours (ADR 0019): the histogram and top-N they serve equal a direct count
of the raw rows across hour and day edges, with a record arriving late into a rolled-up hour,
after retention, and for filters the rollup cannot serve; each tenant's rollup is its own."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from a2z.records import Batch, Conn, Dns, Http, Record, Ssl
from a2z.server.context import ServerContext
from a2z.server.events import rollups
from a2z.server.events import service as events
from a2z.server.events.models import EventRollup
from a2z.server.store.partitions import DAY, day_of
from a2z.server.tenants import service as tenants
from tests.server.conftest import TenantFixture, login

HOUR = 3600
DAY0 = day_of(1_700_000_000.0) * DAY  # 2023-11-14T00:00:00Z
NOW = DAY0 + 2 * DAY + 20 * HOUR  # the third day's 20:00: two closed days, one open


def sample(rng: random.Random, n: int) -> list[Record]:
    """Records over two days and 18 hours, many on or next to hour and day edges."""
    stamps = [DAY0 + DAY, DAY0 + DAY - 0.001, DAY0 + HOUR, DAY0 + 2 * HOUR - 1e-6]
    stamps += [NOW - 0.5, NOW - 600, NOW - 601, DAY0 + 2 * DAY]
    stamps += [DAY0 + rng.random() * (NOW - DAY0) for _ in range(n - len(stamps))]
    out: list[Record] = []
    for i, ts in enumerate(stamps):
        tup: dict[str, Any] = {
            "ts": ts,
            "uid": f"C{i}",
            "orig_h": f"10.0.{rng.randrange(4)}.{rng.randrange(1, 250)}",
            "orig_p": 40000 + i,
            "resp_h": rng.choice(("192.0.2.1", "192.0.2.2", "2001:db8::1", "10.0.0.53")),
            "resp_p": rng.choice((53, 80, 443, 8080)),
        }
        kind = i % 4
        if kind == 0:
            out.append(Conn(proto="tcp", **tup))
        elif kind == 1:
            name = f"h{rng.randrange(6)}.example.com"
            out.append(Dns(proto="udp", trans_id=i, query=name, **tup))
        elif kind == 2:
            agent = rng.choice(("curl/8", "Mozilla/5.0"))
            host, status = rng.choice(("a.test", "b.test")), rng.choice((200, 404))
            out.append(Http(host=host, uri=f"/p/{i}", user_agent=agent, status_code=status, **tup))
        else:
            out.append(Ssl(server_name=f"s{rng.randrange(3)}.example.net", **tup))
    return out


def seed(ctx: ServerContext, tenant: TenantFixture, records: list[Record], first_seq: int) -> None:
    for i in range(0, len(records), 50):
        batch = Batch(
            agent_id=str(tenant.agent_id), boot_epoch=1, seq=first_seq + i // 50, sent_at=0.0,
            records=records[i : i + 50],
        )  # fmt: skip
        with ctx.sessions.tenant(tenant.id) as session:
            events.store_batch(session=session, agent_id=tenant.agent_id, batch=batch)


FIELDS: dict[str, Callable[[Any], Any]] = {
    "type": lambda r: type(r).__struct_config__.tag,
    "resp_h": lambda r: r.resp_h,
    "resp_p": lambda r: r.resp_p,
    "orig_h": lambda r: r.orig_h,
    "query": lambda r: getattr(r, "query", None),
    "host": lambda r: r.host if isinstance(r, Http) else None,
    "server_name": lambda r: getattr(r, "server_name", None),
    "status_code": lambda r: getattr(r, "status_code", None),
    "user_agent": lambda r: r.user_agent if isinstance(r, Http) else None,
}


def matching(records: list[Record], params: dict[str, Any]) -> list[Record]:
    """The records a query's filters select, decided here in Python from the records."""
    out = []
    for rec in records:
        if "since" in params and rec.ts < params["since"]:
            continue
        if "until" in params and rec.ts >= params["until"]:
            continue
        if "type" in params and FIELDS["type"](rec) != params["type"]:
            continue
        if "resp_p" in params and rec.resp_p != params["resp_p"]:
            continue
        if "q" in params and params["q"] not in str(FIELDS["query"](rec) or ""):
            continue
        out.append(rec)
    return out


def expected_histogram(records: list[Record], bucket: int, params: dict[str, Any]) -> list[Any]:
    counts = Counter((rec.ts // bucket) * bucket for rec in matching(records, params))
    return [[start, counts[start]] for start in sorted(counts)]


def expected_top(records: list[Record], field: str, n: int, params: dict[str, Any]) -> list[Any]:
    values = [FIELDS[field](rec) for rec in matching(records, params)]
    counts = Counter(v for v in values if v is not None)
    return [[v, c] for v, c in sorted(counts.items(), key=lambda vc: (-vc[1], vc[0]))[:n]]


def query_string(params: dict[str, Any]) -> str:
    return "&".join(f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


RANGES: list[dict[str, Any]] = [
    {},
    {"since": DAY0 + 5 * HOUR + 0.25, "until": DAY0 + DAY + 7 * HOUR - 0.5},  # mid-hour edges
    {"since": DAY0 + DAY, "until": DAY0 + 2 * DAY},  # exactly one closed day
    {"since": DAY0 + DAY - 0.001},  # just before a day edge, into the open hours
    {"until": DAY0 + 2 * DAY + 19 * HOUR + 59},  # into the hour before the lag
    {"type": "dns"},
    {"type": "http", "since": DAY0 + 30 * HOUR},
]
UNSERVED: list[dict[str, Any]] = [{"resp_p": 53}, {"q": "h1"}, {"resp_p": 80, "type": "http"}]


def check_answers(
    client: TestClient, headers: dict[str, str], records: list[Record], ranges: list[Any]
) -> None:
    """Every aggregation the API gives equals the count of the records themselves."""
    for params in ranges:
        qs = query_string(params)
        for bucket in (HOUR, 2 * HOUR, 5 * HOUR, DAY, 1800, 7):
            resp = client.get(f"/api/v1/events/histogram?bucket={bucket}&{qs}", headers=headers)
            assert resp.status_code == 200, resp.text
            got = [[b["start"], b["count"]] for b in resp.json()["items"]]
            assert got == expected_histogram(records, bucket, params), (bucket, params)
        for field in FIELDS:
            for n in (1, 3, 100):
                resp = client.get(f"/api/v1/events/top?field={field}&n={n}&{qs}", headers=headers)
                assert resp.status_code == 200, resp.text
                got = [[t["value"], t["count"]] for t in resp.json()["items"]]
                assert got == expected_top(records, field, n, params), (field, n, params)


def covered(ctx: ServerContext, tenant: TenantFixture) -> tuple[tuple[int, int], ...]:
    with ctx.sessions.tenant(tenant.id) as session:
        return rollups.coverage(session, None, None).spans


@pytest.fixture
def rolled(ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture) -> list[Record]:
    """A's and B's records stored (B's differ), and the rollup pass run at ``NOW``."""
    records = sample(random.Random(5), 400)
    seed(ctx, tenant_a, records, first_seq=1)
    seed(ctx, tenant_b, sample(random.Random(6), 300), first_seq=1)
    ctx.maintenance.clock = lambda: NOW
    reports = ctx.maintenance.refresh_rollups()
    assert reports[tenant_a.id].rolled_events == len(
        [r for r in records if r.ts < NOW - 600 - (NOW - 600) % HOUR]
    )
    return records


def test_rollup_answers_equal_the_raw_rows_across_edges(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, rolled: list[Record]
) -> None:
    closed = NOW - 600 - (NOW - 600) % HOUR  # hours that ended at least the lag ago
    assert covered(ctx, tenant_a) == ((DAY0, closed),)
    with ctx.sessions.tenant(tenant_a.id) as session:
        assert [(d, t) for d, t, _ in rollups.days(session=session)] == [
            (day_of(DAY0), DAY0 + DAY), (day_of(DAY0) + 1, DAY0 + 2 * DAY),
            (day_of(DAY0) + 2, closed),
        ]  # fmt: skip
    check_answers(client, login(client, tenant_a), rolled, RANGES + UNSERVED)


def test_a_late_record_is_counted_at_once_and_its_day_redone(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, rolled: list[Record]
) -> None:
    late = Dns(
        ts=DAY0 + DAY + 3 * HOUR + 1, uid="Clate", orig_h="10.1.1.1", orig_p=1, resp_h="192.0.2.9",
        resp_p=53, proto="udp", trans_id=1, query="late.example.com",
    )  # fmt: skip
    seed(ctx, tenant_a, [late], first_seq=1000)
    records = [*rolled, late]
    # The late record's day no longer checks out: it is read from the raw rows, the others not.
    closed = NOW - 600 - (NOW - 600) % HOUR
    assert covered(ctx, tenant_a) == ((DAY0, DAY0 + DAY), (DAY0 + 2 * DAY, closed))
    headers = login(client, tenant_a)
    check_answers(client, headers, records, RANGES[:3])
    report = ctx.maintenance.refresh_rollups()[tenant_a.id]
    assert report.redone == [day_of(DAY0) + 1]
    assert covered(ctx, tenant_a) == ((DAY0, closed),)
    check_answers(client, headers, records, RANGES[:3])


def test_new_hours_extend_the_rollup(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, rolled: list[Record]
) -> None:
    later = NOW + 3 * HOUR
    ctx.maintenance.clock = lambda: later
    report = ctx.maintenance.refresh_rollups()[tenant_a.id]
    assert report.extended == [day_of(DAY0) + 2] and report.redone == []
    closed = later - 600 - (later - 600) % HOUR
    assert covered(ctx, tenant_a) == ((DAY0, closed),)
    check_answers(client, login(client, tenant_a), rolled, RANGES[:2])


def test_retention_removes_the_rollups_with_the_rows(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, rolled: list[Record]
) -> None:
    with ctx.sessions.system() as session:
        tenants.update_settings(
            session=session, tenant_id=tenant_a.id, changes={"retention_days": 1}
        )
    ctx.maintenance.retention()  # at NOW: the first day goes
    with ctx.sessions.tenant(tenant_a.id) as session:
        assert [d for d, _, _ in rollups.days(session=session)] == [
            day_of(DAY0) + 1,
            day_of(DAY0) + 2,
        ]
        for grain, first in ((HOUR, (DAY0 + DAY) // HOUR), (DAY, day_of(DAY0) + 1)):
            oldest = session.scalar(
                select(func.min(EventRollup.slot)).where(EventRollup.grain == grain)
            )
            assert oldest == first, grain
    kept = [r for r in rolled if r.ts >= DAY0 + DAY]
    check_answers(client, login(client, tenant_a), kept, RANGES[:2])


def test_each_tenant_reads_only_its_own_rollup(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture,
    rolled: list[Record],
) -> None:  # fmt: skip
    headers = login(client, tenant_b)
    b_records = sample(random.Random(6), 300)
    check_answers(client, headers, b_records, RANGES[:1])
    with ctx.sessions.tenant(tenant_b.id) as session:
        rows = session.execute(select(EventRollup.tenant_id).distinct()).scalars().all()
    assert rows == [tenant_b.id]


def test_the_upkeep_loop_refreshes_rollups_between_full_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typing import cast

    from a2z.server.events import maintenance
    from a2z.server.metrics import ServerMetrics

    maint = maintenance.StoreMaintenance(cast(Any, None), ServerMetrics(), rollup_every_s=300)
    calls: list[str] = []
    monkeypatch.setattr(maint, "run_once", lambda: calls.append("full"))
    monkeypatch.setattr(maint, "refresh_rollups", lambda: calls.append("rollups") or {})
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # no waiting: count the ticks, stop after 25
        slept.append(seconds)
        if len(slept) > 25:
            raise asyncio.CancelledError

    monkeypatch.setattr(maintenance.asyncio, "sleep", sleep)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(maint.run_every(3600))
    assert set(slept) == {300}
    assert calls == (["rollups"] * 11 + ["full"]) * 2 + ["rollups"]
