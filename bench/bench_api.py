"""``make bench-api``: latency and throughput of authenticated API reads and writes.

Seeds a store in-process, starts the real server (``a2z server``) on it as a subprocess, and
drives it with closed-loop httpx clients. Two C load generators on the same reads are the
reference: h2load (nghttp2), whose per-request log gives the latencies the 200 clients actually
saw, and wrk, whose printed percentiles include its coordinated-omission correction (synthetic
samples added below every slow response, modelling clients that would have kept sending at the
run's mean rate) — so its p99 reads the stalls, not the typical client's tail.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import functools
import itertools
import math
import os
import random
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import psycopg

from a2z.records import Batch, Conn, Dns, Record
from a2z.server.agents import service as agents
from a2z.server.app import build_context
from a2z.server.config import Settings
from a2z.server.events import service as events
from a2z.server.tenants import service as tenants
from a2z.server.tenants.models import Role

PG_ADMIN_DSN = os.environ.get("A2Z_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
EMAIL = "owner@bench.test"
PASSWORD = "bench password, not a secret"  # a throwaway tenant's password
AGENTS = 20  # seeded agents: GET /agents returns them all on one page
EVENTS_PER_BATCH = 500

# --- stores -----------------------------------------------------------------------------------


@contextmanager
def sqlite_store(data_dir: Path) -> Iterator[str | None]:
    """The embedded default: ``a2z server`` with no ``--db`` (SQLite under the data dir)."""
    yield None


@contextmanager
def postgres_store(_data_dir: Path) -> Iterator[str | None]:
    """A fresh PostgreSQL database on the local server, dropped afterwards."""
    name = f"a2z_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    info = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    host, port = info.get("host", "127.0.0.1"), info.get("port", 5432)
    try:
        yield f"postgresql://{info.get('user', 'postgres')}@{host}:{port}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


STORES: dict[str, Callable[[Path], AbstractContextManager[str | None]]] = {
    "sqlite": sqlite_store,
    "postgresql": postgres_store,
}

# --- seeding ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seeded:
    """What the load needs to know about the seeded tenant."""

    agent_ids: list[uuid.UUID]
    events: int


def _records(seq: int, n: int) -> list[Record]:
    """``n`` records, three connections to one DNS query, with distinct uids and times."""
    base = 1_700_000_000.0 + seq * n
    out: list[Record] = []
    for i in range(n):
        uid, orig_h, orig_p = f"B{seq}-{i}", f"10.0.{i % 250}.{seq % 250}", 40000 + i % 20000
        if i % 4:
            out.append(
                Conn(
                    ts=base + i,
                    uid=uid,
                    orig_h=orig_h,
                    orig_p=orig_p,
                    resp_h="192.0.2.80",
                    resp_p=443,
                    proto="tcp",
                    conn_state="SF",
                    history="ShADadFf",
                )
            )
        else:
            out.append(
                Dns(
                    ts=base + i,
                    uid=uid,
                    orig_h=orig_h,
                    orig_p=orig_p,
                    resp_h="192.0.2.53",
                    resp_p=53,
                    proto="udp",
                    trans_id=i,
                    query=f"h{i}.example",
                )
            )
    return out


def seed(data_dir: Path, db_url: str | None, n_events: int) -> Seeded:
    """Create the tenant, its owner, agents and events through the services, in-process."""
    ctx = build_context(Settings(data_dir=data_dir, db_url=db_url, pool_size=1))
    try:
        with ctx.sessions.system() as session:
            tenant = tenants.create_tenant(session=session, name="bench")
        with ctx.sessions.tenant(tenant.id) as session:
            tenants.create_user(session=session, email=EMAIL, password=PASSWORD, role=Role.OWNER)
            ids = [agents.create(session=session, name=f"sensor-{i}").id for i in range(AGENTS)]
        stored = 0
        for seq in range(1, n_events // EVENTS_PER_BATCH + 1):
            batch = Batch(
                agent_id=str(ids[0]),
                boot_epoch=1,
                seq=seq,
                sent_at=0.0,
                records=_records(seq, EVENTS_PER_BATCH),
            )
            with ctx.sessions.tenant(tenant.id) as session:
                stored += events.store_batch(session=session, agent_id=ids[0], batch=batch)
        return Seeded(agent_ids=ids, events=stored)
    finally:
        ctx.sessions.engine.dispose()


def analyze(db_url: str) -> None:
    """Give the planner statistics, as autovacuum would within a minute of the seeding: without
    them PostgreSQL reads and sorts all 5,000 events for a 50-event page (a bitmap scan and a
    top-N sort, ~3.5 ms of the database's CPU per request instead of ~0.5)."""
    with psycopg.connect(db_url, autocommit=True) as owner:
        owner.execute("ANALYZE")


# --- the server -------------------------------------------------------------------------------


def free_port() -> int:
    """A port nothing listens on now (the server binds it moments later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_command(
    data_dir: Path,
    db_url: str | None,
    port: int,
    workers: int,
    page_ttl_ms: int | None = None,
    access_log: bool = True,
) -> list[str]:
    """``a2z server`` on ``port``; its agent gateway, where it has one, on a free port too.
    ``page_ttl_ms``: the page cache's ``--hot-read-ttl-ms`` (None: the server's default)."""
    a2z = [sys.executable, "-m", "a2z", "server"]
    cmd = [*a2z, "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)]
    if db_url:
        cmd += ["--db", db_url]
    usage = subprocess.run([*a2z, "--help"], capture_output=True, text=True, check=True).stdout
    if "--agent-listen" in usage:  # the default (8443) may be taken by another server
        cmd += ["--agent-listen", f"127.0.0.1:{free_port()}"]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    if page_ttl_ms is not None:
        cmd += ["--hot-read-ttl-ms", str(page_ttl_ms)]
    if not access_log:
        cmd += ["--no-access-log"]
    return cmd


@contextmanager
def running_server(
    data_dir: Path,
    db_url: str | None,
    workers: int = 1,
    page_ttl_ms: int | None = None,
    access_log: bool = True,
) -> Iterator[tuple[str, int]]:
    """``a2z server`` as a subprocess; yields its base URL and pid, stops it on exit."""
    port = free_port()
    cmd = server_command(data_dir, db_url, port, workers, page_ttl_ms, access_log)
    log = (data_dir / "server.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60 * workers
        log_path = data_dir / "server.log"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log_path.read_text()}")
            try:
                # Every worker must be up, not just the first to answer.
                started = log_path.read_text().count("Application startup complete")
                if (
                    started >= workers
                    and httpx.get(f"{base}/healthz", timeout=1).status_code == 200
                ):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer /healthz within {60 * workers} s")
            time.sleep(0.2)
        settle(proc.pid)
        yield base, proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def settle(pid: int, *, idle_share: float = 0.1, timeout: float = 120.0) -> None:
    """Wait until the server stops working on its own: after /healthz answers, the detect
    role still loads its anomaly library (river, numpy, scipy) in a thread for seconds, which
    would land in the first measured cell."""
    usage = ServerUsage(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = usage.cpu_seconds()
        time.sleep(1.0)
        if usage.cpu_seconds() - before < idle_share:
            return
    print(f"server still busy after {timeout:.0f} s; measuring anyway", file=sys.stderr)


def login(base: str) -> str:
    resp = httpx.post(f"{base}/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
    resp.raise_for_status()
    token: str = resp.json()["access_token"]
    return token


def prime(base: str, token: str, seeded: Seeded, workers: int) -> None:
    """Present the credential on each read a few times per worker, each on a new connection (the
    kernel spreads them over the workers): a dashboard's credential is verified once, then
    cached, and the first cell should not measure 200 clients all presenting a new one."""
    headers = {"Authorization": f"Bearer {token}"}
    for op in operations(seeded):
        if op.kind == "read":
            _method, path, _body = op.request(random.Random(0))
            for _ in range(10 * workers):
                httpx.get(base + path, headers=headers).raise_for_status()


# --- load -------------------------------------------------------------------------------------

EVENTS_PATH = "/api/v1/events?limit=50"
# An analyst's search: one record type; the seeded DNS records are a quarter of the events.
SEARCH_PATH = "/api/v1/events?type=dns&limit=50"
Request = tuple[str, str, dict[str, object] | None]  # method, path, JSON body


@dataclass(frozen=True, slots=True)
class Operation:
    """One benchmarked request shape; ``request`` draws method, path and body per call."""

    name: str
    kind: str  # read or write
    request: Callable[[random.Random], Request]


def operations(seeded: Seeded) -> list[Operation]:
    def events_page(_rng: random.Random) -> Request:
        return "GET", EVENTS_PATH, None

    def search_page(_rng: random.Random) -> Request:
        return "GET", SEARCH_PATH, None

    def agents_page(_rng: random.Random) -> Request:
        return "GET", "/api/v1/agents", None

    def new_enrollment_token(_rng: random.Random) -> Request:
        return "POST", "/api/v1/enrollment-tokens", {"ttl_seconds": 600, "uses": 1}

    def rename_agent(rng: random.Random) -> Request:
        agent = rng.choice(seeded.agent_ids)
        return "PATCH", f"/api/v1/agents/{agent}", {"name": f"sensor-{rng.randrange(10**6)}"}

    return [
        Operation("GET /events?limit=50", "read", events_page),
        Operation("GET /events?type=dns", "read", search_page),
        Operation("GET /agents", "read", agents_page),
        Operation("POST /enrollment-tokens", "write", new_enrollment_token),
        Operation("PATCH /agents/{id}", "write", rename_agent),
    ]


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: a (store, client, operation, concurrency) measurement."""

    store: str
    client: str  # httpx (ours), h2load or wrk (the C references)
    op: str
    concurrency: int
    requests: int  # completed inside the measured window, errors included
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # transport errors and 4xx/5xx answers
    server_cpu: float = math.nan  # server processes' CPU over the run, % of one core
    db_cpu: float = math.nan  # PostgreSQL backends serving it, % of one core (nan on SQLite)
    load1: float = math.nan  # host 1-minute load average at the end (2 cores: 2.0 is full)
    workers: int = 1  # API processes (a2z server --workers)
    page_ttl_ms: int | None = None  # the server's --hot-read-ttl-ms (None: its default)
    client_cpu: float = math.nan  # the load generator's CPU over the run, % of one core

    @property
    def cpu_ms_per_request(self) -> float:
        """Server CPU per request: the cost that does not depend on how busy the host is."""
        return 10 * self.server_cpu / self.rps if self.rps else math.nan

    @property
    def client_ms_per_request(self) -> float:
        """The load generator's CPU per request (httpx: this process; wrk: its process)."""
        return 10 * self.client_cpu / self.rps if self.rps else math.nan

    @property
    def db_ms_per_request(self) -> float:
        """The database's CPU per request (PostgreSQL; SQLite runs inside the server)."""
        return 10 * self.db_cpu / self.rps if self.rps else math.nan


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def drive(
    base: str,
    token: str,
    op: Operation,
    *,
    store: str,
    concurrency: int,
    warmup: float,
    duration: float,
) -> Row:
    """``concurrency`` closed-loop clients, each sending its next request when one returns.

    Each client has its own ``AsyncClient`` holding one keep-alive connection: one shared
    pool of ``concurrency`` connections costs httpcore a scan of every connection per request
    (83 req/s on ``/healthz`` at 200, against 725 with a client each). Requests that complete
    inside the measured window count; the warm-up's do not.
    """
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    start = end = 0.0  # set once every client exists

    async def client(seed: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        rng = random.Random(seed)
        while (t0 := loop.time()) < end:
            method, path, body = op.request(rng)
            try:
                resp = await http.request(method, path, json=body)
                ok = resp.status_code < 400
            except httpx.HTTPError:
                ok = False
            t1 = loop.time()
            if start <= t1 <= end:
                if ok:
                    latencies.append((t1 - t0) * 1000)
                else:
                    errors += 1

    headers = {"Authorization": f"Bearer {token}"}
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    tls = ssl.create_default_context()  # loaded once: each client would load the CA bundle
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=base, headers=headers, limits=one, timeout=60, verify=tls
                )
            )
            for _ in range(concurrency)
        ]
        start = loop.time() + warmup
        end = start + duration
        async with asyncio.TaskGroup() as tg:
            for i, http in enumerate(clients):
                tg.create_task(client(i, http))
    latencies.sort()
    n = len(latencies) + errors
    return Row(
        store,
        "httpx",
        op.name,
        concurrency,
        n,
        n / duration,
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
        errors,
    )


