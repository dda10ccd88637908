"""Shipping with capture workers: ``a2z agent run --config ... -i IFACE --workers N``.

Each worker process opens its own AF_PACKET socket in one PACKET_FANOUT group (flow hash),
runs its own pipeline, analyzer switch and resource governor, and sends its records to this
(the parent) process, which runs the one channel, batcher, spool and edge detection. The
control path reaches the workers through :class:`WorkerPool`: a configuration is applied by
every worker or by none (the ones that applied are put back), so the parent reports one
applied version for the whole agent; ``restart-capture`` restarts every worker's socket.

Two pipes per worker: records and counters flow up one (read by the thread that feeds the
batcher), requests and their answers use the other (the control thread), so neither waits
behind the other.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from typing import Any, Protocol, cast

import msgspec

from a2z.agent.budget import ResourceGovernor, merge_reports
from a2z.agent.capture.af_packet import AfPacketSource, CaptureCounters, RingConfig, fanout_group_id
from a2z.agent.capture.errors import CaptureError
from a2z.agent.capture.packet import RawPacket
from a2z.agent.control import AgentRuntime
from a2z.agent.live import POLL_SECONDS, LiveCapture
from a2z.agent.pipeline import Pipeline
from a2z.agent.protocols.analyzer import AnalyzerSwitch, ProtocolConfig
from a2z.records import AgentSettings, BudgetReport, Record

log = logging.getLogger(__name__)

START_SECONDS = 30.0  # longest wait for every worker to open its socket
REQUEST_SECONDS = 15.0  # longest wait for a worker to answer a control request
STATS_SECONDS = 1.0  # how often a worker reports its counters and budget state
JOIN_SECONDS = 10.0  # how long a stopping worker may take to flush before it is killed

_records = msgspec.msgpack.Decoder(list[Record])
_settings = msgspec.msgpack.Decoder(AgentSettings)


class CaptureSource(Protocol):
    """What a worker captures from: an ``AfPacketSource`` (or a test's stand-in)."""

    linktype: int
    interface: str
    ring_config: RingConfig

    def batch(self, timeout: float) -> list[RawPacket]: ...
    def set_filter(self, bpf: str | None) -> None: ...
    def read_counters(self) -> CaptureCounters: ...
    def close(self) -> None: ...


class SourceOpener(Protocol):
    """Opens worker ``index``'s socket with a filter in a fanout group (picklable: it is sent
    to the spawned worker process)."""

    def __call__(self, bpf: str | None, group: int, index: int) -> CaptureSource: ...


@dataclass(frozen=True)
class AfPacketOpener:
    """Opens an AF_PACKET fanout member on ``interface``."""

    interface: str
    ring: RingConfig | None = None

    def __call__(self, bpf: str | None, group: int, index: int) -> CaptureSource:
        return AfPacketSource(self.interface, bpf=bpf, fanout_group=group, ring=self.ring)


class WorkerError(CaptureError):
    """A worker failed to start, to answer, or to carry out a request."""


@dataclass
class _Worker:
    index: int
    proc: Any  # multiprocessing's SpawnProcess (its class is not exported for typing)
    records: multiprocessing.connection.Connection  # worker -> parent: records, counters
    control: multiprocessing.connection.Connection  # requests and answers
    lock: threading.Lock = field(default_factory=threading.Lock)
    counters: CaptureCounters = field(default_factory=CaptureCounters)
    budget: BudgetReport | None = None

    def request(self, message: tuple[Any, ...], timeout: float = REQUEST_SECONDS) -> str:
        """Send one request and wait for its answer; WorkerError on failure or silence."""
        with self.lock:
            try:
                self.control.send(message)
                if not self.control.poll(timeout):
                    raise WorkerError(f"worker {self.index} did not answer within {timeout:g} s")
                ok, text = self.control.recv()
            except (OSError, EOFError) as exc:
                raise WorkerError(f"worker {self.index} is gone: {exc}") from exc
        if not ok:
            raise WorkerError(f"worker {self.index}: {text}")
        return str(text)


class WorkerPool:
    """N capture workers in one fanout group, steered as one."""

    def __init__(
        self,
        opener: SourceOpener,
        workers: int,
        bpf: str | None = None,
    ) -> None:
        self._opener = opener
        self.size = workers
        self.bpf = bpf or ""  # the filter every worker runs
        self.restarts = 0  # restart-capture requests every worker carried out
        # What every worker runs (a pool-local sequence number and the settings), to go back to.
        self._seq, self._settings = 0, AgentSettings(bpf=self.bpf)
        self._workers: list[_Worker] = []
        self._ctx = multiprocessing.get_context("spawn")  # no inherited locks or threads
        self._halt: Event = self._ctx.Event()
        self._apply_lock = threading.Lock()
        self._stop_lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the workers and wait until each has its socket open (CaptureError if not)."""
        group = fanout_group_id()
        for index in range(self.size):
            rec_recv, rec_send = self._ctx.Pipe(duplex=False)
            ctl_parent, ctl_worker = self._ctx.Pipe(duplex=True)
            proc = self._ctx.Process(
                target=_worker_main,
                args=(self._opener, index, group, self.bpf or None, self._halt, rec_send,
                      ctl_worker, os.getpid()),
                daemon=True,
            )  # fmt: skip
            proc.start()
            rec_send.close()
            ctl_worker.close()
            self._workers.append(_Worker(index, proc, rec_recv, ctl_parent))
        deadline = time.monotonic() + START_SECONDS
        waiting = {w.records: w for w in self._workers}
        try:
            while waiting:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WorkerError(f"capture workers did not start within {START_SECONDS:g} s")
                for conn in multiprocessing.connection.wait(list(waiting), timeout=left):
                    worker = waiting.pop(cast(multiprocessing.connection.Connection, conn))
                    try:
                        kind, payload = worker.records.recv()
                    except EOFError:
                        raise WorkerError(f"worker {worker.index} exited while starting") from None
                    if kind == "error":
                        raise CaptureError(str(payload))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Halt the workers (they flush their flows first) and reap them. Idempotent, and safe
        from any thread: the reading thread's ``records`` ends it too, often at the same time
        as the thread shutting the agent down."""
        self._halt.set()
        with self._stop_lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.proc.join(JOIN_SECONDS)
            if worker.proc.is_alive():
                worker.proc.kill()
                worker.proc.join(JOIN_SECONDS)
            worker.records.close()
            worker.control.close()

    def records(
        self, max_packets: int | None = None, max_seconds: float | None = None
    ) -> Iterator[Record | None]:
        """The workers' records as they come, ``None`` after each idle poll, until a limit;
        stops the workers at the end (their last flows are flushed and yielded first)."""
        deadline = time.monotonic() + max_seconds if max_seconds is not None else None
        live = {w.records: w for w in self._workers}
        packets = 0
        try:
            while live:
                if (deadline is not None and time.monotonic() >= deadline) or (
                    max_packets is not None and packets >= max_packets
                ):
                    self._halt.set()
                try:
                    ready = multiprocessing.connection.wait(list(live), timeout=POLL_SECONDS)
                except (OSError, ValueError):
                    if self._halt.is_set():  # stopped from another thread: pipes closed
                        return
                    raise
                for ready_conn in ready:
                    conn = cast(multiprocessing.connection.Connection, ready_conn)
                    worker = live[conn]
                    try:
                        kind, payload = worker.records.recv()
                    except (OSError, ValueError):
                        if self._halt.is_set():  # stopped from another thread mid-read
                            return
                        raise
                    except EOFError:
                        del live[conn]
                        if not self._halt.is_set():
                            raise WorkerError(
                                f"capture worker {worker.index} exited unexpectedly"
                            ) from None
                        continue
                    if kind == "records":
                        body, n = payload
                        packets += n
                        yield from _records.decode(body)
                    elif kind == "stats":
                        self._note(worker, payload)
                    elif kind == "done":
                        self._note(worker, payload)
                        del live[conn]
                yield None
        finally:
            self.stop()

    # -- control --------------------------------------------------------------------------------

    def apply(self, settings: AgentSettings) -> None:
        """Every worker runs ``settings``, or none does: on the first failure the workers that
        applied are put back on the previous settings, and WorkerError says which failed."""
        with self._apply_lock:
            if settings == self._settings:
                return
            old_seq, old = self._seq, self._settings
            self._seq += 1
            body = msgspec.msgpack.encode(settings)
            done: list[_Worker] = []
            try:
                for worker in self._workers:
                    worker.request(("apply", self._seq, body))
                    done.append(worker)
            except WorkerError:
                back = msgspec.msgpack.encode(old)
                for worker in done:
                    try:
                        worker.request(("apply", old_seq, back))
                    except WorkerError:
                        log.exception("putting worker %d back failed", worker.index)
                self._seq = old_seq
                raise
            self._settings, self.bpf = settings, settings.bpf

    def restart(self) -> None:
        """Every worker reopens its socket (with the current filter)."""
        for worker in self._workers:
            worker.request(("restart",))
        self.restarts += 1

    def state(self) -> list[dict[str, Any]]:
        """What each worker runs (version, filter, protocols): for diagnostics and tests."""
        return [msgspec.json.decode(w.request(("state",))) for w in self._workers]

    def read_counters(self) -> CaptureCounters:
        """Kernel counters summed over the workers (as of their last report)."""
        total = CaptureCounters()
        for worker in self._workers:
            for name in ("received", "dropped", "freezes", "delivered"):
                setattr(total, name, getattr(total, name) + getattr(worker.counters, name))
        return total

    def budget(self) -> BudgetReport | None:
        """The workers' budget states as one (for heartbeats)."""
        return merge_reports([w.budget for w in self._workers if w.budget is not None])

    def _note(self, worker: _Worker, payload: dict[str, Any]) -> None:
        for name in ("received", "dropped", "freezes", "delivered"):
            setattr(worker.counters, name, int(payload["counters"][name]))
        if payload.get("budget") is not None:
            worker.budget = msgspec.convert(payload["budget"], type=BudgetReport)


# -- the worker process ---------------------------------------------------------------------


def _worker_main(
    opener: SourceOpener,
    index: int,
    group: int,
    bpf: str | None,
    halt: Event,
    out: multiprocessing.connection.Connection,
    control: multiprocessing.connection.Connection,
    parent: int,
) -> None:
    """One fanout member: capture, decode, send records up; answer control requests."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, lambda *_: halt.set())
    try:
        # LiveCapture uses only what CaptureSource declares of an AfPacketSource.
        capture = LiveCapture(lambda expr: cast(AfPacketSource, opener(expr, group, index)), bpf)
    except CaptureError as exc:
        out.send(("error", str(exc)))
        out.close()
        return
    switch = AnalyzerSwitch()
    governor = ResourceGovernor(switch)
    # The parent keeps the applied configuration; a worker starts on the command line's filter
    # and gets the configuration relayed (a resumed one too) like any later push.
    runtime = AgentRuntime(capture=capture, analyzers=switch, governor=governor)
    answering = threading.Thread(
        target=_answer, args=(runtime, capture, control, halt), daemon=True
    )
    answering.start()
    out.send(("ready", None))
    pipeline = Pipeline(protocols=ProtocolConfig(analyzers=switch))
    encode = msgspec.msgpack.Encoder().encode
    pending: list[Record] = []
    next_stats = next_sample = time.monotonic()
    try:
        while not halt.is_set() and os.getppid() == parent:  # stop, or orphaned
            pkts = capture.batch(POLL_SECONDS)
            for pkt in pkts:
                pending.extend(pipeline.feed(pkt))
            governor.enforce(pipeline.table)
            pending.extend(pipeline.advance(time.time()))
            if pending or pkts:
                out.send(("records", (encode(pending), len(pkts))))
                pending.clear()
            now = time.monotonic()
            if now >= next_sample:
                governor.sample()
                next_sample = now + governor.policy.interval_s
            if now >= next_stats:
                out.send(("stats", _stats(capture, governor)))
                next_stats = now + STATS_SECONDS
        pending.extend(pipeline.flush())
        out.send(("records", (encode(pending), 0)))
        out.send(("done", _stats(capture, governor)))
    finally:
        capture.close()
        out.close()


def _answer(
    runtime: AgentRuntime,
    capture: LiveCapture,
    control: multiprocessing.connection.Connection,
    halt: Event,
) -> None:
    # The worker's control thread: the capture loop keeps running while a request is served
    # (a restart waits for that loop to reopen the socket between two batches).
    handlers: dict[str, Callable[..., str]] = {
        "apply": lambda seq, body: _apply(runtime, seq, body),
        "restart": lambda: _restart(capture),
        "state": lambda: msgspec.json.encode(
            {"version": runtime.version, "bpf": capture.bpf,
             "protocols": sorted(runtime.analyzers.configured), "restarts": capture.restarts}
        ).decode(),
    }  # fmt: skip
    while not halt.is_set():
        try:
            if not control.poll(POLL_SECONDS):
                continue
            kind, *args = control.recv()
        except (OSError, EOFError):
            return
        try:
            answer: tuple[bool, str] = (True, handlers[kind](*args))
        except (CaptureError, ValueError, KeyError) as exc:
            answer = (False, str(exc) or type(exc).__name__)
        try:
            control.send(answer)
        except OSError:
            return


def _apply(runtime: AgentRuntime, seq: int, body: bytes) -> str:
    result = runtime.apply(seq, _settings.decode(body), persist=False)
    if not result.applied:
        raise ValueError(result.reason)
    return ""


def _restart(capture: LiveCapture) -> str:
    capture.restart()
    return ""


def _stats(capture: LiveCapture, governor: ResourceGovernor) -> dict[str, Any]:
    counters = capture.read_counters()
    return {
        "counters": {
            "received": counters.received,
            "dropped": counters.dropped,
            "freezes": counters.freezes,
            "delivered": counters.delivered,
        },
        "budget": msgspec.to_builtins(governor.report()),
    }


__all__ = ["AfPacketOpener", "CaptureSource", "SourceOpener", "WorkerError", "WorkerPool"]
