"""Migrations run on SQLite and PostgreSQL from empty and from every earlier revision, and
leave a schema that matches the models."""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, Uuid, bindparam, inspect, select, text
from sqlalchemy.orm import Session

from a2z.server import models  # noqa: F401  (registers every table)
from a2z.server.events import service as events
from a2z.server.events.models import ENVELOPE_FIELDS, Event
from a2z.server.events.search import AddressMatch, EventFilter, ip_key, where
from a2z.server.store import migrate
from a2z.server.store.base import Base
from a2z.server.store.engine import make_engine
from tests.services import pg_url, scratch_database


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
        yield engine
        engine.dispose()
        return
    with scratch_database() as name:
        engine = make_engine(pg_url(name))
        yield engine
        engine.dispose()


def revisions(engine: Engine) -> list[str]:
    script = ScriptDirectory.from_config(migrate.alembic_config(engine))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def schema_drift(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": migrate.include_name})
        return list(compare_metadata(context, Base.metadata))


def test_upgrade_from_empty_matches_the_models(empty_engine: Engine) -> None:
    migrate.upgrade(empty_engine)
    assert schema_drift(empty_engine) == []


def test_upgrade_from_every_revision_and_back(empty_engine: Engine) -> None:
    for rev in revisions(empty_engine):
        migrate.upgrade(empty_engine, rev)
        migrate.upgrade(empty_engine)
        assert schema_drift(empty_engine) == [], f"drift after upgrading from {rev}"
        migrate.downgrade(empty_engine, "base")
        assert set(inspect(empty_engine).get_table_names()) <= {"alembic_version"}


def _start_process(url: str) -> None:
    """What each server process does first (run in a spawned child)."""
    from a2z.server.store.engine import open_store

    open_store(url, app_role="a2z_app", pool_size=1).dispose()


def test_processes_starting_together_migrate_once(empty_engine: Engine) -> None:
    """api, ingest and detect processes started at once each call ``open_store``: they take
    turns on a lock (PostgreSQL: an advisory lock; SQLite: a lock file beside the database), so
    none fails half-way through a migration another one is running."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    url = empty_engine.url.render_as_string(hide_password=False)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=4, mp_context=spawn) as pool:
        list(pool.map(_start_process, [url] * 4))  # re-raises the first failure
    with empty_engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    assert version == revisions(empty_engine)[-1]
    assert schema_drift(empty_engine) == []


def test_grants_wait_for_a_partition_change_in_flight() -> None:
    """A process starting (granting the app role on every table) while another creates an
    event partition must wait for it: concurrent GRANTs on the same tables fail in PostgreSQL
    with "tuple concurrently updated" (seen in CI when a restarted ingest worker met a running
    one's maintenance)."""
    import threading

    from a2z.server.store import partitions

    with scratch_database() as name:
        engine = make_engine(pg_url(name))
        try:
            migrate.upgrade(engine)
            migrate.ensure_app_role(engine, "a2z_app")
            granted = threading.Event()

            def start_process() -> None:
                migrate.ensure_app_role(engine, "a2z_app")
                granted.set()

            with engine.begin() as conn:
                partitions.ensure_days(conn, [partitions.day_of(0)], "a2z_app")
                starter = threading.Thread(target=start_process)
                starter.start()
                # Bounded wait: the grant is still queued behind the open partition change.
                assert not granted.wait(1.0)
            starter.join(30)
            assert granted.is_set()
        finally:
            engine.dispose()


def test_0006_keeps_stored_events_both_ways(empty_engine: Engine) -> None:
    record = {"_path": "dns", "ts": 1700000000.5, "uid": "C1", "id.orig_h": "10.0.0.1",
              "id.orig_p": 5353, "id.resp_h": "10.0.0.2", "id.resp_p": 53, "proto": "udp",
              "trans_id": 7, "query": "a.test", "answers": ["1.2.3.4"], "TTLs": None}  # fmt: skip
    tenant, agent = uuid.uuid4(), uuid.uuid4()
    migrate.upgrade(empty_engine, "0004")
    with empty_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO events (tenant_id, agent_id, boot_epoch, seq, idx, ts, path, uid, "
                "orig_h, orig_p, resp_h, resp_p, data, query) VALUES (:t, :a, 1, 1, 0, "
                "1700000000.5, 'dns', 'C1', '10.0.0.1', 5353, '10.0.0.2', 53, :d, 'a.test')"
            ).bindparams(bindparam("t", type_=Uuid()), bindparam("a", type_=Uuid())),
            {"t": tenant, "a": agent, "d": json.dumps(record)},
        )
    migrate.upgrade(empty_engine)
    with Session(empty_engine) as session:
        event = session.scalars(select(Event)).one()
        assert event.data == {k: v for k, v in record.items() if k not in ENVELOPE_FIELDS}
        assert events.record_of(event) == record and event.query == "a.test"
    migrate.downgrade(empty_engine, "0004")
    with empty_engine.connect() as conn:
        data = conn.execute(text("SELECT data FROM events")).scalar_one()
    assert json.loads(data) == record


def _index_sql(engine: Engine, name: str) -> str:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            sql = "SELECT indexdef FROM pg_indexes WHERE indexname = :n"
        else:
            sql = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :n"
        return str(conn.execute(text(sql), {"n": name}).scalar_one())


def test_0014_indexes_only_the_events_that_carry_each_string_and_back(
    empty_engine: Engine,
) -> None:
    migrate.upgrade(empty_engine, "0013")
    assert "IS NOT NULL" not in _index_sql(empty_engine, "ix_events_tenant_query")
    migrate.upgrade(empty_engine)
    for column in ("query", "host", "server_name"):
        sql = _index_sql(empty_engine, f"ix_events_tenant_{column}")
        assert f"WHERE {column} IS NOT NULL" in sql.replace("(", "").replace(")", ""), sql
        on = sql.split(" ON ", 1)[1]
        assert on[on.index("(") + 1 :].startswith("tenant_id"), sql  # the tenant still leads
        if empty_engine.dialect.name == "postgresql":
            assert "varchar_pattern_ops" in sql  # LIKE 'prefix%' under any collation
    migrate.downgrade(empty_engine, "0013")
    assert "IS NOT NULL" not in _index_sql(empty_engine, "ix_events_tenant_host")


def test_0018_keys_every_stored_batch_and_drops_the_event_key_both_ways(
    empty_engine: Engine,
) -> None:
    """Batches stored before the upgrade get their key (so a re-send still stores nothing),
    dated by their newest record; ``events`` loses its key index, and gets it back."""
    tenant, agent = uuid.uuid4(), uuid.uuid4()
    day = 19_675  # 2023-11-14
    rows = [(1, 0, day * 86_400 + 5.0), (1, 1, day * 86_400 + 86_399.5),  # across midnight
            (1, 2, (day + 1) * 86_400 + 1.0), (2, 0, day * 86_400 + 7.0)]  # fmt: skip
    migrate.upgrade(empty_engine, "0017")
    insert = text(
        "INSERT INTO events (tenant_id, agent_id, boot_epoch, seq, idx, ts, path, uid, orig_h, "
        "orig_p, resp_h, resp_p, data) VALUES (:t, :a, 3, :seq, :idx, :ts, 'conn', 'C', "
        "'10.0.0.1', 1, '10.0.0.2', 2, '{}')"
    ).bindparams(bindparam("t", type_=Uuid()), bindparam("a", type_=Uuid()))
    with empty_engine.begin() as conn:
        for seq, idx, ts in rows:
            conn.execute(insert, {"t": tenant, "a": agent, "seq": seq, "idx": idx, "ts": ts})
    migrate.upgrade(empty_engine)
    assert inspect(empty_engine).get_pk_constraint("events")["constrained_columns"] == []
    keys = text(
        "SELECT tenant_id, agent_id, boot_epoch, seq, day, events FROM event_batches ORDER BY seq"
    ).columns(tenant_id=Uuid(), agent_id=Uuid())
    with empty_engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(keys)] == [
            (tenant, agent, 3, 1, day + 1, 3),
            (tenant, agent, 3, 2, day, 1),
        ]
    migrate.downgrade(empty_engine, "0017")
    key = inspect(empty_engine).get_pk_constraint("events")["constrained_columns"]
    assert key == ["tenant_id", "agent_id", "boot_epoch", "seq", "idx", "ts"]
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM events")).scalar_one() == len(rows)
    assert "event_batches" not in inspect(empty_engine).get_table_names()


