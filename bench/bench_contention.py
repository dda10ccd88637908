"""``make bench-ingest`` (contention part): does a tenant at 10x its quota hurt another tenant?

The deployment as it runs: by default ``a2z server`` on PostgreSQL in one process (REST API,
mutual-TLS agent gateway, in-process bus, ingest worker); with ``--bus`` the roles split as
docs/operating.md ("Scaling out") describes: a private nats-server with JetStream, one
``a2z server --role api`` (REST), one ``a2z server --role gateway`` (the agents' mutual-TLS
channel, publishing to JetStream; at ``--gateway-nice`` niceness, default 10) and
``--ingest-workers`` ``a2z server --role ingest`` processes (at ``--ingest-nice``, default 10),
as docs/operating.md advises where they share the api's cores; the scratch database has the
``prioritize`` extension when the server offers it, so their PostgreSQL backends follow them
(ADR 29, store/backend_priority.py); ``--gateway-with-api``
runs the gateway in the api process instead (the layout before ADR 20). Each tenant's agent runs
in its own process shipping batches over the real channel; an analyst of tenant B searches
through the REST API with an API key. Tenant B's agent sends at a steady rate (``--b-rate``
events/s, paced, as a sensor does); tenant A, limited to ``--quota`` events/s, offers ten times
that (its agent honours the server's flow control: deferred batches wait ``retry_after`` and are
re-sent, nothing is lost) for as long as B's phase lasts. The agents share the server's two
cores here, where a deployment's would not; ``--agents-nice`` lowers both agents' priority.

Phases alternate, solo (B alone) then contended (B while A floods), ``--rounds`` times each, so
drift in the machine's background load touches both alike. For each phase it prints B's stored
rate (B's events in the store divided by the time from B's first batch until its last row was
committed), B's p50/p99 search latency through the API, A's stored rate, and the CPU seconds
each part of the deployment used (psutil; PostgreSQL backends of this database counted apart),
and how long per search the api process and the backends serving it were runnable but waiting
for a core (the kernel's schedstat): what CPU contention adds to a search; and how much of the
machine's CPU the hypervisor gave to other guests (steal): a busy neighbour on the host slows
both sides unevenly, and a run with steal of a percent or more is noise, not evidence. Then the
medians, the spread of the rounds' p99, and p50/p95/p99 over every search of all rounds
pooled: one phase's few hundred searches put its p99 on its 3rd-5th slowest search, so the
pooled figure (two thousand and more searches) is the one compared, with a 95 % bootstrap
interval of the ratio (even identical distributions give about +-10 % at this size); B's
contended/solo ratios are what the issue asks to stay within 10 %.

Run: ``.venv/bin/python bench/bench_contention.py [--bus]`` (needs PostgreSQL on 127.0.0.1:5432).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from a2z.agent.enroll import enroll
from a2z.agent.identity import IdentityFiles
from a2z.agent.ship.channel import ChannelClient
from a2z.records import Batch
from a2z.server.agents import service as agents
from a2z.server.app import build_context
from a2z.server.auth.keys import create_api_key
from a2z.server.config import Settings
from a2z.server.tenants import service as tenants
from a2z.server.tenants.models import Role
from bench_ingest import records, scratch_database
from jetstream_process import Process, free_port, nats_server, start_ingest_workers, stop
from process_cpu import CpuMeter, backends_of, busy_share, run_queue_waits, stolen_share

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Tenant:
    tenant_id: uuid.UUID
    agent_id: str
    identity_dir: Path


@dataclass(frozen=True)
class Phase:
    b_rate: float  # B's events stored per second
    b_p50_ms: float  # B's search latency through the API
    b_p99_ms: float
    searches: int
    a_rate: float  # A's events stored per second (0 when A is idle)
    latencies: list[float]  # every search's, seconds (pooled over rounds for a steadier p99)
    cpu: dict[str, float]  # CPU seconds per part of the deployment over the phase
    # Seconds the search path (the api process; the PostgreSQL backends serving it) spent
    # runnable but waiting for a core over the phase: what CPU contention adds to searches.
    api_wait: float
    api_db_wait: float
    busy: float  # share of the machine's CPU time busy over the phase (everyone's)
    stolen: float  # share of it the hypervisor gave to other guests (steal)


def ship_process(
    gateway: str, identity_dir: str, agent_id: str, first_seq: int, batches: int, batch: int,
    rate: float, ready: Any, go: Any, spent: Any, niceness: int,
) -> None:  # fmt: skip
    """One agent: ``batches`` batches, paced at ``rate`` events/s from when ``go`` is set;
    its CPU seconds go in ``spent`` when it is done."""
    if niceness:
        os.nice(niceness)
    files = IdentityFiles(Path(identity_dir))
    channel = ChannelClient(f"{gateway}/channel", ssl=files.client_context(), window=8)
    ready.set()  # imports done: the phase's clock starts only when every agent is ready
    go.wait()
    base = time.process_time()

    async def source() -> AsyncIterator[Batch]:
        rng = random.Random(first_seq)
        started = time.monotonic()
        for i, seq in enumerate(range(first_seq, first_seq + batches)):
            delay = started + i * batch / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            yield Batch(
                agent_id=agent_id, boot_epoch=1, seq=seq, sent_at=time.time(),
                records=records(rng, batch, time.time() - 60),
            )  # fmt: skip

    asyncio.run(channel.ship(source()))
    spent.value = time.process_time() - base


class Bench:
    def __init__(self, url: str, tmp: Path, args: argparse.Namespace, bus: str | None) -> None:
        self.url, self.tmp, self.args = url, tmp, args
        self.port, self.agent_port = free_port(), free_port()
        ctx = build_context(Settings(data_dir=tmp, db_url=url, agent_port=None))
        self.tenants: dict[str, tuple[uuid.UUID, str]] = {}
        for name in ("a", "b"):
            with ctx.sessions.system() as session:
                tenant = tenants.create_tenant(session=session, name=f"contention-{name}")
            with ctx.sessions.tenant(tenant.id) as session:
                _, token = agents.create_enrollment_token(
                    session=session, ttl=timedelta(minutes=5), uses=1, created_by="bench"
                )
            self.tenants[name] = (tenant.id, token)
        with ctx.sessions.tenant(self.tenants["b"][0]) as session:
            _, self.b_key = create_api_key(session=session, role=Role.ANALYST, name="bench")
        with ctx.sessions.system() as session:
            tenants.update_settings(
                session=session,
                tenant_id=self.tenants["a"][0],
                changes={"events_per_second": args.quota, "burst_events": args.quota},
            )
        self.pin = ctx.root.pin
        ctx.sessions.engine.dispose()
        self.log = (tmp / "server.log").open("wb")
        command = [
            sys.executable, "-m", "a2z", "server", "--data-dir", str(tmp), "--db", url,
            "--listen", f"127.0.0.1:{self.port}", "--agent-listen", f"127.0.0.1:{self.agent_port}",
        ]  # fmt: skip
        self.gateway_proc: Process | None = None
        gateway_http = ""
        if bus is not None:
            # The scale-out of docs/operating.md: this process is the REST API only. Every
            # process shares one data directory here, so the principal cache stays safe (a
            # revocation reaches it at once) and is on, as in the single-process mode.
            command += ["--role", "api", "--bus", bus, "--auth-cache-seconds", "30"]
            if args.gateway_with_api:
                command += ["--role", "gateway"]
        self.server = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)
        self.api = f"http://127.0.0.1:{self.port}"
        wait_healthy(self.api, self.server, tmp / "server.log")
        if bus is not None and not args.gateway_with_api:
            gateway_http = f"127.0.0.1:{free_port()}"
            self.gateway_proc = subprocess.Popen(
                [sys.executable, "-m", "a2z", "server", "--role", "gateway", "--bus", bus,
                 "--data-dir", str(tmp), "--db", url, "--listen", gateway_http,
                 "--agent-listen", f"127.0.0.1:{self.agent_port}"],
                stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO,
                preexec_fn=(lambda: os.nice(args.gateway_nice)) if args.gateway_nice else None,
            )  # fmt: skip
            wait_healthy(f"http://{gateway_http}", self.gateway_proc, tmp / "server.log")
        self.gateway_metrics = f"http://{gateway_http}/metrics" if self.gateway_proc else None
        gateway = f"wss://127.0.0.1:{self.agent_port}"
        self.agents: dict[str, Tenant] = {}
        for name, (tenant_id, token) in self.tenants.items():
            config = enroll(gateway, token, self.pin, tmp / name, name)
            self.agents[name] = Tenant(tenant_id, config.agent_id, Path(config.identity_dir))
        self.gateway = gateway
        self.seq = {"a": 1, "b": 1}
        self.owner = psycopg.connect(url.replace("+psycopg", ""), autocommit=True)
        self.workers: list[Process] = []
        if bus is not None:
            self.workers = start_ingest_workers(
                args.ingest_workers, url, bus, tmp, niceness=args.ingest_nice,
                log=tmp / "ingest.log",
            )  # fmt: skip
        parts = {"api" if self.workers else "server": [self.server.pid]}
        if self.workers:
            parts["ingest"] = [w.pid for w in self.workers]
        if self.gateway_proc is not None:
            parts["gateway"] = [self.gateway_proc.pid]
        # The private JetStream server (nats_server): A's accepted batches pass through it too,
        # at niceness 0 and with an fsync per message.
        nats = [p.pid for p in psutil.Process().children() if p.name() == "nats-server"]
        if nats:
            parts["nats"] = nats
        self.database = url.rsplit("/", 1)[1]
        self.cpu = CpuMeter(parts, self.database)

    def quota_counters(self) -> list[str]:
        """The gateway's quota counters over the whole run (leases, refusals): what the flood
        cost it in bucket transactions and decoding."""
        if self.gateway_metrics is None:
            return []
        wanted = ("a2z_ingest_batches_total", "a2z_events_throttled_total",
                  "a2z_frames_refused_undecoded_total", "a2z_quota_lease")  # fmt: skip
        text = httpx.get(self.gateway_metrics, timeout=10).text
        return [line for line in text.splitlines() if line.startswith(wanted)]

    def close(self) -> None:
        self.owner.close()
        stop(self.workers)
        if self.gateway_proc is not None:
            stop([self.gateway_proc])
        self.server.terminate()
        self.server.wait(timeout=30)
        self.log.close()

    def stored(self, name: str) -> int:
        row = self.owner.execute(
            "SELECT count(*) FROM events WHERE tenant_id = %s", (self.agents[name].tenant_id,)
        ).fetchone()
        return int(row[0]) if row else 0

    def start_agent(
        self, name: str, events: int, rate: float, go: Any, niceness: int = 0
    ) -> tuple[Any, Any]:
        """``name``'s agent in its own process, sending ``events`` paced at ``rate``/s once
        ``go`` is set; returns when the process is ready, with where its CPU seconds go."""
        batch = self.args.batch
        batches = events // batch
        spawn = multiprocessing.get_context("spawn")
        ready, spent = spawn.Event(), spawn.Value("d", 0.0)
        proc = spawn.Process(
            target=ship_process,
            args=(self.gateway, str(self.agents[name].identity_dir), self.agents[name].agent_id,
                  self.seq[name], batches, batch, rate, ready, go, spent, niceness),
        )  # fmt: skip
        self.seq[name] += batches
        proc.start()
        if not ready.wait(120):
            raise SystemExit(f"agent {name} did not start")
        return proc, spent

    def wait_stored(self, name: str, target: int, timeout: float = 300) -> float:
        """Poll until ``name`` has ``target`` events stored; the monotonic time it happened."""
        deadline = time.monotonic() + timeout
        while (have := self.stored(name)) < target:
            if time.monotonic() > deadline:
                raise SystemExit(f"tenant {name}: {have} of {target} events stored in time")
            time.sleep(0.05)
        return time.monotonic()

    def phase(self, contended: bool) -> Phase:
        args = self.args
        b_events = int(args.b_rate * args.seconds) // args.batch * args.batch
        b_before, a_before = self.stored("b"), self.stored("a")
        latencies: list[float] = []
        stop = threading.Event()

        def searcher() -> None:
            headers = {"Authorization": f"Bearer {self.b_key}"}
            with httpx.Client(base_url=self.api, headers=headers, timeout=30) as client:
                while not stop.is_set():
                    since = time.time() - 3600
                    started = time.perf_counter()
                    reply = client.get("/api/v1/events", params={"type": "dns", "since": since})
                    latencies.append(time.perf_counter() - started)
                    reply.raise_for_status()
                    time.sleep(args.search_interval)

        go = multiprocessing.get_context("spawn").Event()
        flood = None
        if contended:  # A offers 10x its quota for longer than B's phase; stopped with it
            offered = args.flood_factor * args.quota
            a_events = int(offered * args.seconds * 4) // args.batch * args.batch
            flood, _ = self.start_agent(
                "a", a_events, rate=offered, go=go, niceness=args.agents_nice + args.flood_nice
            )
        b_proc, b_spent = self.start_agent(
            "b", b_events, rate=args.b_rate, go=go, niceness=args.agents_nice
        )
        a_cpu_before = 0.0
        if flood is not None:
            times = psutil.Process(flood.pid).cpu_times()
            a_cpu_before = times.user + times.system
        search = threading.Thread(target=searcher)
        api = self.server.pid
        waits_before = run_queue_waits([api, *backends_of(api, self.database)])
        cpu_before, machine_before = self.cpu.sample(), psutil.cpu_times()
        search.start()
        started = time.monotonic()
        go.set()
        b_proc.join()
        b_done = self.wait_stored("b", b_before + b_events)
        stop.set()
        search.join()
        cpu = CpuMeter.spent(cpu_before, self.cpu.sample())
        backends = backends_of(api, self.database)
        waits = run_queue_waits([api, *backends])
        waited = {pid: t - waits_before.get(pid, 0.0) for pid, t in waits.items()}
        # The agents run here too (at a customer's site in a real deployment): counted apart.
        cpu["agent B"] = b_spent.value
        machine_after = psutil.cpu_times()
        busy = busy_share(machine_before, machine_after)
        stolen = stolen_share(machine_before, machine_after)
        a_rate = 0.0
        if flood is not None:
            a_rate = (self.stored("a") - a_before) / (time.monotonic() - started)
            if not flood.is_alive():  # A must flood for all of B's phase, or A's figure is moot
                raise SystemExit(f"tenant A's agent ended early (exit code {flood.exitcode})")
            times = psutil.Process(flood.pid).cpu_times()
            cpu["agent A"] = times.user + times.system - a_cpu_before
            flood.terminate()  # an agent cut off mid-stream, as if its host went away
            flood.join()
        cuts = statistics.quantiles(latencies, n=100)
        return Phase(
            b_rate=b_events / (b_done - started),
            b_p50_ms=cuts[49] * 1000,
            b_p99_ms=cuts[98] * 1000,
            searches=len(latencies),
            a_rate=a_rate,
            latencies=latencies,
            cpu=cpu,
            api_wait=waited.get(api, 0.0),
            api_db_wait=sum(waited.get(pid, 0.0) for pid in backends),
            busy=busy,
            stolen=stolen,
        )


def wait_healthy(base: str, proc: Process, log: Path) -> None:
    """Return once ``base``/healthz answers 200 (the api, or the gateway process's probe)."""
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{base} did not start:\n" + log.read_text())
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)


