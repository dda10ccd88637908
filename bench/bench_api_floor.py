"""The floor for issue 4's read target on this machine: what the events page costs without a
framework or an ORM (``api_floor_app.py`` under uvicorn), driven by wrk at 200 connections.

``python bench/bench_api_floor.py [--modes ...] [--workers 1 2] [--duration 5]``
(``FLOOR_THREADS=N`` in the environment sizes the thread pool of the ``*_thread`` modes). Seeds the
same store as ``bench_api.py`` (5,000 events; PostgreSQL analysed), then for each mode and
worker count prints req/s, p50/p99 and the CPU per request of the server, of PostgreSQL's
backends and of wrk. Modes: ``hello`` (HTTP only: authentication, a fixed body), ``sqlite_loop``
(the query on the event loop), ``sqlite_thread``, ``pg_thread`` (sync psycopg in a thread
pool), ``pg_async`` (async psycopg on the loop).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psutil
import psycopg

from bench_api import PG_ADMIN_DSN, analyze, postgres_store, seed

TOKEN = "floor-token"
MODES = ("hello", "sqlite_loop", "sqlite_thread", "pg_thread", "pg_async")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def backends(database: str | None) -> list[psutil.Process]:
    if database is None:
        return []
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        pids = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return [psutil.Process(pid) for (pid,) in pids]


def cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = proc.cpu_times()
            total += t.user + t.system
    return total


def wrk(url: str, duration: float) -> list[str]:
    return ["wrk", "-t2", "-c200", f"-d{round(duration)}s", "--latency", "--timeout", "60s",
            "-H", f"Authorization: Bearer {TOKEN}", url]  # fmt: skip


def run(
    mode: str, workers: int, dsn: str, tenant: str, database: str | None, duration: float
) -> str:
    port = free_port()
    env = dict(os.environ, FLOOR_MODE=mode, FLOOR_DB=dsn, FLOOR_TENANT=tenant, FLOOR_TOKEN=TOKEN)
    env["PYTHONPATH"] = str(Path(__file__).parent)
    cmd = [sys.executable, "-m", "uvicorn", "api_floor_app:app", "--port", str(port)]
    cmd += ["--no-access-log", "--http", "httptools", "--loop", "uvloop", "--log-level", "warning"]
    cmd += ["--workers", str(workers)] if workers > 1 else []
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen(cmd, env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).is_success:
                    break
            time.sleep(0.1)
        subprocess.run(wrk(url, 1), capture_output=True, check=True)  # open every pool
        parent = psutil.Process(server.pid)
        procs, db = [parent, *parent.children(recursive=True)], backends(database)
        server0, db0 = cpu(procs), cpu(db)
        load = subprocess.Popen(wrk(url, duration), stdout=subprocess.PIPE, text=True)
        client = psutil.Process(load.pid)
        client_cpu = 0.0
        while load.poll() is None:  # wrk's own CPU, read while it still exists
            with contextlib.suppress(psutil.NoSuchProcess):
                t = client.cpu_times()
                client_cpu = t.user + t.system
            server1, db1 = cpu(procs), cpu(db)
            time.sleep(0.2)
        out = load.stdout.read() if load.stdout else ""
    finally:
        server.terminate()
        server.wait()
    total = re.search(r"(\d+) requests in", out)
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    if total is None or set(pct) != {"50", "99"}:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    n = int(total.group(1))
    server_s, db_s = server1 - server0, db1 - db0
    return (
        f"{mode:<14} {workers:>4} {n / duration:>8.0f} {pct['50']:>9} {pct['99']:>9} "
        f"{1e3 * server_s / n:>10.3f} {1e3 * db_s / n:>8.3f} {1e3 * client_cpu / n:>8.3f} "
        f"{100 * server_s / duration:>7.0f} {os.getloadavg()[0]:>5.1f}"
    )


HEADER = (
    f"{'mode':<14} {'proc':>4} {'req/s':>8} {'p50':>9} {'p99':>9} {'srv ms/req':>10} "
    f"{'db ms/req':>8} {'wrk ms/req':>8} {'srv cpu%':>7} {'load1':>5}"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_api_floor", description=__doc__)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory(prefix="a2z-floor-") as tmp:
        if any(not m.startswith("pg") for m in args.modes):
            seed(Path(tmp), None, 5000)
            path = str(Path(tmp) / "a2z.db")
            with contextlib.closing(sqlite3.connect(path)) as conn:
                tenant = str(uuid.UUID(conn.execute("SELECT id FROM tenants").fetchone()[0]))
            for mode in [m for m in args.modes if not m.startswith("pg")]:
                for workers in args.workers:
                    print(run(mode, workers, path, tenant, None, args.duration), flush=True)
        if any(m.startswith("pg") for m in args.modes):
            with postgres_store(Path(tmp)) as url:
                assert url is not None
                seed(Path(tmp) / "pg", url, 5000)
                analyze(url)
                with psycopg.connect(url) as conn:
                    row = conn.execute("SELECT id FROM tenants").fetchone()
                    tenant = str(row[0]) if row else ""
                database = url.rsplit("/", 1)[1]
                app_dsn = url.replace("//postgres@", "//a2z_app@")
                for mode in [m for m in args.modes if m.startswith("pg")]:
                    for workers in args.workers:
                        print(run(mode, workers, app_dsn, tenant, database, args.duration))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
