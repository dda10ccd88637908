"""Control messages on the agent channel (JSON text frames; record batches are binary frames)."""

from __future__ import annotations

import msgspec

MAX_CONTROL_BYTES = 64 * 1024  # a control frame larger than this is refused unread


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


Control = Heartbeat  # the union grows with config acks and command results
