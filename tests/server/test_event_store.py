"""The event store: day partitions with RLS on each, the default partition that loses nothing,
records kept as typed columns plus JSON, stored usage, per-tenant retention and residency."""

from __future__ import annotations

import random
import threading
import uuid
from pathlib import Path

import msgspec
import psycopg
import pytest
from sqlalchemy import select

from a2z.records import Alert, Batch, Conn, Dns, Ftp, Http, Record, Severity, Ssl, Weird
from a2z.server.app import build_context
from a2z.server.config import Settings
from a2z.server.context import ServerContext
from a2z.server.events import scores, usage
from a2z.server.events import service as events
from a2z.server.events.maintenance import stored_rows
from a2z.server.events.models import Event, EventBatch
from a2z.server.events.search import ip_key
from a2z.server.store import partitions
from a2z.server.store.partitions import DAY, day_of
from a2z.server.tenants import service as tenants
from tests.server.conftest import APP_ROLE, TenantFixture, make_tenant
from tests.services import pg_url, scratch_database

NOW = 1_790_000_000.0  # a fixed "now" for the maintenance clock: 2026-09-21
TODAY = day_of(NOW)


def records(ts: float, n: int = 3) -> list[Conn | Dns | Http]:
    out: list[Conn | Dns | Http] = []
    for i in range(n):
        tup = {"uid": f"C{i}", "orig_h": "10.0.0.1", "orig_p": 40000 + i,
               "resp_h": "10.0.0.2", "resp_p": 53}  # fmt: skip
        if i % 3 == 0:
            out.append(Conn(ts=ts + i, proto="tcp", conn_state="SF", **tup))
        elif i % 3 == 1:
            out.append(Dns(ts=ts + i, proto="udp", trans_id=i, query="a.example.com", **tup))
        else:
            out.append(Http(ts=ts + i, host="h.test", uri="/x\x00y", status_code=200, **tup))
    return out


def store(ctx: ServerContext, tenant: TenantFixture, seq: int, ts: float, n: int = 3) -> int:
    batch = Batch(
        agent_id=str(tenant.agent_id), boot_epoch=1, seq=seq, sent_at=ts, records=records(ts, n)
    )
    region = ctx.quotas.reload(tenant.id).region
    with ctx.sessions.tenant(tenant.id) as session:
        return events.store_batch(
            session=session, agent_id=tenant.agent_id, batch=batch, region=region
        )


def at(ctx: ServerContext, now: float) -> ServerContext:
    ctx.maintenance.clock = lambda: now
    return ctx


