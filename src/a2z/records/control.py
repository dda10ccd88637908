"""Control messages on the agent channel (JSON text frames; record batches are binary frames).

Agent to server: heartbeats, the outcome of a pushed configuration, command results. Server to
agent: configuration pushes and commands. Every control message names its kind in ``type``;
the server's batch acks have no ``type`` (that is how the agent tells the two apart).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from a2z.records.ruleset import RulesPush, RulesResult

MAX_CONTROL_BYTES = 64 * 1024  # a control frame larger than this is refused unread ...
MAX_RESULT_BYTES = 256 * 1024  # ... except a command result (e.g. a diagnostics bundle),
MAX_RESULT_FRAME_BYTES = MAX_RESULT_BYTES + 16 * 1024  # capped at this with its envelope
MAX_REASON_CHARS = 1000  # rejection reasons and command errors are cut to this length

# The application-protocol logs an agent can produce; conn records are always produced.
ProtocolName = Literal["dns", "http", "ssl"]
PROTOCOLS: tuple[ProtocolName, ...] = ("dns", "http", "ssl")
MIN_SPOOL_BYTES = 1 << 20  # a smaller spool would hold a handful of batches

BpfText = Annotated[str, msgspec.Meta(max_length=4096)]
RulesetVersion = Annotated[str, msgspec.Meta(max_length=64, pattern=r"^[A-Za-z0-9._:+-]*$")]
BatchSize = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
BatchWait = Annotated[float, msgspec.Meta(gt=0, le=60)]
SpoolBytes = Annotated[int, msgspec.Meta(ge=MIN_SPOOL_BYTES, le=1 << 40)]
CpuBudget = Annotated[float, msgspec.Meta(gt=0, le=6400)]
RssBudget = Annotated[int, msgspec.Meta(ge=32 << 20, le=1 << 40)]


class ConfigLayer(
    msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, omit_defaults=True
):
    """One layer of agent configuration (a group's or an agent's): unset fields inherit.

    The effective configuration is defaults <- group layer <- agent layer, field by field.
    """

    bpf: BpfText | None = None  # kernel capture filter, tcpdump syntax; "" captures everything
    protocols: list[ProtocolName] | None = None  # protocol logs to produce besides conn
    # Edge rules (ADR 13): "" or "latest" follows the tenant's rule set, "off" runs none,
    # anything else pins one set (its version number or a digest prefix of 12+ hex digits).
    ruleset_version: RulesetVersion | None = None
    batch_size: BatchSize | None = None  # records per batch
    batch_max_wait_s: BatchWait | None = None  # a waiting batch is cut after this long
    spool_max_bytes: SpoolBytes | None = None  # disk spool cap; past it, drop by priority
    cpu_percent_max: CpuBudget | None = None  # resource budget: CPU, percent of one core
    rss_max_bytes: RssBudget | None = None  # resource budget: resident memory


class AgentSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The effective configuration an agent runs: every field set."""

    bpf: BpfText = ""
    protocols: list[ProtocolName] = msgspec.field(default_factory=lambda: list(PROTOCOLS))
    ruleset_version: RulesetVersion = ""
    batch_size: BatchSize = 500
    batch_max_wait_s: BatchWait = 1.0
    spool_max_bytes: SpoolBytes = 1 << 30
    cpu_percent_max: CpuBudget = 100.0
    rss_max_bytes: RssBudget = 512 << 20


def effective_settings(*layers: ConfigLayer | None) -> AgentSettings:
    """Defaults overridden by each layer in turn (later layers win), field by field."""
    merged: dict[str, Any] = msgspec.structs.asdict(AgentSettings())
    for layer in layers:
        if layer is None:
            continue
        for name, value in msgspec.structs.asdict(layer).items():
            if value is not None:
                merged[name] = value
    merged["protocols"] = sorted(set(merged["protocols"]))
    return AgentSettings(**merged)


class ConfigError(ValueError):
    """A configuration document that does not validate; the message says which field."""


def parse_layer(raw: object) -> ConfigLayer:
    """Validate a decoded JSON object as a configuration layer."""
    try:
        return msgspec.convert(raw, type=ConfigLayer)
    except msgspec.ValidationError as exc:
        raise ConfigError(str(exc)) from exc


# -- agent to server -------------------------------------------------------------------------


class Heartbeat(msgspec.Struct, kw_only=True, frozen=True, tag="heartbeat", tag_field="type"):
    """The agent's health, sent every ``heartbeat_interval_s``; the server keeps the latest."""

    ts: float  # agent clock, epoch seconds
    version: str  # agent software version
    config_version: int  # version of the configuration the agent runs
    cpu_percent: float  # of one core, since the previous heartbeat
    rss_bytes: int  # resident memory
    records_per_s: float  # records delivered per second since the previous heartbeat
    records_acked: int  # records the server has acknowledged, in total
    reconnects: int  # channel reconnects, in total
    drops: int  # records the spool had to drop, in total
    spool_bytes: int  # bytes waiting in the disk spool
    # The pushed rule set the edge runs (records/ruleset.py): "" none yet; absent (None) from
    # an agent that takes no rule sets, which the server then never sends one.
    rules_digest: str | None = None


class ConfigResult(
    msgspec.Struct, kw_only=True, frozen=True, tag="config_result", tag_field="type"
):
    """What the agent did with a pushed configuration."""

    version: int  # the pushed version this answers
    applied: bool  # true: running it now; false: rejected, the previous one keeps running
    reason: str = ""  # why it was rejected (or rolled back)


class CommandResult(
    msgspec.Struct, kw_only=True, frozen=True, tag="command_result", tag_field="type"
):
    """The outcome of one command; re-sent unchanged if the same command id comes again."""

    id: str  # the command's UUID
    ok: bool  # false: the command failed; ``error`` says why
    result: dict[str, Any] = msgspec.field(default_factory=dict)  # command-specific, capped
    error: str = ""


Control = Heartbeat | ConfigResult | CommandResult | RulesResult


# -- server to agent -------------------------------------------------------------------------


class ConfigPush(msgspec.Struct, kw_only=True, frozen=True, tag="config", tag_field="type"):
    """The configuration the agent should run, as a whole (not a diff)."""

    version: int  # increases with every change of this agent's effective configuration
    config: AgentSettings


CommandKind = Literal[
    "reload-rules", "set-config", "restart-capture", "collect-diagnostics", "upgrade"
]


class Command(msgspec.Struct, kw_only=True, frozen=True, tag="command", tag_field="type"):
    """One command for the agent; ``id`` makes it idempotent."""

    id: str  # UUID; the agent answers a repeated id with its first result
    kind: CommandKind
    args: dict[str, Any] = msgspec.field(default_factory=dict)


ServerControl = ConfigPush | Command | RulesPush
