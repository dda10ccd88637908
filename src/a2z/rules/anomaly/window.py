"""Per-source sliding windows over a tenant's conn and dns records: the model's input.

Most attacks in a network log (scans, floods, sweeps, tunnels, beacons) are made of ordinary
connections and are unusual only in aggregate, per source: how many hosts and ports it reached
in the last minute, how many attempts failed, how regular its timing was, how random its DNS
names were. Each source keeps the records of its last ``span`` seconds (at most ``max_entries``)
with running sums, so adding a record and reading the aggregates are O(1) amortised.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from typing import TypeVar

from a2z.records import Conn, Dns

# Zeek states where the connection never completed a normal exchange.
FAILED_STATES = frozenset({"S0", "REJ", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH"})
_K = TypeVar("_K")


def failed(conn: Conn) -> bool:
    """The connection got no normal exchange: a refused or unanswered TCP attempt, a UDP or ICMP
    flow without reply. (Zeek gives every ICMP flow state OTH, answered or not.)"""
    if conn.proto == "icmp":
        return conn.resp_pkts == 0
    return conn.conn_state in FAILED_STATES


@functools.lru_cache(maxsize=65_536)  # bounded: a network's addresses repeat
def link_control(resp_h: str) -> bool:
    """Traffic to a multicast or broadcast address (neighbour discovery, MLD, mDNS, DHCP):
    link housekeeping that every new interface sends, not a source's own activity."""
    try:
        address = ipaddress.ip_address(resp_h)
    except ValueError:
        return False
    return address.is_multicast or (address.version == 4 and str(address).endswith(".255"))


def label_entropy(label: str) -> float:
    """Shannon entropy of the label's characters, bits per character."""
    if not label:
        return 0.0
    n = len(label)
    return -sum(c / n * math.log2(c / n) for c in Counter(label).values())


@dataclass(frozen=True, slots=True)
class _ConnEntry:
    end: float  # ts + duration: when the agent could report it (monotone in arrival order)
    resp_h: str
    resp_p: int
    failed: bool
    no_service: bool


@dataclass(frozen=True, slots=True)
class _DnsEntry:
    ts: float
    name: str
    entropy: float  # the longest label's entropy
    failed: bool  # any answer code but NOERROR


@dataclass(frozen=True, slots=True)
class WindowStats:
    """What a source did in its window (raw counts; ``features`` scales them)."""

    conns: int
    hosts: int  # distinct destination addresses
    ports: int  # distinct destination ports
    failed: int  # connections in a FAILED_STATES state
    no_service: int  # connections with no recognised application protocol
    gap_mean: float  # mean seconds between consecutive connections
    gap_cv: float | None  # their coefficient of variation; None under 4 gaps
    dns: int
    dns_names: int  # distinct names asked
    dns_entropy: float  # mean longest-label entropy, bits per character
    dns_failed: int


