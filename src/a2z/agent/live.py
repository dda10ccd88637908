"""Live capture: an interface through the pipeline, records out as JSON lines (like replay).

``a2z agent run --interface IFACE [--bpf EXPR] [--workers N]`` calls :func:`run_live`; so does
``python -m a2z.agent.live``. With ``workers > 1`` each worker process opens its own AF_PACKET
socket in one PACKET_FANOUT group (flow hash), runs its own pipeline, and sends its records here
to be written; this process only writes and keeps count (Python threads would not parallelise
decode, processes do).
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.synchronize import Event
from types import FrameType
from typing import Any, TextIO

import msgspec

from a2z.agent.budget import ResourceGovernor
from a2z.agent.capture.af_packet import (
    AfPacketSource,
    CaptureCounters,
    RingConfig,
    fanout_group_id,
)
from a2z.agent.capture.bpf import compile_bpf
from a2z.agent.capture.errors import CaptureError
from a2z.agent.capture.packet import RawPacket
from a2z.agent.pipeline import Pipeline
from a2z.agent.protocols.analyzer import ProtocolConfig
from a2z.agent.summary import pairs, peak_rss_mib
from a2z.records import Record

POLL_SECONDS = 0.1  # longest wait for packets before we look at signals, deadlines and timeouts
WORKER_JOIN_SECONDS = 10.0  # how long a stopping worker may take to flush before it is killed


@dataclass(slots=True)
class LiveTotals:
    """What a live run saw, summed over workers; the summary prints it."""

    packets: int = 0  # frames through the pipeline
    bytes: int = 0  # their wire bytes
    kernel_received: int = 0  # frames that passed the kernel filter (PACKET_STATISTICS)
    kernel_dropped: int = 0  # frames the kernel dropped because our ring was full
    records: dict[str, int] = field(default_factory=dict)  # records by _path
    weirds: dict[str, int] = field(default_factory=dict)  # weird conditions by name
    evictions: int = 0  # flows evicted from a full flow table
    fragments: dict[str, int] = field(default_factory=dict)  # reassembler counters
    per_worker: list[int] = field(default_factory=list)  # packets each worker decoded

    def add(self, other: dict[str, Any]) -> None:
        """Add one worker's final counters (as sent over the pipe)."""
        self.per_worker.append(int(other["packets"]))
        for name in ("packets", "bytes", "kernel_received", "kernel_dropped", "evictions"):
            setattr(self, name, getattr(self, name) + int(other[name]))
        for name in ("records", "weirds", "fragments"):
            mine: dict[str, int] = getattr(self, name)
            for key, n in other[name].items():
                mine[key] = mine.get(key, 0) + int(n)


class _Stop:
    """Set by SIGINT/SIGTERM or a limit; checked between batches."""

    def __init__(self) -> None:
        self.why = ""

    def __bool__(self) -> bool:
        return bool(self.why)

    def set(self, why: str) -> None:
        if not self.why:
            self.why = why


