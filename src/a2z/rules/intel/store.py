"""Indicator sets with constant-time (or radix-tree) lookup, and the warning list of the benign.

Addresses and CIDR blocks live in pytricia radix trees (longest-prefix match in C, O(32) or
O(128) steps whatever the number of blocks); domains in a dict probed once per label suffix
(``a.b.evil.com`` tries itself, ``b.evil.com``, ``evil.com``, ``com``); everything else in a
dict keyed by its normal form.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from typing import Protocol

import pytricia  # type: ignore[import-not-found]  # pytricia ships no type stubs

from a2z.rules.intel.indicators import (
    Indicator,
    IndicatorType,
    InvalidIndicator,
    normalise_domain,
    normalise_ip,
)

Entries = tuple[Indicator, ...]
Slot = Indicator | Entries  # stored: a lone indicator as itself (a 1-tuple costs 56 bytes)


def _entries(slot: Slot | None) -> Entries:
    if slot is None:
        return ()
    return (slot,) if isinstance(slot, Indicator) else slot


def _pack(entries: Entries) -> Slot:
    return entries[0] if len(entries) == 1 else entries


class _Trie(Protocol):
    """The part of pytricia's PyTricia we use, typed."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...
    def __contains__(self, key: str) -> bool: ...
    def __getitem__(self, key: str) -> Slot: ...
    def __setitem__(self, key: str, value: Slot) -> None: ...
    def __delitem__(self, key: str) -> None: ...
    def get(self, key: str) -> Slot | None: ...
    def get_key(self, key: str) -> str | None: ...
    def parent(self, key: str) -> str | None: ...
    def has_key(self, key: str) -> bool: ...


def _trie(bits: int) -> _Trie:
    trie: _Trie = pytricia.PyTricia(bits)
    return trie


def _family(address: str) -> int:
    return 6 if ":" in address else 4


class IndicatorSet:
    """One tenant's (or the global) indicators. ``version`` counts applied changes (deltas)."""

    def __init__(self, indicators: Iterable[Indicator] = (), *, version: int = 0) -> None:
        self.version = version
        self.clear()
        for indicator in indicators:
            self.add(indicator)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Indicator]:
        for trie in (self._v4, self._v6):
            for prefix in list(trie):
                yield from _entries(trie[prefix])
        for table in self._values.values():
            for slot in table.values():
                yield from _entries(slot)

    def _trie_key(self, value: str) -> tuple[_Trie, str]:
        if _family(value) == 6:
            return self._v6, value if "/" in value else f"{value}/128"
        return self._v4, value if "/" in value else f"{value}/32"

    def add(self, indicator: Indicator) -> bool:
        """Add or replace (same type, value and source); True if it was new."""
        if indicator.type is IndicatorType.IP:
            trie, key = self._trie_key(indicator.value)
            # has_key is exact; ``in``/get would answer for any covering block.
            old = _entries(trie[key]) if trie.has_key(key) else ()
            merged = _merge(old, indicator)
            trie[key] = _pack(merged)
        else:
            table = self._values[indicator.type]
            old = _entries(table.get(indicator.value))
            merged = _merge(old, indicator)
            table[indicator.value] = _pack(merged)
        new = len(merged) > len(old)
        self._count += new
        return new

    def remove(self, kind: IndicatorType, value: str, source: str) -> bool:
        """Remove one indicator by its identity; False if it was not there."""
        if kind is IndicatorType.IP:
            trie, key = self._trie_key(value)
            if not trie.has_key(key):
                return False
            old = _entries(trie[key])
            kept = tuple(i for i in old if i.source != source)
            if kept:
                trie[key] = _pack(kept)
            else:
                del trie[key]
        else:
            table = self._values[kind]
            old = _entries(table.get(value))
            kept = tuple(i for i in old if i.source != source)
            if kept:
                table[value] = _pack(kept)
            elif value in table:
                del table[value]
        removed = len(old) - len(kept)
        self._count -= removed
        return removed > 0

    def clear(self) -> None:
        """Remove every indicator (the version stays)."""
        self._v4 = _trie(32)
        self._v6 = _trie(128)
        self._values: dict[IndicatorType, dict[str, Slot]] = {
            kind: {} for kind in IndicatorType if kind is not IndicatorType.IP
        }
        self._count = 0

    def purge(self, now: float) -> int:
        """Drop expired indicators (they no longer match anyway); returns how many."""
        dead = [i for i in self if not i.live(now)]
        for indicator in dead:
            self.remove(indicator.type, indicator.value, indicator.source)
        return len(dead)

    def lookup_ip(self, address: str) -> Entries:
        """Indicators of the most specific block (or address) holding ``address``."""
        trie = self._v6 if _family(address) == 6 else self._v4
        try:
            return _entries(trie.get(address))
        except (ValueError, KeyError, SystemError):  # pytricia: not an address
            return ()

    def covering_ip(self, address: str) -> Iterator[Entries]:
        """Every block holding ``address``, most specific first (for expired inner blocks)."""
        trie = self._v6 if _family(address) == 6 else self._v4
        try:
            prefix = trie.get_key(address)
        except (ValueError, KeyError, SystemError):
            return
        while prefix is not None:
            yield _entries(trie[prefix])
            prefix = trie.parent(prefix)

    def lookup_domain(self, name: str) -> Iterator[Entries]:
        """Indicators of ``name`` and of every parent domain, most specific first."""
        table = self._values[IndicatorType.DOMAIN]
        rest = name
        while True:
            hit = table.get(rest)
            if hit is not None:
                yield _entries(hit)
            dot = rest.find(".")
            if dot < 0:
                return
            rest = rest[dot + 1 :]

    def lookup(self, kind: IndicatorType, value: str) -> Entries:
        """Exact lookup of a normalised value (URL, JA3, JA4, hashes)."""
        return _entries(self._values[kind].get(value))


