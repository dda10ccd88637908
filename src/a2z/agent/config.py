"""Agent configuration: which server, which identity. Read from a file, never the command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import msgspec

MIN_SPOOL_BYTES = 1 << 20  # a smaller spool would hold a handful of batches


class ConfigError(ValueError):
    """The agent's configuration file is missing, unreadable or invalid."""


class AgentConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where to send records and as whom."""

    server: str  # channel URL, e.g. wss://soc.example:8443/channel
    agent_id: str  # the id the server registered this agent under (from enrollment)
    tenant_id: str = ""  # the tenant the agent belongs to (from enrollment; informational)
    identity_dir: str = ""  # key.pem, cert.pem, root.pem written by `a2z agent enroll`
    token: str = ""  # legacy bearer credential; unused with mutual TLS
    batch_size: int = 500  # records per batch
    # Disk spool (a2z.agent.ship.spool): where unacked batches wait; "" keeps them in memory.
    spool_dir: str = ""
    spool_max_bytes: Annotated[int, msgspec.Meta(ge=MIN_SPOOL_BYTES)] = 1 << 30  # past it: drop
    spool_fsync_interval_s: float = 0.5  # 0: fsync every batch; kill -9 loses nothing anyway
    reconnect_max_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0  # reconnect backoff ceiling
    heartbeat_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0  # health report period
    # Where `upgrade` installs releases (versions/<v>/ and the `current` link); "" disables it.
    install_dir: str = ""


def load_config(path: Path) -> AgentConfig:
    """Parse the config file; refuse one that other users can read (it holds a secret)."""
    try:
        raw = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read agent config {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise ConfigError(f"agent config {path} is readable by others; chmod 600 it")
    try:
        return msgspec.json.decode(raw, type=AgentConfig)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"agent config {path} is invalid: {exc}") from exc


def write_config(path: Path, config: AgentConfig) -> None:
    """Write the config with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(msgspec.json.format(msgspec.json.encode(config)))