def test_record_round_trips_through_typed_columns_and_json(
    ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    batch_records = records(NOW, 3)
    assert store(ctx, tenant_a, 1, NOW) == 3
    with ctx.sessions.tenant(tenant_a.id) as session:
        rows = sorted(session.scalars(select(Event)), key=lambda e: e.idx)
        back = [events.record_of(row) for row in rows]
        assert all("ts" not in row.data and "id.orig_h" not in row.data for row in rows)
    expected = [msgspec.to_builtins(r) for r in batch_records]
    expected[2]["uri"] = "/x\ufffdy"  # JSONB holds no NUL: stored as U+FFFD on both stores
    assert back == expected


def test_resent_batch_adds_no_rows_and_no_usage(
    ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    assert store(ctx, tenant_a, 1, NOW, n=20) == 20
    with ctx.sessions.tenant(tenant_a.id) as session:
        first = usage.totals(session=session)
    assert store(ctx, tenant_a, 1, NOW, n=20) == 0
    with ctx.sessions.tenant(tenant_a.id) as session:
        assert usage.totals(session=session) == first
    assert first[0] == 20 and first[1] > 20 * 100  # each record's JSON is over 100 bytes


def test_region_is_recorded_on_the_tenants_rows(
    ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    with ctx.sessions.system() as session:
        tenants.update_settings(session=session, tenant_id=tenant_a.id, changes={"region": "eu-1"})
    store(ctx, tenant_a, 1, NOW)
    store(ctx, tenant_b, 1, NOW)
    for tenant, region in ((tenant_a, "eu-1"), (tenant_b, None)):
        with ctx.sessions.tenant(tenant.id) as session:
            assert set(session.scalars(select(Event.region))) == {region}


def test_retention_drops_old_partitions_and_each_tenants_old_rows(
    ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    with ctx.sessions.system() as session:
        tenants.update_settings(
            session=session, tenant_id=tenant_a.id, changes={"retention_days": 2}
        )
        tenants.update_settings(
            session=session, tenant_id=tenant_b.id, changes={"retention_days": 5}
        )
    # Partitions for the last ten days (PostgreSQL), then one batch a day for each tenant.
    maint = at(ctx, NOW).maintenance
    maint.days_back = 10
    maint.ensure_partitions()
    for back in range(10):
        ts = (TODAY - back) * DAY + 3600
        store(ctx, tenant_a, back + 1, ts)
        store(ctx, tenant_b, back + 1, ts)
    assert stored_rows(ctx.sessions, tenant_a.id) == stored_rows(ctx.sessions, tenant_b.id) == 30

    with ctx.sessions.tenant(tenant_a.id) as session:  # the detect role's scores of A's conns
        scores.store(session=session, scores=[("Cold", (TODAY - 5) * DAY, 0.5),
                                              ("Cnew", TODAY * DAY, 0.5)])  # fmt: skip

    report = maint.retention()

    with ctx.sessions.tenant(tenant_a.id) as session:  # scores go with their connections
        assert scores.of(session=session, uids={"Cold", "Cnew"}) == {"Cnew": 0.5}
    # A keeps today and the 2 days before; B keeps 5 days back. Nothing else of either is left.
    assert stored_rows(ctx.sessions, tenant_a.id) == 3 * 3
    assert stored_rows(ctx.sessions, tenant_b.id) == 3 * 6
    for tenant, days in ((tenant_a, 2), (tenant_b, 5)):
        with ctx.sessions.tenant(tenant.id) as session:
            oldest = min(session.scalars(select(Event.ts)))
            assert day_of(oldest) == TODAY - days
            assert usage.totals(session=session)[0] == 3 * (days + 1)
            # Batch keys go with their rows: seq back + 1 was stored ``back`` days ago.
            kept = session.scalars(select(EventBatch.seq).order_by(EventBatch.seq))
            assert list(kept) == list(range(1, days + 2))
    # A batch whose rows retention removed stores again if re-sent; a kept one does not.
    assert store(ctx, tenant_a, 4, (TODAY - 3) * DAY + 3600) == 3
    assert store(ctx, tenant_a, 3, (TODAY - 2) * DAY + 3600) == 0
    if ctx.sessions.engine.dialect.name == "postgresql":
        # Whole days older than the longest retention (5) went as partitions, not row deletes.
        assert report.dropped_partitions == tuple(
            partitions.partition_name(d) for d in range(TODAY - 10, TODAY - 5)
        )
        assert report.deleted_rows == {tenant_a.id: 3 * 3}
    else:
        assert report.deleted_rows == {tenant_a.id: 3 * 7, tenant_b.id: 3 * 4}


@pytest.fixture
def pg_ctx(pg_template: str, tmp_path: Path) -> object:
    with scratch_database(pg_template) as name:
        ctx = build_context(Settings(data_dir=tmp_path, db_url=pg_url(name), pool_size=2))
        yield name, ctx
        ctx.sessions.engine.dispose()


def test_partitions_exist_ahead_and_each_has_forced_rls_and_app_grants(pg_ctx: object) -> None:
    name, ctx = pg_ctx  # type: ignore[misc]
    today = day_of(ctx.maintenance.clock())
    with psycopg.connect(pg_url(name).replace("+psycopg", "")) as conn:
        with ctx.maintenance.owner() as sa_conn:
            days = partitions.day_partitions(sa_conn)
        assert sorted(days) == list(range(today - 1, today + 4))
        for table in [*days.values(), partitions.DEFAULT_PARTITION]:
            enabled, forced = conn.execute(
                "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = %s",
                (table,),
            ).fetchone()  # type: ignore[misc]
            assert enabled and forced, table
            grants = conn.execute(
                "SELECT privilege_type FROM information_schema.role_table_grants "
                "WHERE table_name = %s AND grantee = %s",
                (table, APP_ROLE),
            ).fetchall()
            assert {g[0] for g in grants} >= {"SELECT", "INSERT", "UPDATE", "DELETE"}, table
            first_columns = conn.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
                "WHERE i.indrelid = %s::regclass",
                (table,),
            ).fetchall()
            # The seven search indexes (no key index: ``event_batches`` keeps batches unique).
            assert len(first_columns) == 7 and {c[0] for c in first_columns} == {"tenant_id"}


def test_out_of_range_rows_land_in_default_and_move_to_their_partition_later(
    pg_ctx: object,
) -> None:
    name, ctx = pg_ctx  # type: ignore[misc]
    a, b = make_tenant(ctx, "alpha"), make_tenant(ctx, "bravo")
    old = (day_of(ctx.maintenance.clock()) - 40) * DAY + 7.5  # no partition for that day
    assert store(ctx, a, 1, old, n=5) == 5
    assert store(ctx, b, 1, old, n=4) == 4
    with psycopg.connect(pg_url(name).replace("+psycopg", "")) as conn:  # superuser: all rows
        assert conn.execute(f"SELECT count(*) FROM {partitions.DEFAULT_PARTITION}").fetchone() == (
            9,
        )
    at(ctx, old).maintenance.ensure_partitions()  # the day of those rows is now "today"
    day_table = partitions.partition_name(day_of(old))
    with psycopg.connect(pg_url(name).replace("+psycopg", "")) as conn:
        assert conn.execute(f"SELECT count(*) FROM {partitions.DEFAULT_PARTITION}").fetchone() == (
            0,
        )
        assert conn.execute(f"SELECT count(*) FROM {day_table}").fetchone() == (9,)
    assert ctx.metrics.registry.get_sample_value("a2z_event_partition_rows_moved_total") == 9
    # Nothing lost, and the moved rows still collapse a re-sent batch.
    assert stored_rows(ctx.sessions, a.id) == 5
    assert store(ctx, a, 1, old, n=5) == 0
    # The application role reading the new partition directly sees only its tenant's rows.
    dsn = pg_url(name, APP_ROLE).replace("+psycopg", "")
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(b.id),))
        seen = conn.execute(f"SELECT tenant_id FROM {day_table}").fetchall()
        assert [r[0] for r in seen] == [b.id] * 4
    with psycopg.connect(dsn) as conn:  # no tenant set: nothing, and no writes
        assert conn.execute(f"SELECT count(*) FROM {day_table}").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                f"INSERT INTO {day_table} (tenant_id, agent_id, boot_epoch, seq, idx, ts, path, "
                "uid, orig_h, orig_p, resp_h, resp_p, data) VALUES "
                "(%s, %s, 1, 9, 0, %s, 'conn', 'C', '1.1.1.1', 1, '2.2.2.2', 2, '{}')",
                (a.id, uuid.uuid4(), old),
            )