@contextmanager
def _signals_stop(stop: _Stop) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` instead of raising, for the duration (main thread only)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        stop.set(signal.Signals(signum).name)

    previous: dict[signal.Signals, Callable[[int, FrameType | None], Any] | int | None] = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread: the caller stops us with limits only
        pass
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def run_live(
    interface: str,
    bpf: str | None,
    workers: int,
    out: TextIO,
    err: TextIO,
    *,
    max_packets: int | None = None,
    max_seconds: float | None = None,
    ring: RingConfig | None = None,
) -> int:
    """Capture until SIGINT/SIGTERM or a limit; JSON records on ``out``, summary on ``err``.

    Returns 0 after a clean stop, 2 when capture cannot start (no such interface, no
    permission, bad filter), 1 if a worker process died: the one-line reason is on ``err``.
    """
    started = time.monotonic()
    stop = _Stop()
    totals = LiveTotals()
    with _signals_stop(stop):
        if workers <= 1:
            rc = _run_single(interface, bpf, out, err, stop, totals, max_packets, max_seconds, ring)
        else:
            rc = _run_workers(
                interface, bpf, workers, out, err, stop, totals, max_packets, max_seconds, ring
            )
    if rc == 0:
        err.write(_summary(interface, totals, time.monotonic() - started, stop.why or "end"))
    return rc


def _run_single(
    interface: str,
    bpf: str | None,
    out: TextIO,
    err: TextIO,
    stop: _Stop,
    totals: LiveTotals,
    max_packets: int | None,
    max_seconds: float | None,
    ring: RingConfig | None,
) -> int:
    try:
        source = AfPacketSource(interface, bpf=bpf, ring=ring)
    except CaptureError as exc:
        err.write(f"a2z agent run: {exc}\n")
        return 2
    err.write(f"listening on {interface} ({_describe(bpf, 1)})\n")
    err.flush()
    pipeline = Pipeline()
    write = _writer(out)
    deadline = time.monotonic() + max_seconds if max_seconds is not None else None
    try:
        _capture_loop(source, pipeline, write, stop, max_packets, deadline)
        write(pipeline.flush())
        out.flush()
    finally:
        counters = source.read_counters()
        source.close()
    totals.add(_worker_totals(pipeline, counters.received, counters.dropped))
    return 0


def _capture_loop(
    source: AfPacketSource,
    pipeline: Pipeline,
    write: Callable[[list[Record]], None],
    stop: _Stop,
    max_packets: int | None,
    deadline: float | None,
) -> None:
    """Feed batches until ``stop``, a deadline or a packet limit; flows time out on wall time."""
    feed = pipeline.feed
    seen = 0
    while not stop:
        for pkt in source.batch(POLL_SECONDS):
            write(feed(pkt))
            seen += 1
            if max_packets is not None and seen >= max_packets:
                stop.set("max-packets")
                return
        write(pipeline.advance(time.time()))
        if deadline is not None and time.monotonic() >= deadline:
            stop.set("max-seconds")
            return


class LiveCapture:
    """A live capture the control path can retune while it runs.

    The filter is swapped on the open socket (no gap, see ``AfPacketSource.set_filter``);
    ``restart`` reopens the socket between two batches, new one first. ``batch`` is called by
    whichever thread runs the pipeline; ``set_filter`` and ``restart`` by the control path.
    """

    def __init__(self, opener: Callable[[str | None], AfPacketSource], bpf: str | None) -> None:
        self._open = opener  # opens the socket (with a filter), where the capture belongs
        self.bpf = bpf or ""
        self.source = opener(bpf or None)
        self.restarts = 0
        self._lock = threading.Lock()  # one of batch/set_filter/reopen touches the socket
        self._restart = threading.Event()
        self._restarted = threading.Event()
        self._restart_error = ""
        self._retired = CaptureCounters()  # counters of sockets closed by restarts

    def batch(self, timeout: float) -> list[RawPacket]:
        """Frames ready within ``timeout`` seconds (see ``AfPacketSource.batch``)."""
        if self._restart.is_set():
            self._reopen()
        return self.source.batch(timeout)

    def check_filter(self, bpf: str) -> None:
        """Compile ``bpf`` for this capture without applying it; FilterError if it is bad."""
        if bpf:
            src = self.source
            compile_bpf(bpf, src.linktype, src.ring_config.snaplen, src.interface)

    def set_filter(self, bpf: str) -> None:
        """Swap the kernel filter ("" captures everything); the old one stays on error."""
        with self._lock:
            self.source.set_filter(bpf or None)
            self.bpf = bpf

    def restart(self, timeout: float = 10.0) -> None:
        """Have the capture thread reopen the socket; wait until it did (CaptureError if not)."""
        self._restarted.clear()
        self._restart_error = ""
        self._restart.set()
        if not self._restarted.wait(timeout):
            raise CaptureError(f"the capture did not restart within {timeout:g} s")
        if self._restart_error:
            raise CaptureError(self._restart_error)

    def _reopen(self) -> None:
        with self._lock:
            self._restart.clear()
            try:
                fresh = self._open(self.bpf or None)
            except CaptureError as exc:  # the old socket keeps capturing
                self._restart_error = f"cannot reopen the capture: {exc}"
            else:
                old, self.source = self.source, fresh
                counters = old.read_counters()
                old.close()
                for name in ("received", "dropped", "freezes", "delivered"):
                    setattr(
                        self._retired, name, getattr(self._retired, name) + getattr(counters, name)
                    )
                self.restarts += 1
            self._restarted.set()

    def read_counters(self) -> CaptureCounters:
        """Kernel counters summed over this capture's sockets."""
        total = CaptureCounters()
        _add_counters(total, self._retired)
        _add_counters(total, self.source.read_counters())
        return total

    def close(self) -> None:
        """Close the socket."""
        self.source.close()


def _add_counters(into: CaptureCounters, more: CaptureCounters) -> None:
    for name in ("received", "dropped", "freezes", "delivered"):
        setattr(into, name, getattr(into, name) + getattr(more, name))


def open_live(interface: str, bpf: str | None, *, ring: RingConfig | None = None) -> LiveCapture:
    """A retunable capture of ``interface``; CaptureError now if it cannot open."""
    return LiveCapture(lambda expr: AfPacketSource(interface, bpf=expr, ring=ring), bpf)


def live_records(
    interface: str,
    bpf: str | None,
    *,
    max_packets: int | None = None,
    max_seconds: float | None = None,
    ring: RingConfig | None = None,
) -> Iterator[Record | None]:
    """Records from a live capture for shipping, with ``None`` as a tick after each idle poll
    (the batcher cuts a waiting batch on it). Opens the capture now, so a bad interface or
    filter raises CaptureError here rather than inside the shipping loop."""
    return live_stream(open_live(interface, bpf, ring=ring), max_packets, max_seconds)


def live_stream(
    source: LiveCapture,
    max_packets: int | None = None,
    max_seconds: float | None = None,
    *,
    protocols: ProtocolConfig | None = None,
    governor: ResourceGovernor | None = None,
) -> Iterator[Record | None]:
    """Records of an open capture (ticks as ``None``) until a limit; closes it at the end.

    ``protocols`` carries the analyzer switch the control path flips while this runs; the
    ``governor`` resizes the flow table between batches to keep the resource budget.
    """
    pipeline = Pipeline(protocols=protocols)
    deadline = time.monotonic() + max_seconds if max_seconds is not None else None
    seen = 0
    try:
        while deadline is None or time.monotonic() < deadline:
            for pkt in source.batch(POLL_SECONDS):
                yield from pipeline.feed(pkt)
                seen += 1
                if max_packets is not None and seen >= max_packets:
                    yield from pipeline.flush()
                    return
            if governor is not None:
                governor.enforce(pipeline.table)
            yield from pipeline.advance(time.time())
            yield None
        yield from pipeline.flush()
    finally:
        source.close()


def _writer(out: TextIO) -> Callable[[list[Record]], None]:
    encode = msgspec.json.Encoder().encode

    def write(records: list[Record]) -> None:
        for record in records:
            out.write(encode(record).decode())
            out.write("\n")
        if records:
            out.flush()  # live: a reader downstream should see records as they end

    return write


def _worker_totals(pipeline: Pipeline, received: int, dropped: int) -> dict[str, Any]:
    stats = pipeline.stats
    return {
        "packets": stats.packets,
        "bytes": stats.bytes,
        "kernel_received": received,
        "kernel_dropped": dropped,
        "records": dict(stats.records),
        "weirds": dict(stats.weirds),
        "evictions": stats.evictions,
        "fragments": asdict(pipeline.defrag.stats),
    }


# -- fanout workers -------------------------------------------------------------------------------


def _run_workers(
    interface: str,
    bpf: str | None,
    workers: int,
    out: TextIO,
    err: TextIO,
    stop: _Stop,
    totals: LiveTotals,
    max_packets: int | None,
    max_seconds: float | None,
    ring: RingConfig | None,
) -> int:
    ctx = multiprocessing.get_context("spawn")  # no inherited locks or threads; same everywhere
    halt = ctx.Event()
    group = fanout_group_id()
    conns: list[multiprocessing.connection.Connection] = []
    procs = []
    for _ in range(workers):
        recv_end, send_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_worker_main,
            args=(interface, bpf, group, ring, halt, send_end, os.getpid()),
            daemon=True,
        )
        proc.start()
        send_end.close()
        conns.append(recv_end)
        procs.append(proc)
    deadline = time.monotonic() + max_seconds if max_seconds is not None else None
    rc = 0
    ready = 0
    packets = 0
    live = list(conns)
    try:
        while live:
            if stop or (deadline is not None and time.monotonic() >= deadline):
                stop.set("max-seconds")
                halt.set()
            for conn in multiprocessing.connection.wait(live, timeout=POLL_SECONDS):
                assert isinstance(conn, multiprocessing.connection.Connection)
                try:
                    kind, payload = conn.recv()
                except EOFError:  # the worker died without saying goodbye: a bug, not input
                    if rc == 0:
                        err.write("a2z agent run: a capture worker exited unexpectedly\n")
                    rc = rc or 1
                    halt.set()
                    live.remove(conn)
                    continue
                if kind == "records":
                    text, n = payload
                    out.write(text)
                    out.flush()
                    packets += n
                    if max_packets is not None and packets >= max_packets:
                        stop.set("max-packets")
                        halt.set()
                elif kind == "ready":
                    ready += 1
                    if ready == workers:
                        err.write(f"listening on {interface} ({_describe(bpf, workers)})\n")
                        err.flush()
                elif kind == "error":
                    if rc == 0:
                        err.write(f"a2z agent run: {payload}\n")
                    rc = 2
                    halt.set()
                    live.remove(conn)
                else:  # "done": the worker's final counters
                    totals.add(payload)
                    live.remove(conn)
    finally:
        halt.set()
        for proc in procs:
            proc.join(WORKER_JOIN_SECONDS)
            if proc.is_alive():
                proc.kill()
                proc.join(WORKER_JOIN_SECONDS)
        for conn in conns:
            conn.close()
    return rc


def _worker_main(
    interface: str,
    bpf: str | None,
    group: int,
    ring: RingConfig | None,
    halt: Event,
    conn: multiprocessing.connection.Connection,
    parent: int,
) -> None:
    """One fanout member: capture, decode, send JSON lines to the parent until ``halt``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, lambda *_: halt.set())
    try:
        source = AfPacketSource(interface, bpf=bpf, fanout_group=group, ring=ring)
    except CaptureError as exc:
        conn.send(("error", str(exc)))
        conn.close()
        return
    conn.send(("ready", None))
    pipeline = Pipeline()
    encode = msgspec.json.Encoder().encode
    pending: list[bytes] = []
    batch_packets = 0

    def write(records: list[Record]) -> None:
        pending.extend(encode(r) + b"\n" for r in records)

    def flush_to_parent() -> None:
        nonlocal batch_packets
        if pending or batch_packets:
            conn.send(("records", (b"".join(pending).decode(), batch_packets)))
            pending.clear()
            batch_packets = 0

    feed = pipeline.feed
    try:
        while not halt.is_set() and os.getppid() == parent:  # stop, or orphaned
            pkts = source.batch(POLL_SECONDS)
            for pkt in pkts:
                write(feed(pkt))
            batch_packets += len(pkts)
            write(pipeline.advance(time.time()))
            flush_to_parent()
        write(pipeline.flush())
        flush_to_parent()
        counters = source.read_counters()
        conn.send(("done", _worker_totals(pipeline, counters.received, counters.dropped)))
    finally:
        source.close()
        conn.close()


# -- summary and entry point ----------------------------------------------------------------------


def _describe(bpf: str | None, workers: int) -> str:
    what = f"filter {bpf!r}" if bpf else "no filter"
    return f"{what}, {workers} worker{'s' if workers > 1 else ''}"


def _summary(interface: str, totals: LiveTotals, seconds: float, why: str) -> str:
    rate = totals.packets / seconds if seconds > 0 else 0.0
    frag = totals.fragments
    rss = peak_rss_mib(children=True)  # the workers' peak counts too
    lines = [
        f"live {interface}: stopped by {why}",
        f"  packets {totals.packets}  bytes {totals.bytes}  evictions {totals.evictions}",
        f"  kernel: received {totals.kernel_received}  dropped {totals.kernel_dropped}",
        f"  workers: {len(totals.per_worker)}  packets each: "
        + " ".join(str(n) for n in totals.per_worker),
        f"  records: {pairs(totals.records)}",
        f"  weird: {pairs(totals.weirds)}",
        f"  fragments: {pairs({k: v for k, v in frag.items() if v})}",
        f"  seconds {seconds:.3f}  packets/s {rate:,.0f}  peak RSS {rss:.1f} MiB",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m a2z.agent.live -i IFACE [--bpf EXPR] [--workers N] [limits]``."""
    parser = argparse.ArgumentParser(
        prog="python -m a2z.agent.live", description="Capture live and print JSON records."
    )
    parser.add_argument("-i", "--interface", required=True, help="interface to capture on")
    parser.add_argument("--bpf", default=None, help="kernel filter, tcpdump syntax")
    parser.add_argument("--workers", type=int, default=1, help="processes in a fanout group")
    parser.add_argument("--max-packets", type=int, default=None, help="stop after N packets")
    parser.add_argument("--max-seconds", type=float, default=None, help="stop after S seconds")
    args = parser.parse_args(argv)
    return run_live(
        args.interface,
        args.bpf,
        args.workers,
        sys.stdout,
        sys.stderr,
        max_packets=args.max_packets,
        max_seconds=args.max_seconds,
    )


__all__ = [
    "LiveCapture",
    "LiveTotals",
    "live_records",
    "live_stream",
    "main",
    "open_live",
    "run_live",
]

if __name__ == "__main__":
    sys.exit(main())