class SourceWindow:
    """One source's records of the last ``span`` seconds, at most ``max_entries`` of each kind."""

    __slots__ = (
        "_conns",
        "_dns",
        "_dns_ent",
        "_dns_failed",
        "_failed",
        "_gap_sq",
        "_gap_sum",
        "_gaps",
        "_hosts",
        "_names",
        "_no_service",
        "_ports",
        "last_alert",
        "max_entries",
        "span",
    )  # fmt: skip

    def __init__(self, span: float, max_entries: int) -> None:
        self.span = span
        self.max_entries = max_entries
        self.last_alert: float | None = None  # window time of this source's last alert
        self._conns: deque[_ConnEntry] = deque()
        self._gaps: deque[float] = deque()  # _gaps[i]: seconds from _conns[i] to _conns[i + 1]
        self._dns: deque[_DnsEntry] = deque()
        self._hosts: Counter[str] = Counter()
        self._ports: Counter[int] = Counter()
        self._names: Counter[str] = Counter()
        self._failed = self._no_service = self._dns_failed = 0
        self._gap_sum = self._gap_sq = self._dns_ent = 0.0

    def add_conn(self, conn: Conn) -> float:
        """Add a connection; returns its window time (the end of the connection)."""
        end = conn.ts + max(conn.duration or 0.0, 0.0)
        self._expire(end)
        if self._conns:
            gap = max(end - self._conns[-1].end, 0.0)
            self._gaps.append(gap)
            self._gap_sum += gap
            self._gap_sq += gap * gap
        entry = _ConnEntry(
            end=end,
            resp_h=conn.resp_h,
            resp_p=conn.resp_p,
            failed=failed(conn),
            no_service=not conn.service,
        )
        self._conns.append(entry)
        self._hosts[entry.resp_h] += 1
        self._ports[entry.resp_p] += 1
        self._failed += entry.failed
        self._no_service += entry.no_service
        if len(self._conns) > self.max_entries:
            self._drop_conn()
        return end

    def add_dns(self, dns: Dns) -> None:
        """Add a DNS request (its name's shape and its answer code)."""
        self._expire(dns.ts)
        name = (dns.query or "").rstrip(".").lower()
        longest = max(name.split("."), key=len) if name else ""
        entry = _DnsEntry(
            ts=dns.ts,
            name=name,
            entropy=label_entropy(longest),
            failed=dns.rcode_name not in (None, "NOERROR"),
        )
        self._dns.append(entry)
        self._names[name] += 1
        self._dns_ent += entry.entropy
        self._dns_failed += entry.failed
        if len(self._dns) > self.max_entries:
            self._drop_dns()

    def stats(self) -> WindowStats:
        """The window's aggregates as they stand."""
        conns, dns, gaps = len(self._conns), len(self._dns), len(self._gaps)
        gap_mean = self._gap_sum / gaps if gaps else 0.0
        gap_cv = None
        if gaps >= 4 and gap_mean > 0.0:
            variance = max(self._gap_sq / gaps - gap_mean * gap_mean, 0.0)
            gap_cv = math.sqrt(variance) / gap_mean
        return WindowStats(
            conns=conns,
            hosts=len(self._hosts),
            ports=len(self._ports),
            failed=self._failed,
            no_service=self._no_service,
            gap_mean=gap_mean,
            gap_cv=gap_cv,
            dns=dns,
            dns_names=len(self._names),
            dns_entropy=self._dns_ent / dns if dns else 0.0,
            dns_failed=self._dns_failed,
        )

    def _expire(self, now: float) -> None:
        horizon = now - self.span
        while self._conns and self._conns[0].end < horizon:
            self._drop_conn()
        while self._dns and self._dns[0].ts < horizon:
            self._drop_dns()

    def _drop_conn(self) -> None:
        entry = self._conns.popleft()
        if self._gaps:
            gap = self._gaps.popleft()
            self._gap_sum -= gap
            self._gap_sq -= gap * gap
        if not self._gaps:  # reset the float sums so rounding never accumulates
            self._gap_sum = self._gap_sq = 0.0
        _decrement(self._hosts, entry.resp_h)
        _decrement(self._ports, entry.resp_p)
        self._failed -= entry.failed
        self._no_service -= entry.no_service

    def _drop_dns(self) -> None:
        entry = self._dns.popleft()
        _decrement(self._names, entry.name)
        self._dns_ent -= entry.entropy
        self._dns_failed -= entry.failed
        if not self._dns:
            self._dns_ent = 0.0


def _decrement(counter: Counter[_K], key: _K) -> None:
    left = counter[key] - 1
    if left:
        counter[key] = left
    else:
        del counter[key]


class SourceWindows:
    """A tenant's source windows, at most ``max_sources`` (least recently active evicted)."""

    def __init__(self, span: float, max_entries: int, max_sources: int) -> None:
        self.span = span
        self.max_entries = max_entries
        self.max_sources = max_sources
        self.evictions = 0
        self._windows: OrderedDict[str, SourceWindow] = OrderedDict()

    def of(self, source: str) -> SourceWindow:
        """The source's window, created on first use; marks it most recently active."""
        window = self._windows.get(source)
        if window is None:
            window = self._windows[source] = SourceWindow(self.span, self.max_entries)
            if len(self._windows) > self.max_sources:
                self._windows.popitem(last=False)
                self.evictions += 1
        else:
            self._windows.move_to_end(source)
        return window

    def __len__(self) -> int:
        return len(self._windows)

    def __contains__(self, source: object) -> bool:
        return source in self._windows
