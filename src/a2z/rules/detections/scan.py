"""Port scans and ping sweeps, from conn records (ATT&CK T1046 Network Service Discovery).

Like Zeek's ``policy/misc/scan.zeek`` these count *failed* connection attempts (no answer,
refused, or reset before any data), so busy but healthy clients stay silent: vertical scans
count distinct ports of one host, horizontal scans distinct hosts on one port, sweeps
distinct hosts answering (or not) an ICMP echo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from a2z.records import Alert, Conn, Record, Severity
from a2z.rules.detections.base import (
    BoundedMap,
    DetectionInfo,
    DetectionStats,
    Window,
    make_alert,
)

FAILED_STATES = frozenset({"S0", "REJ", "RSTO", "RSTOS0", "RSTR", "RSTRH", "SH", "SHR"})
"""Zeek conn states of attempts that never carried data both ways: what scanners leave."""

ICMP_ECHO_REQUEST = (8, 128)  # IPv4 and IPv6 echo request types (conn id.orig_p for ICMP)
MAX_PROBE_DATAGRAM = 128  # IP bytes: UDP probes are small; QUIC's padded Initials are not


def failed_attempt(conn: Conn) -> bool:
    """A TCP or UDP attempt that got no conversation going (Zeek state, no payload answered)."""
    if conn.proto == "tcp":
        return conn.conn_state in FAILED_STATES and not conn.resp_bytes
    if conn.proto == "udp":
        # A small datagram nobody answered. Large unanswered ones are a client's QUIC attempts
        # where UDP/443 is blocked, or one side of an asymmetric capture: not probes.
        return conn.conn_state == "S0" and conn.orig_ip_bytes <= MAX_PROBE_DATAGRAM * max(
            conn.orig_pkts, 1
        )
    return False


@dataclass(frozen=True, slots=True)
class ScanSettings:
    """Tunables of the scan detections (docs/detections.md)."""

    window_s: float = 300.0  # counting window per key, as Zeek's scan interval (5 min)
    vertical_ports: int = 15  # distinct ports of one host (Zeek: port_scan_threshold 15)
    horizontal_hosts: int = 10  # distinct hosts on one port (Zeek: 25; ours suits small sites)
    sweep_hosts: int = 10  # distinct hosts sent an ICMP echo request
    max_keys: int = 10_000  # sources (x targets) tracked at once; least recent evicted


@dataclass(slots=True)
class _Distinct(Window):
    """A window's distinct targets, kept up to the threshold (then only counted)."""

    seen: set[object] = field(default_factory=set)
    count: int = 0  # distinct targets, exact up to the threshold


class _DistinctCounter:
    """Shared logic: per key, distinct targets in a window; one alert when ``threshold`` is hit."""

    info: ClassVar[DetectionInfo]
    consumes: ClassVar[tuple[type[Record], ...]] = (Conn,)

    def __init__(self, threshold: int, window_s: float, max_keys: int) -> None:
        self.stats = DetectionStats()
        self.threshold = threshold
        self.window_s = window_s
        self._state: BoundedMap[tuple[object, ...], _Distinct] = BoundedMap(max_keys, self.stats)

    def _count(self, conn: Conn, key: tuple[object, ...], target: object, what: str) -> list[Alert]:
        ts = conn.ts
        state = self._state.get(key, lambda: _Distinct(start=ts))
        if ts - state.start > self.window_s:  # the window is over: start counting afresh
            state.start, state.fired, state.count = ts, False, 0
            state.seen.clear()
            state.uids.clear()
        if state.fired or target in state.seen:
            return []
        state.seen.add(target)
        state.count += 1
        state.add_uid(conn.uid)
        if state.count < self.threshold:
            return []
        state.fired = True
        state.seen.clear()  # counted: the set's memory is no longer needed in this window
        self.stats.alerts += 1
        span = max(ts - state.start, 0.0)
        return [
            make_alert(
                self.info,
                conn,
                msg=f"{state.count} distinct {what} in {span:.1f} s",
                key=key,
                uids=state.uids,
            )
        ]


class VerticalScan(_DistinctCounter):
    """Failed attempts from one source to many ports of one destination."""

    info = DetectionInfo(
        "a2z.net.scan.vertical",
        "Vertical port scan",
        Severity.MEDIUM,
        ("T1046",),
    )

    def __init__(self, settings: ScanSettings | None = None) -> None:
        s = settings or ScanSettings()
        super().__init__(s.vertical_ports, s.window_s, s.max_keys)

    def observe(self, record: Record) -> list[Alert]:
        """Count the port of a failed attempt towards the (source, destination) pair."""
        self.stats.records += 1
        if not isinstance(record, Conn) or not failed_attempt(record):
            return []
        return self._count(
            record,
            (record.orig_h, record.resp_h),
            (record.proto, record.resp_p),
            f"ports of {record.resp_h}",
        )


class HorizontalScan(_DistinctCounter):
    """Failed attempts from one source to one port on many destinations."""

    info = DetectionInfo(
        "a2z.net.scan.horizontal",
        "Horizontal port scan",
        Severity.MEDIUM,
        ("T1046",),
    )

    def __init__(self, settings: ScanSettings | None = None) -> None:
        s = settings or ScanSettings()
        super().__init__(s.horizontal_hosts, s.window_s, s.max_keys)

    def observe(self, record: Record) -> list[Alert]:
        """Count the destination of a failed attempt towards the (source, port) pair."""
        self.stats.records += 1
        if not isinstance(record, Conn) or not failed_attempt(record):
            return []
        key = (record.orig_h, record.proto, record.resp_p)
        return self._count(record, key, record.resp_h, f"hosts on {record.proto}/{record.resp_p}")


class IcmpSweep(_DistinctCounter):
    """ICMP echo requests from one source to many destinations (``nmap -sn``, fping)."""

    info = DetectionInfo(
        "a2z.net.scan.icmp_sweep",
        "ICMP ping sweep",
        Severity.LOW,
        ("T1018",),
    )

    def __init__(self, settings: ScanSettings | None = None) -> None:
        s = settings or ScanSettings()
        super().__init__(s.sweep_hosts, s.window_s, s.max_keys)

    def observe(self, record: Record) -> list[Alert]:
        """Count the destination of an echo request towards its source."""
        self.stats.records += 1
        if (
            not isinstance(record, Conn)
            or record.proto != "icmp"
            or record.orig_p not in ICMP_ECHO_REQUEST
        ):
            return []
        return self._count(record, (record.orig_h,), record.resp_h, "hosts pinged")
