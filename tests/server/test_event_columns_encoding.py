"""The array insert's parameters (ADR 0021, update 2026-11-28): text columns joined into one
string split by the server, numbers packed in binary. Whatever the values, the rows stored are
those of the list parameters before and of SQLite's row path; the agent's progress is one
UPDATE with the ORM path's semantics."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.exc import DataError

from a2z.records import Batch, Conn, Dns, Http, Record
from a2z.server.agents import service as agents
from a2z.server.agents.models import Agent
from a2z.server.context import ServerContext
from a2z.server.events import service as events
from a2z.server.events.models import Event
from a2z.server.store import bulk
from tests.server.conftest import TenantFixture
from tests.services import pg_url, scratch_database

NOW = 1_790_000_000.0
US, RS = "\x1f", "\x1e"  # the separator and the NULL mark

# Any text PostgreSQL can hold, the separators and their neighbours made likely.
TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from([US, RS, "\x1d", "\x7f", "\\", '"', ",", "{", "}", " ", "é", "🦀"]),
        st.characters(exclude_characters="\x00", exclude_categories=("Cs",)),
    ),
    max_size=12,
)
SHORT = TEXT.filter(lambda s: len(s) <= 64)  # the VARCHAR(64) columns
INT4 = st.integers(-(2**31), 2**31 - 1)


@st.composite
def batches_of_records(draw: st.DrawFn) -> list[Record]:
    out: list[Record] = []
    for i in range(draw(st.integers(1, 6))):
        tup: dict[str, Any] = {
            "ts": NOW + draw(st.floats(0, 86_000, allow_nan=False)),
            "uid": draw(SHORT),
            "orig_h": draw(st.one_of(SHORT, st.just("10.0.0.1"), st.just("2001:db8::1"))),
            "orig_p": draw(INT4),
            "resp_h": draw(SHORT),
            "resp_p": draw(INT4),
        }
        kind = draw(st.sampled_from(["conn", "dns", "http"]))
        if kind == "conn":
            out.append(Conn(proto="tcp", history=draw(TEXT), **tup))
        elif kind == "dns":
            out.append(Dns(proto="udp", trans_id=i, query=draw(st.none() | TEXT), **tup))
        else:
            status = draw(st.none() | INT4)
            out.append(Http(host=draw(TEXT), uri=draw(TEXT), user_agent=draw(st.none() | TEXT),
                            status_code=status, **tup))  # fmt: skip
    return out


def stored(ctx: ServerContext, tenant: TenantFixture, seq: int) -> list[dict[str, Any]]:
    skip = {"tenant_id", "agent_id", "seq"}
    with ctx.sessions.tenant(tenant.id) as session:
        rows = session.scalars(select(Event).where(Event.seq == seq).order_by(Event.idx))
        return [
            {c.name: getattr(row, c.name) for c in Event.__table__.columns if c.name not in skip}
            for row in rows
        ]


def store(ctx: ServerContext, tenant: TenantFixture, seq: int, recs: list[Record]) -> int:
    batch = Batch(agent_id=str(tenant.agent_id), boot_epoch=1, seq=seq, sent_at=NOW, records=recs)
    with ctx.sessions.tenant(tenant.id) as session:
        return events.store_batch(session=session, agent_id=tenant.agent_id, batch=batch)


_seqs = itertools.count(1)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(recs=batches_of_records())
def test_stored_rows_are_the_row_paths_and_the_list_parameters(
    ctx: ServerContext, tenant_a: TenantFixture, recs: list[Record], monkeypatch_list: Any
) -> None:
    seq = next(_seqs)
    assert store(ctx, tenant_a, seq, recs) == len(recs)
    got = stored(ctx, tenant_a, seq)
    batch = Batch(agent_id=str(tenant_a.agent_id), boot_epoch=1, seq=seq, sent_at=NOW, records=recs)
    rows, _ = events.event_rows(tenant_a.id, tenant_a.agent_id, batch)
    assert got == [{k: v for k, v in row.items() if k in got[0]} for row in rows]
    assert [events.record_of(e) for e in _events(ctx, tenant_a, seq)] == [
        msgspec.to_builtins(r) for r in recs
    ]
    if ctx.sessions.engine.dialect.name == "postgresql":  # the parameters as lists: as before
        with monkeypatch_list():
            assert store(ctx, tenant_a, seq + 10**6, recs) == len(recs)
        assert stored(ctx, tenant_a, seq + 10**6) == got


def _events(ctx: ServerContext, tenant: TenantFixture, seq: int) -> list[Event]:
    with ctx.sessions.tenant(tenant.id) as session:
        return list(session.scalars(select(Event).where(Event.seq == seq).order_by(Event.idx)))


@pytest.fixture
def monkeypatch_list(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A context in which every column travels as a list parameter (the encoding before)."""
    from contextlib import contextmanager

    @contextmanager
    def lists() -> Any:
        with monkeypatch.context() as m:
            m.setattr(bulk, "column_parameter", lambda _kind, values: values)
            yield

    return lists