class _Rollback(Exception):
    """Raised inside the first writer's transaction to roll it back."""


@pytest.mark.parametrize("first_commits", [True, False])
def test_two_writers_racing_one_batch_store_it_once(pg_ctx: object, first_commits: bool) -> None:
    # The same batch from two ingest workers (a redelivery while the first still holds it):
    # the second's INSERT waits on the first's uncommitted key, then skips every row if the
    # first commits, or stores them all if it rolls back. Rows and usage: once either way.
    name, ctx = pg_ctx  # type: ignore[misc]
    tenant = make_tenant(ctx, "alpha")
    batch = Batch(agent_id=str(tenant.agent_id), boot_epoch=1, seq=7, sent_at=NOW,
                  records=records(NOW, 40))  # fmt: skip
    first_inserted, second_blocked = threading.Event(), threading.Event()
    second_pid: list[int] = []
    stored: dict[str, int] = {}

    def first() -> None:
        try:
            with ctx.sessions.tenant(tenant.id) as session:
                stored["first"] = events.store_batch(
                    session=session, agent_id=tenant.agent_id, batch=batch
                )
                first_inserted.set()
                assert second_blocked.wait(60)
                if not first_commits:
                    raise _Rollback
        except _Rollback:
            stored["first"] = 0

    def second() -> None:
        assert first_inserted.wait(60)
        with ctx.sessions.tenant(tenant.id) as session:
            pid = session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            second_pid.append(pid)
            stored["second"] = events.store_batch(
                session=session, agent_id=tenant.agent_id, batch=batch
            )

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    with psycopg.connect(pg_url(name).replace("+psycopg", ""), autocommit=True) as owner:
        waiting = None
        while waiting != "Lock":  # the second writer waits on the first's transaction
            row = owner.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                (second_pid[0] if second_pid else -1,),
            ).fetchone()
            waiting = row[0] if row else None
            assert all(t.is_alive() for t in threads), stored
        second_blocked.set()
        for t in threads:
            t.join(60)
        assert stored == (
            {"first": 40, "second": 0} if first_commits else {"first": 0, "second": 40}
        )
        count = owner.execute(
            "SELECT count(*), count(DISTINCT idx) FROM events WHERE seq = 7"
        ).fetchone()
        assert count == (40, 40)
    with ctx.sessions.tenant(tenant.id) as session:
        assert usage.totals(session=session) == (
            40,
            sum(len(msgspec.json.encode(r)) for r in batch.records),
        )