def test_0019_turns_hex_address_keys_into_their_bytes_and_back(empty_engine: Engine) -> None:
    """Keys stored as 32 hex digits become the 16 bytes ``ip_key`` gives now, in the same
    order, so a CIDR block over rows stored before the upgrade still finds them."""
    addresses = ["10.0.0.1", "10.0.1.9", "2001:db8::1", None]
    hex_keys = [None if a is None else f"{int(ipaddress.ip_address(a)):032x}" for a in addresses]
    hex_keys[:2] = [f"{0xFFFF << 32 | int(ipaddress.ip_address(a)):032x}" for a in addresses[:2]]
    migrate.upgrade(empty_engine, "0018")
    insert = text(
        "INSERT INTO events (tenant_id, agent_id, boot_epoch, seq, idx, ts, path, uid, orig_h, "
        "orig_p, resp_h, resp_p, data, orig_ip, resp_ip) VALUES (:t, :t, 1, 1, :idx, 5.0, "
        "'conn', 'C', 'h', 1, 'h', 2, '{}', :key, :key)"
    ).bindparams(bindparam("t", type_=Uuid()))
    with empty_engine.begin() as conn:
        for idx, key in enumerate(hex_keys):
            conn.execute(insert, {"t": uuid.uuid4(), "idx": idx, "key": key})
    migrate.upgrade(empty_engine)
    assert schema_drift(empty_engine) == []
    stored = text("SELECT orig_ip, resp_ip FROM events ORDER BY idx")
    with empty_engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(stored)]
        block = EventFilter(orig_h=AddressMatch.parse("10.0.0.0/23"))
        in_block = where(select(Event.idx), block, empty_engine.dialect.name).order_by(Event.idx)
        found = list(conn.execute(in_block).scalars())
    assert rows == [(ip_key(a), ip_key(a)) if a else (None, None) for a in addresses]
    assert found == [0, 1]
    migrate.downgrade(empty_engine, "0018")
    with empty_engine.connect() as conn:
        assert [r[0] for r in conn.execute(stored)] == hex_keys
