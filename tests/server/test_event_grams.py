"""Free-text gram blocks (ADR 0023): pages read through the blocks equal the raw scan's, page by
page with cursors, across closed and open hours, a late record, a false-positive block and
retention; each tenant's blocks are its own; the folding never hides a match."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, update

from a2z.records import Alert, Batch, Dns, Http, Record, Severity, Ssl
from a2z.server.context import ServerContext
from a2z.server.events import grams, search, textblocks
from a2z.server.events import service as events
from a2z.server.events.models import Event, EventBatch, EventTextBlock, StoredUsage
from a2z.server.store.partitions import DAY, day_of
from a2z.server.tenants import service as tenants
from tests.server.conftest import APP_ROLE, TenantFixture
from tests.services import pg_url

HOUR = 3600
DAY0 = day_of(1_700_000_000.0) * DAY  # 2023-11-14T00:00:00Z
NOW = DAY0 + DAY + 20 * HOUR  # the second day's 20:00: one closed day, hours of another
LAG = 600.0
CLOSED = NOW - LAG - (NOW - LAG) % HOUR  # hours before this one are cut into blocks
ALPHABET = "abcABC.-%_\\xK\u212a\u0130\u0131\u00e9\u00c9 \u0307"  # case, LIKE's specials, Unicode


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 3 rows: a few dozen records make many blocks and equal-ts block edges."""
    monkeypatch.setattr(textblocks, "BLOCK_ROWS", 3)


def record(i: int, ts: float, kind: int, value: str) -> Record:
    tup: dict[str, Any] = {
        "ts": ts, "uid": f"C{i}", "orig_h": "10.0.0.1", "orig_p": 1000 + i,
        "resp_h": "192.0.2.1", "resp_p": 53,
    }  # fmt: skip
    if kind == 0:
        return Dns(proto="udp", trans_id=i, query=value, **tup)
    if kind == 1:
        return Http(host=value[:5], uri=value, user_agent=value[::-1], status_code=200, **tup)
    if kind == 2:
        return Ssl(server_name=value, **tup)
    return Alert(rule_id="r", title=value, severity=Severity.LOW, **tup)


def seed(ctx: ServerContext, tenant: TenantFixture, records: list[Record], seq: int) -> None:
    for i in range(0, len(records), 20):
        batch = Batch(
            agent_id=str(tenant.agent_id), boot_epoch=1, seq=seq + i, sent_at=0.0,
            records=records[i : i + 20],
        )  # fmt: skip
        with ctx.sessions.tenant(tenant.id) as session:
            events.store_batch(session=session, agent_id=tenant.agent_id, batch=batch)


def build(ctx: ServerContext, tenant: TenantFixture, now: float = NOW) -> textblocks.BuildReport:
    with ctx.sessions.tenant(tenant.id) as session:
        return textblocks.refresh(session=session, now=now, lag=LAG)


def postgres(ctx: ServerContext) -> bool:
    return ctx.sessions.engine.dialect.name == "postgresql"