@pytest.fixture(scope="module")
def pg() -> Any:
    with (
        scratch_database() as name,
        psycopg.connect(pg_url(name).replace("+psycopg", ""), autocommit=True) as conn,
    ):
        bulk.register_packed_dumpers(conn.adapters)
        yield conn


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.none() | TEXT, min_size=1, max_size=8))
def test_joined_text_splits_back_into_exactly_its_values_or_is_refused(
    pg: psycopg.Connection[Any], values: list[str | None]
) -> None:
    joined = bulk.joined_text(values)
    if joined is None:  # refused: a value holds a separator, or the one value is ""
        assert values == [""] or any(v is not None and (US in v or RS in v) for v in values)
        return
    split = pg.execute("SELECT string_to_array(%b::text, chr(31), chr(30))", [joined]).fetchone()
    assert split is not None and split[0] == values


def test_separators_in_values_fall_back_to_the_list_parameter() -> None:
    for values in (["a\x1fb", "c"], ["\x1e", None], ["x\x1ey"], [""], ["a", 1]):
        assert bulk.joined_text(values) is None, values
        assert bulk.column_parameter("text", values) is values
    assert bulk.joined_text(["", ""]) == US
    assert bulk.joined_text([None]) == RS


@settings(max_examples=200, deadline=None)
@given(
    ints=st.lists(st.none() | st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=8),
    floats=st.lists(st.none() | st.floats(allow_nan=False), min_size=1, max_size=8),
)
def test_packed_numbers_read_back_as_the_same_values(
    pg: psycopg.Connection[Any], ints: list[int | None], floats: list[float | None]
) -> None:
    row = pg.execute(
        "SELECT %b::int8[], %b::float8[]",
        [bulk.column_parameter("int8", ints), bulk.column_parameter("float8", floats)],
    ).fetchone()
    assert row == (ints, floats)


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.none() | st.binary(max_size=20), min_size=1, max_size=8))
def test_packed_bytes_read_back_as_the_same_values(
    pg: psycopg.Connection[Any], keys: list[bytes | None]
) -> None:
    """The address keys' array (ADR 0028): any bytes, NULLs and empty values among them."""
    packed = bulk.column_parameter("bytea", keys)
    assert packed is not keys  # packed, not dumped element by element
    assert pg.execute("SELECT %b::bytea[]", [packed]).fetchone() == (keys,)


def test_bytea_packing_leaves_what_is_not_bytes_to_psycopg() -> None:
    assert bulk.packed_bytea([b"\x01", "text"]) is None
    assert bulk.packed_bytea([b"\x01", 7]) is None


def test_numbers_packing_cannot_carry_go_as_lists_and_are_refused_as_before(
    pg: psycopg.Connection[Any],
) -> None:
    too_big = [2**63, 1]
    assert bulk.packed_array("int8", too_big) is None
    assert bulk.column_parameter("int8", too_big) is too_big
    assert bulk.packed_array("int8", [1.5]) is None
    with pytest.raises(psycopg.DataError):
        pg.execute("SELECT %b::int8[]", [bulk.column_parameter("int8", too_big)])


def test_nul_in_a_typed_text_column_is_still_a_data_error(
    ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    rec = Conn(ts=NOW, uid="C\x00", orig_h="10.0.0.1", orig_p=1, resp_h="10.0.0.2", resp_p=2,
               proto="tcp")  # fmt: skip
    if ctx.sessions.engine.dialect.name == "sqlite":  # SQLite text holds NUL
        assert store(ctx, tenant_a, 1, [rec]) == 1
        return
    assert bulk.joined_text(["C\x00", "x"]) == "C\x00\x1fx"  # joined: the server refuses it
    with pytest.raises(DataError):
        store(ctx, tenant_a, 1, [rec])


def test_agent_progress_keeps_the_highest_seq_of_its_epoch_in_its_tenant_only(
    ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    def note(tenant: TenantFixture, agent: uuid.UUID, epoch: int, seq: int) -> None:
        with ctx.sessions.tenant(tenant.id) as session:
            agents.record_batch(session=session, agent_id=agent, boot_epoch=epoch, seq=seq)

    def progress(tenant: TenantFixture) -> tuple[Any, ...]:
        with ctx.sessions.tenant(tenant.id) as session:
            agent = session.get(Agent, (tenant.id, tenant.agent_id))
            assert agent is not None
            return agent.boot_epoch, agent.last_seq, agent.last_seen_at is not None

    assert progress(tenant_a) == (None, None, False)
    note(tenant_a, tenant_a.agent_id, 1, 5)
    assert progress(tenant_a) == (1, 5, True)
    note(tenant_a, tenant_a.agent_id, 1, 3)  # an older batch re-sent: the highest stays
    assert progress(tenant_a) == (1, 5, True)
    note(tenant_a, tenant_a.agent_id, 1, 9)
    assert progress(tenant_a) == (1, 9, True)
    note(tenant_a, tenant_a.agent_id, 2, 1)  # a new epoch restarts the sequence
    assert progress(tenant_a) == (2, 1, True)
    note(tenant_a, tenant_a.agent_id, 1, 12)  # spooled before the restart, stored late
    assert progress(tenant_a) == (2, 1, True)
    note(tenant_a, tenant_a.agent_id, 2, 4)
    assert progress(tenant_a) == (2, 4, True)
    note(tenant_a, tenant_b.agent_id, 3, 7)  # another tenant's agent: not reachable
    assert progress(tenant_b) == (None, None, False)
    note(tenant_a, uuid.uuid4(), 1, 1)  # no such agent: nothing to note