def _merge(old: Entries, indicator: Indicator) -> Entries:
    return (*(i for i in old if i.source != indicator.source), indicator)


# Known-benign values (the MISP warning-list idea): an indicator whose value is on the list is
# a feed's mistake (a resolver, a private block, a top site), and never raises an alert.
DEFAULT_BENIGN_CIDRS = (
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",  # RFC 1918
    "172.16.0.0/12",  # RFC 1918
    "192.168.0.0/16",  # RFC 1918
    "100.64.0.0/10",  # carrier-grade NAT (RFC 6598)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local
    "224.0.0.0/4",  # multicast
    "255.255.255.255/32",  # broadcast
    "::1/128",  # loopback
    "fe80::/10",  # link-local
    "fc00::/7",  # unique local
    "ff00::/8",  # multicast
    # public resolvers
    "8.8.8.8/32",
    "8.8.4.4/32",
    "1.1.1.1/32",
    "1.0.0.1/32",
    "9.9.9.9/32",
    "149.112.112.112/32",
    "208.67.222.222/32",
    "208.67.220.220/32",
    "2001:4860:4860::8888/128",
    "2001:4860:4860::8844/128",
    "2606:4700:4700::1111/128",
    "2606:4700:4700::1001/128",
)
DEFAULT_BENIGN_DOMAINS = (
    # the most-visited sites and platform update hosts; their subdomains are benign too
    "google.com",
    "googleapis.com",
    "gstatic.com",
    "youtube.com",
    "microsoft.com",
    "windowsupdate.com",
    "windows.com",
    "live.com",
    "office.com",
    "apple.com",
    "icloud.com",
    "amazon.com",
    "amazonaws.com",
    "cloudflare.com",
    "akamai.net",
    "akamaiedge.net",
    "facebook.com",
    "wikipedia.org",
    "github.com",
    "localhost",
    "local",
    "arpa",
)


class WarningList:
    """Values known to be benign: CIDR blocks, domains (with subdomains) and exact values."""

    def __init__(
        self,
        cidrs: Iterable[str] = (),
        domains: Iterable[str] = (),
        values: Iterable[str] = (),
    ) -> None:
        self._v4 = _trie(32)
        self._v6 = _trie(128)
        for cidr in cidrs:
            net = ipaddress.ip_network(cidr, strict=False)
            (self._v6 if net.version == 6 else self._v4)[str(net)] = ()
        self._domains = frozenset(normalise_domain(d) for d in domains)
        self._values = frozenset(v.strip().lower() for v in values)

    @classmethod
    def default(cls) -> WarningList:
        return cls(DEFAULT_BENIGN_CIDRS, DEFAULT_BENIGN_DOMAINS)

    def covers(self, indicator: Indicator) -> bool:
        """True if the indicator's value is known benign (a CIDR: its first address is)."""
        if indicator.type is IndicatorType.IP:
            first = indicator.value.split("/", 1)[0]
            trie = self._v6 if _family(first) == 6 else self._v4
            try:
                return first in trie
            except (ValueError, KeyError, SystemError):
                return False
        if indicator.type is IndicatorType.DOMAIN:
            return self._domain(indicator.value)
        if indicator.type is IndicatorType.URL:
            host = indicator.value.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
            return indicator.value in self._values or self._domain(host)
        return indicator.value in self._values

    def _domain(self, name: str) -> bool:
        rest = name
        while True:
            if rest in self._domains:
                return True
            dot = rest.find(".")
            if dot < 0:
                return False
            rest = rest[dot + 1 :]


def checked_ip(value: str) -> str | None:
    """``value`` as a normalised address, or None if it is not one (for record fields)."""
    try:
        out = normalise_ip(value)
    except InvalidIndicator:
        return None
    return None if "/" in out else out