@contextmanager
def raw_scan(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The plan without blocks: every page a scan of the rows, as before ADR 0023."""
    with monkeypatch.context() as patch:
        patch.setattr(textblocks, "plan", lambda *args: None)
        yield


def walk(ctx: ServerContext, tenant: TenantFixture, flt: search.EventFilter, limit: int) -> Any:
    """Every page of ``flt``, cursor after cursor: the uids of each page."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        with ctx.sessions.tenant(tenant.id) as session:
            search.plan_newest_first(session, flt)
            items, cursor = events.list_page_records(
                session=session, limit=limit, flt=flt, cursor=cursor
            )
        pages.append([item["uid"] for item in items])
        if cursor is None:
            return pages


def used_blocks(ctx: ServerContext, tenant: TenantFixture, flt: search.EventFilter) -> bool:
    assert flt.q is not None
    with ctx.sessions.tenant(tenant.id) as session:
        return textblocks.regions(session, flt.q, flt.since, flt.until) is not None


def forget_rows(ctx: ServerContext, tenant: TenantFixture) -> None:
    with ctx.sessions.tenant(tenant.id) as session:
        for model in (Event, EventBatch, StoredUsage, EventTextBlock):
            session.execute(delete(model))


STAMPS = st.one_of(
    # whole minutes: many rows share a ts, so equal times straddle block edges
    st.integers(0, (CLOSED - DAY0) // 60 - 1).map(lambda m: DAY0 + 60.0 * m),  # closed hours
    st.integers(0, (NOW - CLOSED) // 60).map(lambda m: CLOSED + 60.0 * m),  # open hours
    st.sampled_from([DAY0 + DAY, DAY0 + DAY - 0.001, CLOSED, CLOSED - 1e-6]),  # edges
)
VALUES = st.text(ALPHABET, max_size=10)


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[Record], search.EventFilter, int]:
    """Records, a free-text filter (a piece of a stored value with its case changed, or any
    short string; with or without a time range) and a page size."""
    rows = draw(st.lists(st.tuples(STAMPS, st.integers(0, 3), VALUES), min_size=1, max_size=40))
    source = draw(st.sampled_from([value for _, _, value in rows]))
    if source and draw(st.booleans()):
        start = draw(st.integers(0, len(source) - 1))
        piece = source[start : start + draw(st.integers(1, 6))]
        flips = draw(st.lists(st.booleans(), min_size=len(piece), max_size=len(piece)))
        term = "".join(c.swapcase() if f else c for c, f in zip(piece, flips, strict=True))
    else:
        term = draw(st.text(ALPHABET, min_size=1, max_size=5))
    since, until = draw(st.sampled_from(BOUNDS))
    records = [record(i, ts, kind, value) for i, (ts, kind, value) in enumerate(rows)]
    return records, search.EventFilter(q=term, since=since, until=until), draw(st.integers(1, 7))


BOUNDS: list[tuple[float | None, float | None]] = [
    (None, None), (DAY0 + 5 * HOUR + 0.5, None), (None, CLOSED - 30.0), (DAY0 + DAY, NOW),
]  # fmt: skip


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=cases())
def test_free_text_pages_equal_the_raw_scan(
    ctx: ServerContext,
    tenant_a: TenantFixture,
    monkeypatch: pytest.MonkeyPatch,
    case: tuple[list[Record], search.EventFilter, int],
) -> None:
    records, flt, limit = case
    forget_rows(ctx, tenant_a)
    seed(ctx, tenant_a, records, seq=1)
    built = build(ctx, tenant_a)
    if postgres(ctx):
        assert built.rows == sum(r.ts < CLOSED for r in records)
    got = walk(ctx, tenant_a, flt, limit)
    with raw_scan(monkeypatch):
        want = walk(ctx, tenant_a, flt, limit)
    assert got == want
    if flt.since is None and flt.until is None:  # then the blocks are used wherever they can be
        assert flt.q is not None
        usable = postgres(ctx) and grams.term_grams(flt.q) is not None and built.rows > 0
        assert used_blocks(ctx, tenant_a, flt) == usable


@pytest.fixture
def indexed(ctx: ServerContext, tenant_a: TenantFixture) -> list[Record]:
    """A's records over a closed day and the open hours, one in 40 naming ``rare.example``,
    cut into blocks at ``NOW``."""
    records = [
        record(i, DAY0 + i * 113.0, i % 3, "rare.example" if i % 40 == 7 else f"host{i}.test")
        for i in range(1400)
    ]
    assert records[-1].ts > CLOSED  # some in the open hours
    seed(ctx, tenant_a, records, seq=1)
    build(ctx, tenant_a)
    return records


def expected(records: list[Record], needle: str) -> list[str]:
    """uids of the records with ``needle`` in a free-text field, newest first."""
    hits = [r for r in records if needle in str(getattr(r, "query", "") or getattr(r, "uri", ""))]
    hits += [r for r in records if isinstance(r, Ssl) and needle in r.server_name]
    return [r.uid for r in sorted(hits, key=lambda r: r.ts, reverse=True)]


def test_a_rare_term_reads_only_its_blocks_and_the_open_hours(
    ctx: ServerContext, tenant_a: TenantFixture, indexed: list[Record]
) -> None:
    flt = search.EventFilter(q="RARE.EXAMPLE")
    pages = walk(ctx, tenant_a, flt, 4)
    assert [u for page in pages for u in page] == expected(indexed, "rare.example")
    if not postgres(ctx):
        assert not used_blocks(ctx, tenant_a, flt)  # SQLite keeps the plain scan
        return
    with ctx.sessions.tenant(tenant_a.id) as session:
        regions = textblocks.regions(session, "rare.example", None, None)
        n_blocks = session.scalar(select(func.count()).select_from(EventTextBlock))
    assert regions is not None
    assert regions[0] == (CLOSED, None)  # the open hours, read raw, come first
    assert regions[-1] == (None, DAY0)  # and before the first day with blocks
    closed_hits = sum(1 for r in indexed if r.ts < CLOSED and "rare" in str(r))
    assert closed_hits <= len(regions) - 2 < n_blocks // 10  # few blocks of many


def test_a_late_record_is_found_at_once_and_its_day_rebuilt(
    ctx: ServerContext, tenant_a: TenantFixture, indexed: list[Record]
) -> None:
    late = record(5000, DAY0 + 3 * HOUR + 1, 0, "late.rare.example")
    seed(ctx, tenant_a, [late], seq=9000)
    flt = search.EventFilter(q="rare.example")
    records = [*indexed, late]
    assert [u for p in walk(ctx, tenant_a, flt, 7) for u in p] == expected(records, "rare.exa")
    if postgres(ctx):
        assert build(ctx, tenant_a).rebuilt == 1  # the late record's day, not the other
        assert build(ctx, tenant_a).rows == 0  # idempotent: nothing left to do
    assert [u for p in walk(ctx, tenant_a, flt, 7) for u in p] == expected(records, "rare.exa")


def test_new_hours_extend_the_blocks(
    ctx: ServerContext, tenant_a: TenantFixture, indexed: list[Record]
) -> None:
    if not postgres(ctx):
        return  # no blocks on SQLite (textblocks.regions)
    report = build(ctx, tenant_a, now=NOW + 2 * HOUR)
    assert report.rebuilt == 0 and report.rows == sum(r.ts >= CLOSED for r in indexed)
    flt = search.EventFilter(q="rare.example")
    assert [u for p in walk(ctx, tenant_a, flt, 5) for u in p] == expected(indexed, "rare.exa")


def test_a_false_positive_block_costs_time_never_a_row(
    ctx: ServerContext, tenant_a: TenantFixture, indexed: list[Record]
) -> None:
    with ctx.sessions.tenant(tenant_a.id) as session:  # every filter says "maybe" to any term
        session.execute(update(EventTextBlock).values(bloom=b"\xff" * 128))
    for needle in ("rare.example", "host13", "nowhere"):
        flt = search.EventFilter(q=needle)
        pages = walk(ctx, tenant_a, flt, 6)
        assert [u for p in pages for u in p] == expected(indexed, needle)


def test_retention_removes_the_blocks_with_the_rows(
    ctx: ServerContext, tenant_a: TenantFixture, indexed: list[Record]
) -> None:
    with ctx.sessions.system() as session:
        tenants.update_settings(
            session=session, tenant_id=tenant_a.id, changes={"retention_days": 1}
        )
    ctx.maintenance.clock = lambda: NOW + DAY
    ctx.maintenance.retention()  # a day after NOW: the first day goes
    with ctx.sessions.tenant(tenant_a.id) as session:
        days = set(session.scalars(select(EventTextBlock.day)))
    assert days <= {day_of(DAY0) + 1}
    kept = [r for r in indexed if r.ts >= DAY0 + DAY]
    flt = search.EventFilter(q="rare.example")
    assert [u for p in walk(ctx, tenant_a, flt, 9) for u in p] == expected(kept, "rare.exa")


def test_each_tenant_reads_only_its_own_blocks(
    ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture, indexed: list[Record]
) -> None:
    # B's rows sit in other hours than A's and never name the term.
    b_records = [record(i, DAY0 + 30.0 + i * 211.0, 0, f"b{i}.test") for i in range(600)]
    seed(ctx, tenant_b, b_records, seq=1)
    build(ctx, tenant_b)
    flt = search.EventFilter(q="rare.example")
    assert walk(ctx, tenant_b, flt, 10) == [[]]
    with ctx.sessions.tenant(tenant_b.id) as session:
        owners = set(session.scalars(select(EventTextBlock.tenant_id)))
        regions = textblocks.regions(session, "rare.example", None, None)
    assert owners <= {tenant_b.id}
    if not postgres(ctx):
        return
    assert owners == {tenant_b.id}
    assert regions == [(CLOSED, None), (None, DAY0)]  # none of A's blocks: only raw hours
    # Row-level security underneath, as the application role with B's tenant set.
    url = ctx.sessions.engine.url
    dsn = pg_url(str(url.database), APP_ROLE).replace("+psycopg", "")
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant_b.id),))
        seen = conn.execute("SELECT DISTINCT tenant_id FROM event_text_blocks").fetchall()
        assert seen == [(uuid.UUID(str(tenant_b.id)),)]
        conn.execute("SELECT set_config('app.tenant_id', '', true)")
        assert conn.execute("SELECT count(*) FROM event_text_blocks").fetchone() == (0,)


@given(st.text(ALPHABET + "cdefghIJ", max_size=12), st.data())
def test_a_case_insensitive_match_always_finds_its_grams(value: str, data: st.DataObject) -> None:
    """Whatever lowering a collation applies (Python's here), a term inside the lowered value
    has every gram among the value's: the folding can widen a filter, never hide a row."""
    low = value.lower()
    if len(low) < 3:
        return
    start = data.draw(st.integers(0, len(low) - 3))
    term = low[start : start + data.draw(st.integers(3, 6))]
    wanted = grams.term_grams(term)
    if wanted is None:
        assert not term.isascii()
        return
    held = grams.value_grams(value)
    assert wanted <= held
    bloom = grams.build_filter(held)
    assert grams.may_hold(bloom, wanted)