def ratio_interval(
    solo: list[float], contended: list[float], resamples: int = 1000
) -> tuple[float, float]:
    """95 % bootstrap interval of the contended/solo p99 ratio: a p99 of 1,500 searches sits on
    about the 15th slowest, so the ratio of two moves by several percent from sampling alone;
    the interval says how far."""
    rng = random.Random(0)
    ratios = []
    for _ in range(resamples):
        a = statistics.quantiles(rng.choices(solo, k=len(solo)), n=100)[98]
        b = statistics.quantiles(rng.choices(contended, k=len(contended)), n=100)[98]
        ratios.append(b / a)
    ratios.sort()
    return ratios[int(0.025 * resamples)], ratios[int(0.975 * resamples) - 1]


def show(label: str, p: Phase) -> None:
    a = f"A {p.a_rate:6,.0f} ev/s stored" if p.a_rate else "A idle"
    print(
        f"{label:<10} B {p.b_rate:7,.0f} ev/s stored   search p50 {p.b_p50_ms:6.1f} ms"
        f"  p99 {p.b_p99_ms:6.1f} ms ({p.searches} searches)   {a}",
        flush=True,
    )
    cpu = ", ".join(f"{part} {s:.1f}" for part, s in sorted(p.cpu.items()))
    print(
        f"{'':<10} CPU s: {cpu}; machine {p.busy:.0%} busy ({p.stolen:.1%} stolen by the host)",
        flush=True,
    )
    print(
        f"{'':<10} waiting for a core, per search: api {p.api_wait / p.searches * 1000:.2f} ms,"
        f" its PostgreSQL backends {p.api_db_wait / p.searches * 1000:.2f} ms",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quota", type=int, default=500, help="tenant A's events/s limit")
    parser.add_argument("--b-rate", type=int, default=2000, help="events/s tenant B sends")
    parser.add_argument("--seconds", type=int, default=30, help="length of B's stream per phase")
    parser.add_argument("--batch", type=int, default=100, help="records per agent batch")
    parser.add_argument("--rounds", type=int, default=5, help="solo/contended pairs")
    parser.add_argument("--search-interval", type=float, default=0.05, help="s between searches")
    parser.add_argument(
        "--bus", action="store_true",
        help="split roles: a private JetStream, --role api, and --ingest-workers ingest processes",
    )  # fmt: skip
    parser.add_argument("--ingest-workers", type=int, default=1, help="with --bus")
    # The defaults are docs/operating.md's advice for a host the api shares: the throughput
    # roles at niceness 10, their PostgreSQL backends following (ADR 29). 0 for the old layout.
    parser.add_argument(
        "--ingest-nice", type=int, default=10, help="with --bus: niceness added to ingest processes"
    )
    parser.add_argument(
        "--gateway-nice", type=int, default=10, help="with --bus: niceness added to the gateway"
    )
    parser.add_argument(
        "--flood-factor", type=float, default=10.0,
        help="tenant A offers this many times its quota (1: A within its quota, a control)",
    )  # fmt: skip
    # The agents are the harness's load generators: in a deployment they run on the monitored
    # hosts, not on the server's cores. A diagnostic: at niceness 10 they still get the CPU
    # they need but yield it to the server (measured: no difference beyond the runs' spread).
    parser.add_argument(
        "--agents-nice", type=int, default=0,
        help="niceness of both agents' processes (a diagnostic, as --flood-nice)",
    )  # fmt: skip
    parser.add_argument(
        "--flood-nice", type=int, default=0,
        help="niceness added to tenant A's agent on top of --agents-nice (a diagnostic)",
    )  # fmt: skip
    parser.add_argument(
        "--gateway-with-api", action="store_true",
        help="with --bus: the gateway in the api process (as before ADR 20), not its own",
    )  # fmt: skip
    args = parser.parse_args()
    load = os.getloadavg()[0]
    gateway = (
        "--role api --role gateway"
        if args.gateway_with_api
        else f"--role api + --role gateway (nice +{args.gateway_nice})"
    )
    deployment = (
        f"{gateway} + {args.ingest_workers} --role ingest (nice +{args.ingest_nice}) on JetStream"
        if args.bus
        else "one process (api + gateway + in-process bus + ingest)"
    )
    print(f"{os.cpu_count()} CPUs, load average {load:.1f}; {deployment}; tenant A limited to "
          f"{args.quota} events/s offers {args.flood_factor:g}x that; tenant B sends "
          f"{args.b_rate} events/s, paced, "
          f"{args.seconds} s per phase, batches of {args.batch}; agents at nice "
          f"+{args.agents_nice} (A's +{args.agents_nice + args.flood_nice})")  # fmt: skip
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(scratch_database())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        bus = stack.enter_context(nats_server(tmp)) if args.bus else None
        bench = Bench(url, tmp, args, bus)
        try:
            solo: list[Phase] = []
            both: list[Phase] = []
            for _ in range(args.rounds):
                solo.append(p := bench.phase(contended=False))
                show("solo", p)
                both.append(p := bench.phase(contended=True))
                show("contended", p)
            counters = bench.quota_counters()
        finally:
            bench.close()

    def med(phases: list[Phase], field: str) -> float:
        return statistics.median(getattr(p, field) for p in phases)

    print(f"\nmedians over {args.rounds} rounds (load average now {os.getloadavg()[0]:.1f}):")
    for label, phases in (("solo", solo), ("contended", both)):
        b_rate, p50, p99 = (med(phases, f) for f in ("b_rate", "b_p50_ms", "b_p99_ms"))
        lo, hi = min(p.b_p99_ms for p in phases), max(p.b_p99_ms for p in phases)
        print(
            f"{label:<10} B {b_rate:7,.0f} ev/s stored   search p50 {p50:6.1f} ms  p99 {p99:6.1f}"
            f" (rounds' p99 {lo:.1f}-{hi:.1f})"
        )
    pooled: dict[str, list[float]] = {}  # every search's latency, per side
    for label, phases in (("solo", solo), ("contended", both)):
        every = pooled[label] = [t for p in phases for t in p.latencies]
        cuts = statistics.quantiles(every, n=100)
        searches = sum(p.searches for p in phases)
        api_wait = sum(p.api_wait for p in phases) / searches * 1000
        db_wait = sum(p.api_db_wait for p in phases) / searches * 1000
        stolen = max(p.stolen for p in phases)
        print(
            f"{label:<10} all {len(every)} searches pooled: p50 {cuts[49] * 1000:6.1f} ms"
            f"  p95 {cuts[94] * 1000:6.1f} ms  p99 {cuts[98] * 1000:6.1f} ms; waiting for a"
            f" core, per search: api {api_wait:.2f} ms, its PostgreSQL backends {db_wait:.2f} ms;"
            f" at most {stolen:.1%} of the CPU stolen by the host in a phase"
        )
    rate = med(both, "b_rate") / med(solo, "b_rate")
    p99 = (
        statistics.quantiles(pooled["contended"], n=100)[98]
        / statistics.quantiles(pooled["solo"], n=100)[98]
    )
    low, high = ratio_interval(pooled["solo"], pooled["contended"])
    print(f"B contended/solo: stored rate {rate:.1%} (medians), p99 search {p99:.1%} (pooled; "
          f"95 % bootstrap interval {low:.1%}-{high:.1%}) "
          f"(within 10 %: rate >= 90 %, p99 <= 110 %)")  # fmt: skip
    print(f"A stored {med(both, 'a_rate'):,.0f} events/s against its quota of {args.quota}/s")
    for line in counters:
        print(f"gateway {line}")


if __name__ == "__main__":
    main()
