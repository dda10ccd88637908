"""``make bench-channel``: records/s through one agent connection, and bytes on the wire.

Runs, on one machine, with the same synthetic Zeek-like records:

1. agent (disk spool + mutual TLS) -> ``a2z server`` on SQLite: the figure a user gets;
2. the same without the spool (batches held in memory): what the spool costs;
3. agent (spool, then no spool; plain WebSocket) -> an ack-only sink that decodes each frame:
   the channel's own ceiling, with no store behind it;
4. reference: the same records as JSON lines (500 per text frame, 16 in flight) over a plain
   WebSocket to the same sink, which parses each line: what we would send without the envelope.

Bytes per record are frame payload bytes (WebSocket and TLS framing add a few bytes per frame,
not per record): JSON lines, msgpack without compression, and the wire format (msgpack + zstd).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import msgspec
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from a2z.agent.config import AgentConfig
from a2z.agent.enroll import enroll
from a2z.agent.service import ship_records
from a2z.agent.ship.spool import SpoolSettings
from a2z.records import Batch, Conn, Dns, Record, decode_batch, encode_batch

BATCH = 500
WINDOW = 16
SINK_REPEAT = 4  # the sink runs send the records this many times over
SINK_TRIES = 3


# --- records ----------------------------------------------------------------------------------


def _uid(rng: random.Random) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "C" + "".join(rng.choices(alphabet, k=17))


def synthetic(n: int, seed: int = 5) -> Iterator[Record]:
    """A realistic mix: 80 % conn, 20 % dns, random addresses, ports, uids and sizes."""
    rng = random.Random(seed)
    ts = 1_700_000_000.0
    for _ in range(n):
        ts += rng.expovariate(2000)
        orig = f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        if rng.random() < 0.2:
            yield Dns(
                ts=ts, uid=_uid(rng), orig_h=orig, orig_p=rng.randrange(1024, 65535),
                resp_h="10.0.0.53", resp_p=53, proto="udp", trans_id=rng.randrange(65536),
                rtt=rng.random() / 50, query=f"host{rng.randrange(5000)}.example.com",
                qclass=1, qclass_name="C_INTERNET", qtype=1, qtype_name="A", rcode=0,
                rcode_name="NOERROR", RD=True, RA=True,
                answers=[f"93.184.{rng.randrange(256)}.{rng.randrange(256)}"], TTLs=[300.0],
            )  # fmt: skip
            continue
        yield Conn(
            ts=ts, uid=_uid(rng), orig_h=orig, orig_p=rng.randrange(1024, 65535),
            resp_h=".".join(str(rng.randrange(1, 224)) for _ in range(4)),
            resp_p=rng.choice([443, 443, 443, 80, 22, 53, 8080]), proto="tcp",
            service=rng.choice([None, "ssl", "http"]), duration=rng.expovariate(0.5),
            orig_bytes=rng.randrange(100_000), resp_bytes=rng.randrange(1_000_000),
            conn_state=rng.choice(["SF", "SF", "SF", "S0", "REJ", "RSTO"]),
            history=rng.choice(["ShADadFf", "ShADadfF", "S", "Sr", "ShADadR"]),
            orig_pkts=rng.randrange(1, 500), orig_ip_bytes=rng.randrange(100_000),
            resp_pkts=rng.randrange(1, 900), resp_ip_bytes=rng.randrange(1_000_000),
        )  # fmt: skip


def batches_of(records: list[Record], agent_id: str) -> list[Batch]:
    return [
        Batch(agent_id=agent_id, boot_epoch=1, seq=i // BATCH + 1, sent_at=0.0,
              records=records[i : i + BATCH])
        for i in range(0, len(records), BATCH)
    ]  # fmt: skip


@dataclass
class Sizes:
    json_lines: int
    msgpack: int
    wire: int


def sizes(records: list[Record]) -> Sizes:
    json_enc, mp_enc = msgspec.json.Encoder(), msgspec.msgpack.Encoder()
    batches = batches_of(records, "00000000-0000-0000-0000-000000000000")
    return Sizes(
        json_lines=sum(len(json_enc.encode(r)) + 1 for r in records),
        msgpack=sum(len(mp_enc.encode(b)) for b in batches),
        wire=sum(len(encode_batch(b)) for b in batches),
    )


def demo_capture_records() -> list[Record]:
    from importlib.resources import as_file

    from a2z.agent.replay import iter_records
    from a2z.demo.runner import DEMO_CAPTURE

    with as_file(DEMO_CAPTURE) as path:
        return list(iter_records(path))


# --- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """``a2z server`` (SQLite) as a child process, with a tenant and an enrollment token."""

    def __init__(self, data_dir: Path) -> None:
        from a2z.server.agents import service as agents
        from a2z.server.app import build_context
        from a2z.server.config import Settings
        from a2z.server.tenants import service as tenants

        self.data_dir, self.port, self.agent_port = data_dir, free_port(), free_port()
        ctx = build_context(Settings(data_dir=data_dir, agent_port=None))
        with ctx.sessions.system() as session:
            tenant = tenants.create_tenant(session=session, name="bench")
        with ctx.sessions.tenant(tenant.id) as session:
            _, self.token = agents.create_enrollment_token(
                session=session, ttl=timedelta(minutes=30), uses=10, created_by="bench"
            )
        self.pin = ctx.root.pin
        ctx.sessions.engine.dispose()
        self.log = (data_dir / "server.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "a2z", "server", "--data-dir", str(data_dir),
             "--listen", f"127.0.0.1:{self.port}",
             "--agent-listen", f"127.0.0.1:{self.agent_port}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited; see {data_dir / 'server.log'}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).is_success:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def agent_config(self, directory: Path) -> AgentConfig:
        return enroll(f"wss://127.0.0.1:{self.agent_port}", self.token, self.pin, directory, "b")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


class Sink:
    """The ack-only sink (this script with ``--sink``) as a child process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--sink", str(self.port)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("sink did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