def test_column_builder_gives_the_row_builders_values() -> None:
    # event_columns (PostgreSQL's array insert) and event_rows (SQLite) must store the same
    # record the same way: every type, a NUL in a document string and in a search string,
    # non-ASCII text, IPv6 and non-address hosts.
    agent = uuid.uuid4()
    tup = {"uid": "C1", "orig_h": "10.0.0.1", "orig_p": 1, "resp_h": "2001:db8::1", "resp_p": 443}
    recs: list[Record] = [
        Conn(ts=NOW, proto="tcp", history="ShAdDaFf", **tup),
        Conn(ts=NOW, proto="udp", service="d\x00ns", **{**tup, "orig_h": "host-a", "resp_p": -1}),
        Dns(ts=NOW, proto="udp", trans_id=1, query="ünï.example\x00.com", answers=["1.2.3.4"],
            TTLs=[30.0], **{**tup, "resp_h": "010.0.0.1"}),
        Http(ts=NOW, host="h.test", uri="/x\x00y", user_agent="c\"url", status_code=404, **tup),
        Ssl(ts=NOW, server_name="s" * 300, **{**tup, "orig_h": "::ffff:10.0.0.9"}),
        Ftp(ts=NOW, command="RETR", arg="\"id.resp_p\":1,", **tup),
        Weird(ts=NOW, name="bad_TCP_checksum", **tup),
        Alert(ts=NOW, rule_id="r1", title="T\x00itle", severity=Severity.HIGH, attack=["T1046"],
              score=0.5, **tup),
    ]  # fmt: skip
    batch = Batch(agent_id=str(agent), boot_epoch=1, seq=1, sent_at=NOW, records=recs)
    rows, row_sizes = events.event_rows(uuid.uuid4(), agent, batch, "eu")
    columns, sizes = events.event_columns(batch)
    assert sizes == row_sizes
    assert all(len(values) == len(recs) for values in columns.values())
    for i, row in enumerate(rows):
        got = {name: values[i] for name, values in columns.items()}
        got["data"] = msgspec.json.decode(got["data"])
        assert got == {name: row[name] for name in columns}, recs[i]


def test_address_key_is_ip_key() -> None:
    texts = [
        "0.0.0.0", "10.0.0.1", "255.255.255.255", "256.0.0.1", "01.2.3.4", "1.2.3.04", "1.2.3",
        "1.2.3.4.5", " 1.2.3.4", "1.2.3.4 ", "+1.2.3.4", "1_0.2.3.4", "0x1.2.3.4", "1..3.4", "",
        "\uff11.2.3.4", "1.2.3.4\x00", "::1", "::ffff:1.2.3.4", "2001:db8::1", "fe80::1%eth0",
        "1.2.3.4/32", "not-an-ip", "\u0661.2.3.4",
    ]  # fmt: skip
    rng = random.Random(5)
    for _ in range(20_000):
        octets = [rng.choice([str(rng.randrange(300)), f"0{rng.randrange(10)}", "", "00"])
                  for _ in range(rng.choice([3, 4, 4, 5]))]  # fmt: skip
        texts.append(".".join(octets))
    for text in texts:
        assert events.address_key(text) == ip_key(text), text
