"""The agent's control path: applies pushed configurations and runs commands from the server.

A pushed configuration is validated whole first (its schema by msgspec, the BPF filter by
compiling it with libpcap), then applied part by part: capture filter (swapped on the open
socket, no gap), batch limits, spool cap, protocol logs. If a part fails, the parts already
changed are put back and the push is rejected with the reason, so the old configuration keeps
running. The applied version and body are kept in the state directory (the identity
directory), so a restarted agent resumes the configuration it was given.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from a2z.agent.capture.bpf import compile_bpf
from a2z.agent.capture.errors import CaptureError
from a2z.agent.identity import write_private
from a2z.agent.live import LiveCapture
from a2z.agent.ship.batcher import BatchLimits
from a2z.agent.ship.spool import Spool
from a2z.records import (
    AgentSettings,
    Command,
    CommandResult,
    ConfigPush,
    ConfigResult,
    Dns,
    Http,
    Record,
    RulesPush,
    RulesResult,
    ServerControl,
    Ssl,
)
from a2z.records.control import MAX_REASON_CHARS

log = logging.getLogger(__name__)

STATE_FILE = "applied-config.json"
_PROTOCOL_RECORDS: dict[str, type] = {"dns": Dns, "http": Http, "ssl": Ssl}
_LINKTYPE_ETHERNET = 1


class AppliedConfig(msgspec.Struct, frozen=True):
    """What the state file holds: the configuration running and its version."""

    version: int
    config: AgentSettings


class _Probe(msgspec.Struct):
    """Enough of a control message to answer it when the rest does not validate."""

    type: str = ""
    version: int = 0
    id: str = ""
    digest: str = ""


_server_control = msgspec.json.Decoder(ServerControl)
_probe = msgspec.json.Decoder(_Probe)
_encode = msgspec.json.Encoder().encode


@dataclass
class AgentRuntime:
    """The agent's changeable state and the parts a configuration tunes."""

    state_dir: Path | None = None  # where the applied configuration is kept (None: nowhere)
    capture: LiveCapture | None = None  # the live capture, if the agent captures
    limits: BatchLimits = field(default_factory=BatchLimits)
    spool: Spool | None = None
    version: int = 0  # the configuration version running (0: local defaults)
    settings: AgentSettings = field(default_factory=AgentSettings)
    on_applied: Callable[[int], None] | None = None  # told the new version (for heartbeats)
    run_command: Callable[[Command], Awaitable[CommandResult]] | None = None
    apply_rules: Callable[[RulesPush], RulesResult] | None = None  # agent/pushed_rules.py
    _dropped: frozenset[type] = frozenset()  # record types of disabled protocols

    # -- configuration ---------------------------------------------------------------------

    def resume(self) -> None:
        """Apply the configuration kept from an earlier run, if any (a bad one is ignored)."""
        if self.state_dir is None:
            return
        path = self.state_dir / STATE_FILE
        try:
            kept = msgspec.json.decode(path.read_bytes(), type=AppliedConfig)
        except FileNotFoundError:
            return
        except (OSError, msgspec.DecodeError) as exc:
            log.warning("ignoring the kept configuration %s: %s", path, exc)
            return
        result = self.apply(kept.version, kept.config, persist=False)
        if not result.applied:
            log.warning("kept configuration %d no longer applies: %s", kept.version, result.reason)

    def apply(self, version: int, new: AgentSettings, *, persist: bool = True) -> ConfigResult:
        """Validate and apply ``new`` as ``version``; on any failure the old one stays."""
        if version == self.version and new == self.settings:
            return ConfigResult(version=version, applied=True)  # a re-push: nothing to do
        try:
            self._validate(new)
        except (CaptureError, ValueError) as exc:
            return _rejected(version, f"invalid configuration: {exc}")
        old = self.settings
        steps: list[Callable[[AgentSettings], None]] = [
            self._apply_filter, self._apply_limits, self._apply_spool, self._apply_protocols,
        ]  # fmt: skip
        done: list[Callable[[AgentSettings], None]] = []
        try:
            for step in steps:
                step(new)
                done.append(step)
        except Exception as exc:  # any part failing means the whole push fails
            for undo in reversed(done):
                try:
                    undo(old)
                except Exception:  # keep rolling back the other parts
                    log.exception("rolling back %s failed", undo.__name__)
            return _rejected(version, f"applying failed and was rolled back: {exc}")
        self.settings, self.version = new, version
        if persist and self.state_dir is not None:
            write_private(
                self.state_dir / STATE_FILE, msgspec.json.encode(AppliedConfig(version, new))
            )
        if self.on_applied is not None:
            self.on_applied(version)
        log.info("applied configuration version %d", version)
        return ConfigResult(version=version, applied=True)

    def keeps(self, record: Record) -> bool:
        """False for records of a protocol the configuration turned off."""
        return type(record) not in self._dropped

    def _validate(self, new: AgentSettings) -> None:
        # msgspec checked types and ranges on decode; the filter needs the compiler.
        if not new.bpf:
            return
        if self.capture is not None:
            self.capture.check_filter(new.bpf)
        else:
            compile_bpf(new.bpf, _LINKTYPE_ETHERNET)

    def _apply_filter(self, new: AgentSettings) -> None:
        if self.capture is not None and self.capture.bpf != new.bpf:
            self.capture.set_filter(new.bpf)

    def _apply_limits(self, new: AgentSettings) -> None:
        self.limits.size = new.batch_size
        self.limits.max_wait_s = new.batch_max_wait_s

    def _apply_spool(self, new: AgentSettings) -> None:
        if self.spool is not None:
            self.spool.resize(new.spool_max_bytes)

    def _apply_protocols(self, new: AgentSettings) -> None:
        self._dropped = frozenset(
            cls for name, cls in _PROTOCOL_RECORDS.items() if name not in new.protocols
        )

    # -- the channel's control handler --------------------------------------------------------

    async def handle(self, text: str) -> str | None:
        """Answer one server control message (a ChannelClient ``control`` handler)."""
        try:
            message = _server_control.decode(text)
        except msgspec.DecodeError as exc:
            return self._refuse(text, exc)
        if isinstance(message, ConfigPush):
            result = await asyncio.to_thread(self.apply, message.version, message.config)
            if not result.applied:
                log.warning("rejected configuration %d: %s", result.version, result.reason)
            return _encode(result).decode()
        if isinstance(message, RulesPush):
            return _encode(await self._apply_rules(message)).decode()
        if self.run_command is None:
            return _encode(
                CommandResult(id=message.id, ok=False, error="this agent takes no commands")
            ).decode()
        return _encode(await self.run_command(message)).decode()

    async def _apply_rules(self, push: RulesPush) -> RulesResult:
        if self.apply_rules is None:
            return _rules_rejected(push.digest, push.version, "this agent takes no rule sets")
        # Compiling a set takes a while (pySigma): off the event loop, like a configuration.
        return await asyncio.to_thread(self.apply_rules, push)

    def _refuse(self, text: str, exc: Exception) -> str | None:
        # The agent validates again what the server validated: a message that fails here is
        # answered as refused (so the API shows why), never half-applied.
        try:
            probe = _probe.decode(text)
        except msgspec.DecodeError:
            log.warning("ignoring an unreadable control message: %s", exc)
            return None
        if probe.type == "config":
            return _encode(_rejected(probe.version, f"invalid configuration: {exc}")).decode()
        if probe.type == "rules" and probe.digest:
            reason = f"invalid rule set: {exc}"
            return _encode(_rules_rejected(probe.digest, probe.version, reason)).decode()
        if probe.type == "command" and probe.id:
            error = f"invalid command: {exc}"[:MAX_REASON_CHARS]
            return _encode(CommandResult(id=probe.id, ok=False, error=error)).decode()
        log.warning("ignoring an unknown control message type %r", probe.type)
        return None


def _rejected(version: int, reason: str) -> ConfigResult:
    return ConfigResult(version=version, applied=False, reason=reason[:MAX_REASON_CHARS])


def _rules_rejected(digest: str, version: int, reason: str) -> RulesResult:
    return RulesResult(
        digest=digest[:64], version=version, applied=False, reason=reason[:MAX_REASON_CHARS]
    )


class LogRing(logging.Handler):
    """The agent's most recent log lines, for diagnostics bundles."""

    def __init__(self, lines: int = 1000, line_chars: int = 2000) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[str] = deque(maxlen=lines)
        self._line_chars = line_chars
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record)[: self._line_chars])
        except Exception:  # logging must never raise into the code that logs
            self.handleError(record)