async def run_sink(port: int) -> None:
    """Decode every frame as a server would, store nothing, answer each one."""
    json_dec = msgspec.json.Decoder(Record)
    ack = msgspec.json.Encoder()

    async def handler(ws: ServerConnection) -> None:
        async for frame in ws:
            if isinstance(frame, bytes):
                batch = decode_batch(frame)
                await ws.send(ack.encode({"ack": batch.seq, "epoch": batch.boot_epoch}).decode())
            else:
                n = sum(1 for line in frame.splitlines() if json_dec.decode(line))
                await ws.send(ack.encode({"n": n}).decode())

    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set_result, None)
    async with serve(handler, "127.0.0.1", port, max_size=None):
        print("ready", flush=True)
        await stop


# --- runs -------------------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    records: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds


async def agent_run(
    name: str, config: AgentConfig, records: list[Record], spool_dir: Path | None
) -> Run:
    spool = SpoolSettings(directory=spool_dir) if spool_dir is not None else None
    started = time.perf_counter()
    stats = await ship_records(config, iter(records), spool=spool)
    elapsed = time.perf_counter() - started
    if stats.records_acked != len(records):
        raise RuntimeError(f"{name}: {stats.records_acked} of {len(records)} acked")
    return Run(name, len(records), elapsed)


async def json_lines_run(url: str, records: list[Record]) -> tuple[Run, int]:
    """The reference: JSON lines, 500 per text frame, WINDOW frames in flight.

    Encoding is timed, as the agent's msgpack + zstd is; no permessage-deflate (raw JSON).
    """
    enc = msgspec.json.Encoder()
    sent = 0
    started = time.perf_counter()
    async with connect(url, max_size=None, compression=None) as ws:
        slots = asyncio.Semaphore(WINDOW)
        chunks = range(0, len(records), BATCH)

        async def send_all() -> None:
            nonlocal sent
            for i in chunks:
                frame = b"\n".join(enc.encode(r) for r in records[i : i + BATCH]).decode()
                sent += len(frame)
                await slots.acquire()
                await ws.send(frame)

        async def receive_all() -> int:
            got = 0
            for _ in chunks:
                got += msgspec.json.decode(await ws.recv())["n"]
                slots.release()
            return got

        _, got = await asyncio.gather(send_all(), receive_all())
    elapsed = time.perf_counter() - started
    if got != len(records):
        raise RuntimeError(f"json lines: {got} of {len(records)} answered")
    return Run("JSON lines, plain WebSocket -> ack-only sink", len(records), elapsed), sent