_WRK_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(
    base: str, token: str, op: Operation, *, store: str, concurrency: int, duration: float
) -> Row:
    """wrk (C, epoll) as the reference load generator: same route, header and concurrency."""
    threads = min(concurrency, os.cpu_count() or 1)
    cmd = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{round(duration)}s"]
    cmd += ["--latency", "--timeout", "60s", "-H", f"Authorization: Bearer {token}"]
    _method, path, _body = op.request(random.Random(0))
    out = subprocess.run([*cmd, base + path], check=True, capture_output=True, text=True)
    text = out.stdout
    pct = {q: float(v) * _WRK_UNITS[u] for q, v, u in _WRK_LATENCY.findall(text)}
    total = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", text)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if not total or set(pct) != {"50", "99"}:
        raise RuntimeError(f"cannot parse wrk output:\n{text}")
    elapsed = float(total.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[total.group(3)]
    errors = int(bad.group(1)) if bad else 0
    errors += sum(int(g) for g in sock.groups()) if sock else 0
    n = int(total.group(1))
    return Row(
        store,
        "wrk",
        op.name,
        concurrency,
        n,
        n / elapsed,
        pct["50"],
        pct["99"],
        errors,
    )


def run_h2load(
    base: str, token: str, op: Operation, *, store: str, concurrency: int, duration: float
) -> Row:
    """h2load (C, HTTP/1.1, closed loop like the httpx clients): p50/p99 from its log of every
    request of the measured window, raw — no correction, unlike wrk's printed percentiles."""
    threads = min(concurrency, os.cpu_count() or 1)
    _method, path, _body = op.request(random.Random(0))
    with tempfile.NamedTemporaryFile(prefix="a2z-h2load-", suffix=".tsv") as log:
        cmd = ["h2load", "--h1", "-t", str(threads), "-c", str(concurrency)]
        cmd += ["-D", str(round(duration)), "--warm-up-time", "1", "--log-file", log.name]
        cmd += ["-H", f"Authorization: Bearer {token}", base + path]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        # Columns: start (µs since the epoch), HTTP status, µs until the end of the response.
        rows = [line.split("\t") for line in Path(log.name).read_text().splitlines()]
    failed = re.search(r"requests: .* (\d+) failed, (\d+) errored, (\d+) timeout", out)
    if not failed or not rows:
        raise RuntimeError(f"cannot parse h2load output:\n{out}")
    latencies = sorted(int(r[2]) / 1000 for r in rows)
    # Status 0: a request begun in the warm-up and answered in the measured window (h2load
    # counts it as succeeded; seen once per run at most, in its first milliseconds).
    statuses = collections.Counter(r[1] for r in rows if r[1][0] not in "02")
    errors = sum(statuses.values()) + sum(int(g) for g in failed.groups())
    if errors:
        print(f"h2load {op.name}: {failed.group(0)}; non-2xx {dict(statuses)}", file=sys.stderr)
    return Row(
        store,
        "h2load",
        op.name,
        concurrency,
        len(rows),
        len(rows) / duration,
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
        errors,
    )


class ServerUsage:
    """CPU the server (all its threads, and its worker processes) used while a measurement ran,
    and on PostgreSQL the CPU of the database's backends serving it (a read's cost includes
    the database's work: on this 2-core host it competes for the same cores)."""

    def __init__(self, pid: int, database: str | None = None) -> None:
        self._parent = psutil.Process(pid)
        self._database = database

    def _server(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return [self._parent, *self._parent.children(recursive=True)]
        return []

    def _backends(self) -> list[psutil.Process]:
        if self._database is None:
            return []
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            pids = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (self._database,),
            ).fetchall()
        procs = []
        for (backend,) in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                procs.append(psutil.Process(backend))
        return procs

    @staticmethod
    def _times(procs: list[psutil.Process]) -> dict[int, float]:
        out = {}
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = proc.cpu_times()
                out[proc.pid] = t.user + t.system
        return out

    def cpu_seconds(self) -> float:
        return sum(self._times(self._server()).values())

    def around(self, measure: Callable[[], Row]) -> Row:
        """Run ``measure`` and add the server's and the database's CPU share and the host load
        to its row. A process that starts during the run counts all its CPU."""
        server0, db0 = self._times(self._server()), self._times(self._backends())
        client0 = _client_seconds()
        wall0 = time.monotonic()
        row = measure()
        wall = time.monotonic() - wall0
        server1, db1 = self._times(self._server()), self._times(self._backends())
        server = sum(t - server0.get(pid, 0.0) for pid, t in server1.items())
        db = sum(t - db0.get(pid, 0.0) for pid, t in db1.items())
        return dataclasses.replace(
            row,
            server_cpu=100 * server / wall,
            db_cpu=100 * db / wall if self._database else math.nan,
            load1=os.getloadavg()[0],
            client_cpu=100 * (_client_seconds() - client0) / wall,
        )


def _client_seconds() -> float:
    """CPU of this process (the httpx clients) and of its finished children (wrk, waited for
    inside the cell; the server is still running, so it does not count here)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextmanager
def profiling(pid: int, out: Path | None, seconds: float) -> Iterator[None]:
    """Sample the server (and its workers) with py-spy (raw collapsed stacks) while the block
    runs."""
    if out is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    cmd = [spy, "record", "--pid", str(pid), "--duration", str(round(seconds)), "--gil"]
    cmd += ["--subprocesses"]
    cmd += ["--format", "raw", "--output", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.wait(timeout=seconds + 30)


# Where a profiled request's GIL time goes. A sample belongs to the first phase found walking
# from the root of its stack, else to the innermost frame that names a layer.
PHASES = {
    "auth (get_principal)": re.compile(r"^get_principal "),
    "route handler": re.compile(r"^(list_events|list_agents) "),
    "response: pydantic + JSON": re.compile(r"^(serialize_response|_prepare_response_content) "),
}
LAYERS = {
    "access log": re.compile(r"logging"),
    "threadpool hand-off": re.compile(
        r"to_thread|worker_thread|WorkerThread|threading\.py|queue\.py"
    ),
    "FastAPI routing + dependencies": re.compile(
        r"fastapi/(routing|dependencies)|starlette/routing"
    ),
    "middleware": re.compile(r"[Mm]iddleware|_exception_handler"),
    "uvicorn HTTP": re.compile(r"uvicorn/protocols"),
}
DATABASE = re.compile(r"sqlalchemy/|psycopg|sqlite3")


def profile_breakdown(path: Path) -> dict[str, float]:
    """Shares of py-spy's raw samples by phase (split into database and other) and layer."""
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        phase = next((p for f in frames for p, rx in PHASES.items() if rx.search(f)), None)
        if phase is not None:
            if not phase.startswith("response"):
                db = any(DATABASE.search(f) for f in frames)
                phase += ": SQLAlchemy + driver" if db else ": other"
            key = phase
        else:
            inner = (next((k for k, rx in LAYERS.items() if rx.search(f)), None) for f in frames)
            key = next((k for k in reversed(list(inner)) if k), "event loop, other")
        counts[key] = counts.get(key, 0) + int(n)
    total = sum(counts.values()) or 1
    return {k: v / total for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


# --- the run ----------------------------------------------------------------------------------


def bench_store(store: str, args: argparse.Namespace) -> list[Row]:
    """Seed a fresh store, start the server on it, and measure."""
    with (
        tempfile.TemporaryDirectory(prefix=f"a2z-bench-{store}-") as tmp,
        STORES[store](Path(tmp)) as db_url,
    ):
        t0 = time.monotonic()
        seeded = seed(Path(tmp), db_url, args.events)
        if db_url:
            analyze(db_url)
        took = time.monotonic() - t0
        print(
            f"[{store}] seeded {seeded.events} events, {AGENTS} agents in {took:.1f} s",
            file=sys.stderr,
        )
        rows: list[Row] = []
        for workers, ttl in itertools.product(args.workers, args.page_ttl_ms or [None]):
            with running_server(Path(tmp), db_url, workers, ttl, not args.no_access_log) as (
                base,
                pid,
            ):
                database = db_url.rsplit("/", 1)[1] if db_url else None
                cells = measure(store, base, pid, seeded, args, workers, database, ttl)
                rows += [dataclasses.replace(r, page_ttl_ms=ttl) for r in cells]
        return rows


def measure(
    store: str,
    base: str,
    pid: int,
    seeded: Seeded,
    args: argparse.Namespace,
    workers: int,
    database: str | None = None,
    page_ttl_ms: int | None = None,
) -> list[Row]:
    """Every operation at every concurrency with httpx, then wrk on the events page."""
    token = login(base)
    prime(base, token, seeded, workers)
    usage = ServerUsage(pid, database)
    rows: list[Row] = []

    def report(row: Row) -> None:
        row = dataclasses.replace(row, workers=workers, page_ttl_ms=page_ttl_ms)
        rows.append(row)
        print(f"[{store}] {format_row(row)}", file=sys.stderr, flush=True)

    ops = [op for op in operations(seeded) if op.kind == "read" or not args.reads_only]
    for op, conc in itertools.product(ops, args.concurrency):
        prof = None
        if args.profile and op.kind == "read" and conc == max(args.concurrency):
            slug = re.sub(r"[^a-z]+", "-", op.name.lower()).strip("-")
            ttl = "" if page_ttl_ms is None else f"-ttl{page_ttl_ms}"
            prof = args.profile / f"{store}-w{workers}{ttl}-{slug}-{conc}.txt"
        load = drive(
            base,
            token,
            op,
            store=store,
            concurrency=conc,
            warmup=args.warmup,
            duration=args.duration,
        )
        with profiling(pid, prof, args.warmup + args.duration):
            report(usage.around(functools.partial(asyncio.run, load)))
    reads = [op for op in operations(seeded) if op.kind == "read"]
    for tool, run in (("h2load", run_h2load), ("wrk", run_wrk)):
        if not shutil.which(tool):
            print(
                f"{tool} not found (see the README's system tools): no {tool} rows", file=sys.stderr
            )
            continue
        for op, conc in itertools.product(reads, args.concurrency):
            ref = functools.partial(
                run, base, token, op, store=store, concurrency=conc, duration=args.duration
            )
            report(usage.around(ref))
    return rows


HEADER = (
    f"{'store':<10} {'proc':>4} {'ttl':>5} {'client':<6} {'op':<24} {'conc':>5} {'requests':>9} "
    f"{'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'srv cpu%':>8} {'cpu ms/req':>10} "
    f"{'db cpu%':>7} {'db ms/req':>9} {'cli ms/req':>10} {'load1':>5}"
)


def format_row(r: Row) -> str:
    ttl = "-" if r.page_ttl_ms is None else str(r.page_ttl_ms)
    return (
        f"{r.store:<10} {r.workers:>4} {ttl:>5} {r.client:<6} {r.op:<24} {r.concurrency:>5} "
        f"{r.requests:>9} {r.rps:>8.0f} {r.p50_ms:>8.1f} {r.p99_ms:>8.1f} {r.errors:>7} "
        f"{r.server_cpu:>8.0f} {r.cpu_ms_per_request:>10.2f} "
        f"{r.db_cpu:>7.0f} {r.db_ms_per_request:>9.2f} {r.client_ms_per_request:>10.3f} "
        f"{r.load1:>5.1f}"
    )


def summarise(rows: list[Row]) -> None:
    """The table, the client-overhead ratios and the verdict on issue 4's read target."""
    print()
    print(HEADER)
    for r in rows:
        print(format_row(r))
    ours = {
        (r.store, r.workers, r.page_ttl_ms, r.op, r.concurrency): r
        for r in rows
        if r.client == "httpx"
    }
    refs = [r for r in rows if r.client == "h2load"]
    if refs:
        print()
        print("client overhead: httpx req/s / h2load req/s")
        for ref in refs:
            mine = ours[(ref.store, ref.workers, ref.page_ttl_ms, ref.op, ref.concurrency)]
            print(
                f"  {ref.store:<10} x{ref.workers} ttl {ref.page_ttl_ms} {ref.op:<24} "
                f"conc {ref.concurrency:>4}: "
                f"{mine.rps:6.0f} / "
                f"{ref.rps:6.0f} = {mine.rps / ref.rps:.2f}"
            )
    print()
    print("target (issue 4): reads at 200 concurrent clients with p99 < 50 ms")
    print("  (judged on h2load's raw latencies; httpx rows are bound by the client's own CPU,")
    print("   wrk's p99 includes its coordinated-omission correction: shown for reference)")
    for r in rows:
        if r.concurrency == 200 and r.op.startswith("GET"):
            met = r.p99_ms < 50 and r.errors == 0
            verdict = ("met" if met else "NOT met") if r.client == "h2load" else "(reference)"
            print(
                f"  {r.store:<10} x{r.workers} ttl {r.page_ttl_ms} {r.client:<6} {r.op:<24} "
                f"p99 {r.p99_ms:7.1f} ms: {verdict}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_api", description=__doc__)
    parser.add_argument("--stores", nargs="+", choices=sorted(STORES), default=list(STORES))
    parser.add_argument("--concurrency", nargs="+", type=int, default=[50, 200])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--events", type=int, default=5000, help="events to seed")
    parser.add_argument(
        "--workers", nargs="+", type=int, default=[1, 2], help="server processes (a2z --workers)"
    )
    parser.add_argument("--profile", type=Path, help="write py-spy stacks of read runs here")
    parser.add_argument(
        "--page-ttl-ms",
        nargs="+",
        type=int,
        help="run the server once per value of --hot-read-ttl-ms (0: page cache off; "
        "default: the server's own default only)",
    )
    parser.add_argument("--reads-only", action="store_true", help="leave out the write cells")
    parser.add_argument(
        "--no-access-log", action="store_true", help="start the server with --no-access-log"
    )
    args = parser.parse_args(argv)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    for store in args.stores:
        rows += bench_store(store, args)
    summarise(rows)
    for path in sorted(args.profile.glob("*.txt")) if args.profile else []:
        print(f"\nGIL time by stage, {path.name} (py-spy --gil)")
        for stage, share in profile_breakdown(path).items():
            print(f"  {share:6.1%}  {stage}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
