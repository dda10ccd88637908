"""DNS tunnelling (ATT&CK T1071.004) and DGA-like lookups (T1568.002), from dns records.

Tunnels carry data in the labels below a domain the attacker controls, so one client asks
that domain many unique, long, high-entropy names, often of type TXT or NULL whose answers
carry the return channel. Malware with a domain generation algorithm asks many random-looking
registered names, most of which do not exist (an NXDOMAIN burst).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from a2z.records import Alert, Dns, Record, Severity
from a2z.rules.detections import names
from a2z.rules.detections.base import BoundedMap, DetectionInfo, DetectionStats, Window, make_alert

TUNNEL_QTYPES = frozenset({"TXT", "NULL"})  # answer types with room for arbitrary data


@dataclass(frozen=True, slots=True)
class TunnelSettings:
    """Tunables of the DNS tunnelling detection (docs/detections.md)."""

    window_s: float = 300.0  # counting window per (client, registered domain)
    long_label: int = 40  # a label this long is suspicious (RFC 1035 allows 63)
    entropy_label: int = 20  # a label this long is suspicious if also this random:
    min_entropy: float = 3.5  # bits per character (hex tops out at 4.0, base32 at 5.0)
    suspicious_queries: int = 5  # unique suspicious names under one domain
    unique_names: int = 100  # unique names of any kind under one domain
    data_queries: int = 20  # unique TXT/NULL names under one domain
    max_keys: int = 10_000  # (client, domain) pairs tracked at once; least recent evicted
    max_names: int = 200  # unique names remembered per pair (then only counted)


@dataclass(frozen=True, slots=True)
class DgaSettings:
    """Tunables of the DGA detection (docs/detections.md)."""

    window_s: float = 300.0  # counting window per client
    min_length: int = 10  # registered labels shorter than this are never scored
    max_bigram_ratio: float = 0.25  # English-like names exceed this share of common pairs
    min_entropy: float = 3.0  # any one of these three then marks the label as random
    min_consonant_ratio: float = 0.7
    min_consonant_run: int = 5
    dga_nxdomains: int = 5  # distinct DGA-like registered domains answered NXDOMAIN
    any_nxdomains: int = 25  # distinct registered domains answered NXDOMAIN, whatever the name
    max_keys: int = 10_000  # clients tracked at once; least recent evicted


def suspicious_label(label: str, settings: TunnelSettings) -> bool:
    """A label long or random enough to be carrying encoded data."""
    if len(label) >= settings.long_label:
        return True
    return len(label) >= settings.entropy_label and names.entropy(label) >= settings.min_entropy


def dga_like(label: str, settings: DgaSettings) -> bool:
    """A registered label that looks machine-made: few English letter pairs, random letters."""
    if len(label) < settings.min_length or label.startswith("xn--"):  # punycode is not random
        return False
    if names.common_bigram_ratio(label) > settings.max_bigram_ratio:
        return False
    return (
        names.entropy(label) >= settings.min_entropy
        or names.consonant_ratio(label) >= settings.min_consonant_ratio
        or names.longest_consonant_run(label) >= settings.min_consonant_run
    )


@dataclass(slots=True)
class _Names(Window):
    names: set[str] = field(default_factory=set)  # unique names asked (capped)
    unique: int = 0  # unique names, exact while the set is below its cap
    suspicious: int = 0  # unique suspicious names
    data: int = 0  # unique TXT/NULL names


class DnsTunnel:
    """Many unique, long or random names, or TXT/NULL lookups, under one registered domain."""

    info: ClassVar[DetectionInfo] = DetectionInfo(
        "a2z.dns.tunnel", "DNS tunnelling", Severity.HIGH, ("T1071.004", "T1048")
    )
    consumes: ClassVar[tuple[type[Record], ...]] = (Dns,)

    def __init__(self, settings: TunnelSettings | None = None) -> None:
        self.settings = settings or TunnelSettings()
        self.stats = DetectionStats()
        self._state: BoundedMap[tuple[str, str], _Names] = BoundedMap(
            self.settings.max_keys, self.stats
        )

    def observe(self, record: Record) -> list[Alert]:
        """Count a query under its registered domain; alert once a threshold is crossed."""
        self.stats.records += 1
        if not isinstance(record, Dns) or not record.query:
            return []
        s = self.settings
        query = names.normalize(record.query)
        parent = names.registered_domain(query)
        sub = names.subdomain(query)
        if not sub:
            return []  # nothing below the registered domain: no room for data
        key = (record.orig_h, parent)
        ts = record.ts
        state = self._state.get(key, lambda: _Names(start=ts))
        if ts - state.start > s.window_s:
            state.start, state.fired = ts, False
            state.unique = state.suspicious = state.data = 0
            state.names.clear()
            state.uids.clear()
        if state.fired or query in state.names:
            return []
        if len(state.names) < s.max_names:
            state.names.add(query)
        state.unique += 1
        longest = max(sub.split("."), key=len)
        if suspicious_label(longest, s):
            state.suspicious += 1
            state.add_uid(record.uid)
        if record.qtype_name in TUNNEL_QTYPES:
            state.data += 1
            state.add_uid(record.uid)
        if (
            state.suspicious < s.suspicious_queries
            and state.unique < s.unique_names
            and state.data < s.data_queries
        ):
            return []
        state.fired = True
        state.names.clear()
        self.stats.alerts += 1
        msg = (
            f"{state.unique} unique names under {parent} ({state.suspicious} long or random, "
            f"{state.data} TXT/NULL) in {ts - state.start:.1f} s"
        )
        return [make_alert(self.info, record, msg=msg, key=key, uids=state.uids or [record.uid])]


@dataclass(slots=True)
class _NxBurst(Window):
    domains: set[str] = field(default_factory=set)  # distinct NXDOMAIN registered domains
    dga: int = 0  # of which DGA-like


class DgaLookups:
    """A burst of NXDOMAIN answers for random-looking registered domains from one client."""

    info: ClassVar[DetectionInfo] = DetectionInfo(
        "a2z.dns.dga", "DGA-like domain lookups", Severity.HIGH, ("T1568.002",)
    )
    consumes: ClassVar[tuple[type[Record], ...]] = (Dns,)

    def __init__(self, settings: DgaSettings | None = None) -> None:
        self.settings = settings or DgaSettings()
        self.stats = DetectionStats()
        self._state: BoundedMap[str, _NxBurst] = BoundedMap(self.settings.max_keys, self.stats)

    def observe(self, record: Record) -> list[Alert]:
        """Count an NXDOMAIN answer towards its client's burst."""
        self.stats.records += 1
        if not isinstance(record, Dns) or record.rcode_name != "NXDOMAIN" or not record.query:
            return []
        s = self.settings
        query = names.normalize(record.query)
        if "." not in query:
            return []  # single-label names (Chrome's start-up probes, WPAD) are not registered
        domain = names.registered_domain(query)
        ts = record.ts
        state = self._state.get(record.orig_h, lambda: _NxBurst(start=ts))
        if ts - state.start > s.window_s:
            state.start, state.fired, state.dga = ts, False, 0
            state.domains.clear()
            state.uids.clear()
        if state.fired or domain in state.domains:
            return []
        state.domains.add(domain)  # bounded: the alert fires (and clears it) at any_nxdomains
        if dga_like(domain.partition(".")[0], s):
            state.dga += 1
            state.add_uid(record.uid)
        if state.dga < s.dga_nxdomains and len(state.domains) < s.any_nxdomains:
            return []
        state.fired = True
        msg = (
            f"{len(state.domains)} registered domains answered NXDOMAIN, {state.dga} of them "
            f"random-looking, in {ts - state.start:.1f} s"
        )
        state.domains.clear()
        self.stats.alerts += 1
        return [
            make_alert(
                self.info, record, msg=msg, key=(record.orig_h,), uids=state.uids or [record.uid]
            )
        ]
