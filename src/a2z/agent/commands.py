"""Commands from the server, run once each: a command id already answered is answered again
with the same result (redelivery after a reconnect must not, say, restart the capture twice).
The answered ids and results are kept in the state directory, so this holds across restarts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psutil

from a2z import __version__
from a2z.agent.capture.errors import CaptureError
from a2z.agent.control import AgentRuntime, LogRing
from a2z.agent.detect import DetectConfigError, EdgeDetector
from a2z.agent.identity import write_private
from a2z.agent.ship.channel import ShipStats
from a2z.records import AgentSettings, Command, CommandResult
from a2z.records.control import MAX_REASON_CHARS, MAX_RESULT_BYTES

log = logging.getLogger(__name__)

RESULTS_FILE = "command-results.json"
KEEP_RESULTS = 256  # answered ids remembered; the server expires a command long before


class CommandError(Exception):
    """A command could not be carried out; the message becomes the result's ``error``."""


Upgrader = Callable[[dict[str, Any], str], Awaitable[dict[str, Any]]]  # (args, command id)
_results = msgspec.json.Decoder(dict[str, CommandResult])


@dataclass
class CommandRunner:
    """Runs commands against the agent's runtime; one at a time, each id once."""

    runtime: AgentRuntime
    stats: ShipStats = field(default_factory=ShipStats)
    logs: LogRing | None = None
    upgrade: Upgrader | None = None  # installs a release (a2z.agent.upgrade)
    detector: EdgeDetector | None = None  # the edge detection stage, if detection is on
    _done: dict[str, CommandResult] = field(default_factory=dict)
    _held: dict[str, asyncio.Event] = field(default_factory=dict)  # answered after ``settle``
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        state = self.runtime.state_dir
        if state is None:
            return
        try:
            self._done = _results.decode((state / RESULTS_FILE).read_bytes())
        except FileNotFoundError:
            pass
        except (OSError, msgspec.DecodeError) as exc:
            log.warning("starting without remembered command results: %s", exc)

    def hold(self, command_id: str) -> None:
        """Answer ``command_id`` only after ``settle`` (an upgrade waiting for its restart)."""
        self._held[command_id] = asyncio.Event()

    @property
    def held(self) -> frozenset[str]:
        """Command ids waiting for ``settle``."""
        return frozenset(self._held)

    def settle(self, result: CommandResult) -> None:
        """Record the answer of a held command (the upgrade trial's outcome)."""
        self._remember(result)
        held = self._held.pop(result.id, None)
        if held is not None:
            held.set()

    async def __call__(self, command: Command) -> CommandResult:
        """Run ``command`` (or re-answer it) and return its result."""
        held = self._held.get(command.id)
        if held is not None:  # the trial settles at the first connect: soon
            await held.wait()
        async with self._lock:
            done = self._done.get(command.id)
            if done is not None:
                return done
            try:
                result = CommandResult(id=command.id, ok=True, result=await self._run(command))
            except (CommandError, CaptureError, OSError, ValueError) as exc:
                error = str(exc)[:MAX_REASON_CHARS] or type(exc).__name__
                result = CommandResult(id=command.id, ok=False, error=error)
            log.info(
                "command %s (%s): %s", command.id, command.kind, "ok" if result.ok else result.error
            )
            self._remember(result)
            return result

    async def _run(self, command: Command) -> dict[str, Any]:
        if command.kind == "collect-diagnostics":
            limit = int(command.args.get("max_bytes", MAX_RESULT_BYTES))
            return diagnostics_bundle(
                self.runtime, self.stats, self.logs, min(limit, MAX_RESULT_BYTES)
            )
        if command.kind == "set-config":
            config = msgspec.convert(command.args.get("config"), type=AgentSettings)  # validates
            version = int(command.args.get("version", 0))
            applied = await asyncio.to_thread(self.runtime.apply, version, config)
            if not applied.applied:
                raise CommandError(applied.reason)
            return {"version": version, "applied": True}
        if command.kind == "restart-capture":
            workers = self.runtime.workers
            if workers is not None:  # every worker's socket, one after the other
                await asyncio.to_thread(workers.restart)
                return {"restarts": workers.restarts, "filter": workers.bpf}
            capture = self.runtime.capture
            if capture is None:
                raise CommandError("this agent is not capturing live")
            await asyncio.to_thread(capture.restart)
            return {"restarts": capture.restarts, "filter": capture.bpf}
        if command.kind == "reload-rules":
            if self.detector is None:
                raise CommandError("edge detection is off on this agent (--no-detect)")
            try:
                return await asyncio.to_thread(self.detector.reload_rules)
            except DetectConfigError as exc:
                raise CommandError(str(exc)) from exc
        if self.upgrade is None:
            raise CommandError("this agent cannot upgrade itself (no release channel)")
        return await self.upgrade(command.args, command.id)

    def _remember(self, result: CommandResult) -> None:
        self._done[result.id] = result
        while len(self._done) > KEEP_RESULTS:
            del self._done[next(iter(self._done))]
        state = self.runtime.state_dir
        if state is not None:
            write_private(state / RESULTS_FILE, msgspec.json.encode(self._done))


def diagnostics_bundle(
    runtime: AgentRuntime, stats: ShipStats, logs: LogRing | None, max_bytes: int
) -> dict[str, Any]:
    """Version, configuration, counters and recent log lines, at most ``max_bytes`` as JSON.

    Log lines are what grows: the oldest go first until the bundle fits.
    """
    proc = psutil.Process()
    bundle: dict[str, Any] = {
        "collected_at": time.time(),
        "version": __version__,
        "config_version": runtime.version,
        "config": msgspec.to_builtins(runtime.settings),
        "channel": {
            "batches_sent": stats.batches_sent,
            "batches_acked": stats.batches_acked,
            "records_acked": stats.records_acked,
            "resends": stats.resends,
            "reconnects": stats.reconnects,
            "refused": len(stats.refused),
        },
        "process": {"rss_bytes": proc.memory_info().rss, "threads": proc.num_threads()},
    }
    if stats.spool is not None:
        spool = stats.spool
        bundle["spool"] = {
            "bytes": spool.bytes,
            "pending_batches": spool.total("pending").batches,
            "dropped_records": spool.total("dropped").records,
            "quarantined_regions": spool.quarantined_regions,
        }
    capture = runtime.workers or runtime.capture
    if capture is not None:
        counters = capture.read_counters()
        bundle["capture"] = {
            "filter": capture.bpf,
            "received": counters.received,
            "dropped": counters.dropped,
            "restarts": capture.restarts,
        }
    lines = list(logs.lines) if logs is not None else []
    bundle["logs"], bundle["logs_truncated"] = lines, False
    size = len(msgspec.json.encode(bundle))
    if size <= max_bytes:
        return bundle
    # Drop the oldest lines until it fits (each line costs its JSON length plus a comma).
    excess, cut = size - max_bytes, 0
    while cut < len(lines) and excess > 0:
        excess -= len(msgspec.json.encode(lines[cut])) + 1
        cut += 1
    bundle["logs"], bundle["logs_truncated"] = lines[cut:], True
    if len(msgspec.json.encode(bundle)) > max_bytes:
        bundle["logs"] = []  # the rest alone is over the limit: a tiny limit
    return bundle


__all__ = ["CommandError", "CommandRunner", "diagnostics_bundle"]
