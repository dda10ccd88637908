"""The floor under ``GET /api/v1/events?limit=50``: the same authenticated, tenant-scoped read
as a bare ASGI app, no framework, no ORM (served by ``bench_api_floor.py``).

Authentication is a dictionary lookup of the credential's SHA-256 (what a principal-cache hit
costs); the read is the events page as the server runs it: on PostgreSQL as the unprivileged
role under row-level security with ``set_config('app.tenant_id', ..., true)`` in the
transaction, then the page's anomaly scores; JSON by msgspec. ``FLOOR_MODE`` picks the variant.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import sqlite3
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import psycopg
from psycopg.types.json import set_json_loads

MODE = os.environ.get("FLOOR_MODE", "hello")
DSN = os.environ.get("FLOOR_DB", "")
TENANT = uuid.UUID(os.environ.get("FLOOR_TENANT", str(uuid.UUID(int=0))))
TOKEN = hashlib.sha256(os.environ.get("FLOOR_TOKEN", "floor-token").encode()).digest()
PRINCIPALS = {TOKEN: TENANT}

EVENTS = (
    "SELECT ts, agent_id, boot_epoch, seq, idx, path, uid, orig_h, orig_p, resp_h, resp_p, data "
    "FROM events WHERE tenant_id = %s "
    "ORDER BY ts DESC, agent_id DESC, boot_epoch DESC, seq DESC, idx DESC LIMIT 51"
)
SCORES = "SELECT uid, score FROM anomaly_scores WHERE tenant_id = %s AND uid = ANY(%s)"
POOL = 10

_encode = msgspec.json.Encoder().encode
# AnyIO's default pool for sync handlers has 40 threads; FLOOR_THREADS tries other sizes.
_threads = ThreadPoolExecutor(int(os.environ.get("FLOOR_THREADS", "40")))
_HELLO = _encode({"items": [], "next_cursor": None})


def page(rows: list[Any], scored: dict[str, float]) -> bytes:
    """The response body, shaped as the API's events page."""
    items = []
    for r in rows[:50]:
        data = msgspec.json.decode(r[11]) if isinstance(r[11], str) else r[11]
        item = {
            "_path": r[5], "ts": r[0], "uid": r[6], "id.orig_h": r[7], "id.orig_p": r[8],
            "id.resp_h": r[9], "id.resp_p": r[10], **data,
        }  # fmt: skip
        if r[5] == "conn" and r[6] in scored:
            item["anomaly_score"] = scored[r[6]]
        items.append(item)
    return _encode({"items": items, "next_cursor": "next" if len(rows) > 50 else None})


class AsyncPool:
    """``POOL`` async psycopg connections (opened on first use)."""

    def __init__(self) -> None:
        self._idle: asyncio.Queue[psycopg.AsyncConnection[Any]] | None = None

    async def read(self, tenant: uuid.UUID) -> bytes:
        if self._idle is None:
            self._idle = asyncio.Queue()
            for _ in range(POOL):
                conn = await psycopg.AsyncConnection.connect(DSN)
                set_json_loads(msgspec.json.decode, conn)
                self._idle.put_nowait(conn)
        conn = await self._idle.get()
        try:
            async with conn.transaction():
                await conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))
                rows = await (await conn.execute(EVENTS, (tenant,))).fetchall()
                uids = [r[6] for r in rows if r[5] == "conn"]
                scored = dict(await (await conn.execute(SCORES, (tenant, uids))).fetchall())
        finally:
            self._idle.put_nowait(conn)
        return page(rows, scored)


class SyncPool:
    """``POOL`` sync psycopg connections, used from the thread pool."""

    def __init__(self) -> None:
        self._idle: queue.Queue[psycopg.Connection[Any]] | None = None
        self._lock = threading.Lock()

    def read(self, tenant: uuid.UUID) -> bytes:
        with self._lock:
            if self._idle is None:
                self._idle = queue.Queue()
                for _ in range(POOL):
                    conn = psycopg.connect(DSN)
                    set_json_loads(msgspec.json.decode, conn)
                    self._idle.put(conn)
        conn = self._idle.get()
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))
                rows = conn.execute(EVENTS, (tenant,)).fetchall()
                uids = [r[6] for r in rows if r[5] == "conn"]
                scored = dict(conn.execute(SCORES, (tenant, uids)).fetchall())
        finally:
            self._idle.put(conn)
        return page(rows, scored)


_local = threading.local()


def sqlite_read(tenant: uuid.UUID) -> bytes:
    """The same read on the SQLite file (SQLAlchemy's Uuid stores 32 hex digits there)."""
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = sqlite3.connect(DSN, check_same_thread=False)
    rows = conn.execute(EVENTS.replace("%s", "?"), (tenant.hex,)).fetchall()
    uids = [r[6] for r in rows if r[5] == "conn"]
    marks = ",".join("?" * len(uids))
    sql = f"SELECT uid, score FROM anomaly_scores WHERE tenant_id = ? AND uid IN ({marks})"
    scored = dict(conn.execute(sql, (tenant.hex, *uids)).fetchall()) if uids else {}
    return page(rows, scored)


_async_pool, _sync_pool = AsyncPool(), SyncPool()


async def body_for(tenant: uuid.UUID) -> bytes:
    loop = asyncio.get_running_loop()
    if MODE == "pg_async":
        return await _async_pool.read(tenant)
    if MODE == "pg_thread":
        return await loop.run_in_executor(_threads, _sync_pool.read, tenant)
    if MODE == "sqlite_loop":  # blocks the event loop for the query: the cheapest, not fair
        return sqlite_read(tenant)
    if MODE == "sqlite_thread":
        return await loop.run_in_executor(_threads, sqlite_read, tenant)
    return _HELLO


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    authorization = dict(scope["headers"]).get(b"authorization", b"")
    tenant = PRINCIPALS.get(hashlib.sha256(authorization[len(b"Bearer ") :]).digest())
    if tenant is None:
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = await body_for(tenant)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