def report(
    runs: list[Run], records: list[Record], json_bytes: int, demo: list[Record]
) -> list[str]:
    """The figures, as printed and as copied into docs/benchmarks.md."""
    n, size, demo_size = len(records), sizes(records), sizes(demo)
    json_bytes //= SINK_REPEAT
    lines = [
        f"a2z bench-channel: {n} synthetic records (80% conn, 20% dns), batches of {BATCH}, "
        f"window {WINDOW}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        f"{'run':<48} {'records/s':>10} {'seconds':>8}",
        f"(the sink runs send the records {SINK_REPEAT} times; best of {SINK_TRIES})",
    ]
    lines += [f"{r.name:<48} {r.rate:>10,.0f} {r.seconds:>8.2f}" for r in runs]
    lines += [
        f"agent channel (spool) / JSON-lines reference, same sink: "
        f"{runs[2].rate / runs[4].rate:.2f}x",
        "bytes per record on the wire (frame payload):",
        f"  JSON lines             {size.json_lines / n:7.1f}  "
        f"(the reference sent {json_bytes / n:.1f})",
        f"  msgpack, no zstd       {size.msgpack / n:7.1f}  {size.json_lines / size.msgpack:5.2f}x"
        " smaller than JSON lines",
        f"  msgpack + zstd (wire)  {size.wire / n:7.1f}  {size.json_lines / size.wire:5.2f}x"
        " smaller than JSON lines",
        f"bundled attack capture, {len(demo)} records: JSON lines "
        f"{demo_size.json_lines / len(demo):.1f} B/record, wire {demo_size.wire / len(demo):.1f}"
        f" B/record ({demo_size.json_lines / demo_size.wire:.1f}x)",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        asyncio.run(run_sink(args.sink))
        return 0

    records = list(synthetic(args.records))
    work = Path(tempfile.mkdtemp(prefix="a2z-bench-channel-"))
    runs: list[Run] = []
    try:
        server = Server(work / "server")
        try:
            tls_config = server.agent_config(work / "agent")
            runs.append(
                asyncio.run(
                    agent_run("agent (spool, mTLS) -> a2z server, SQLite", tls_config, records,
                              work / "spool")
                )
            )  # fmt: skip
            # The same records again: a new epoch, so the server stores them as new rows.
            runs.append(
                asyncio.run(
                    agent_run("agent (no spool, mTLS) -> a2z server, SQLite", tls_config, records,
                              None)
                )
            )  # fmt: skip
        finally:
            server.stop()
        sink = Sink()
        try:
            # Without a store the runs are short: more records, best of SINK_TRIES.
            many = records * SINK_REPEAT
            plain = AgentConfig(server=f"ws://127.0.0.1:{sink.port}/", agent_id="bench")
            url = f"ws://127.0.0.1:{sink.port}/"
            spooled, direct, reference = [], [], []
            for i in range(SINK_TRIES):
                spooled.append(asyncio.run(agent_run(
                    "agent (spool, plain WS) -> ack-only sink", plain, many, work / f"sink-{i}"
                )))  # fmt: skip
                direct.append(asyncio.run(agent_run(
                    "agent (no spool, plain WS) -> ack-only sink", plain, many, None
                )))  # fmt: skip
                run, json_bytes = asyncio.run(json_lines_run(url, many))
                reference.append(run)
            runs += [min(r, key=lambda run: run.seconds) for r in (spooled, direct, reference)]
        finally:
            sink.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    demo = demo_capture_records()
    print("\n".join(report(runs, records, json_bytes, demo)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
