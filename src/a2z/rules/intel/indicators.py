"""Indicators of compromise: their types, the record, and the one normal form each value takes.

Every value is normalised once, at import, so that matching is a plain dictionary (or radix
tree) lookup of the observed value normalised the same way.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import socket
from urllib.parse import urlsplit

import msgspec


class IntelError(Exception):
    """Root of the threat-intel errors."""


class InvalidIndicator(IntelError):
    """A value that is not a valid indicator of the given (or any) type."""


class IndicatorType(enum.StrEnum):
    """What an indicator's value is; IP covers single addresses and CIDR blocks alike."""

    IP = "ip"
    DOMAIN = "domain"
    URL = "url"
    JA3 = "ja3"
    JA4 = "ja4"
    MD5 = "md5"
    SHA1 = "sha1"
    SHA256 = "sha256"


class Indicator(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One indicator from one source. Array-encoded: the agents' deltas carry many of them."""

    type: IndicatorType
    value: str  # normal form (see ``normalise``)
    source: str  # the feed or list it came from, e.g. "abuse.ch feodo"
    confidence: int = 50  # 0-100, as in STIX 2.1
    expires: float | None = None  # epoch seconds after which it no longer matches
    ref: str | None = None  # the source's own id, e.g. a STIX indicator id

    @property
    def key(self) -> tuple[IndicatorType, str, str]:
        """Identity: the same value from two sources is two indicators."""
        return (self.type, self.value, self.source)

    def live(self, now: float) -> bool:
        return self.expires is None or now < self.expires


_HEX = {IndicatorType.MD5: 32, IndicatorType.SHA1: 40, IndicatorType.SHA256: 64}
_HEX_RE = re.compile(r"[0-9a-f]+")
_LABEL_RE = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
# JA4 "a" part: protocol, TLS version, SNI flag, cipher and extension counts, ALPN.
_JA4_RE = re.compile(r"[tqd][0-9a-z]{2}[di]\d{4}[0-9a-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}


def normalise(kind: IndicatorType, raw: str) -> str:
    """The normal form of ``raw`` as a ``kind`` indicator; InvalidIndicator if it is not one."""
    value = raw.strip()
    if kind is IndicatorType.IP:
        return normalise_ip(value)
    if kind is IndicatorType.DOMAIN:
        return normalise_domain(value)
    if kind is IndicatorType.URL:
        return normalise_url(value)
    lowered = value.lower()
    if kind is IndicatorType.JA4:
        if not _JA4_RE.fullmatch(lowered):
            raise InvalidIndicator(f"not a JA4 fingerprint: {raw!r}")
        return lowered
    length = 32 if kind is IndicatorType.JA3 else _HEX[kind]
    if len(lowered) != length or not _HEX_RE.fullmatch(lowered):
        raise InvalidIndicator(f"not a {kind.value} ({length} hex digits): {raw!r}")
    return lowered


def normalise_ip(value: str) -> str:
    """An address (``192.0.2.1``) or a block (``10.0.0.0/8``; host bits cleared)."""
    text = value.strip()
    if "/" not in text and ":" not in text:
        # Most indicators are plain IPv4 addresses: inet_pton (C) accepts exactly the dotted
        # quads ipaddress accepts, which are then already in normal form, ten times faster.
        try:
            socket.inet_pton(socket.AF_INET, text)
        except (OSError, ValueError) as exc:  # ValueError: an embedded NUL character
            raise InvalidIndicator(f"not an IP address or CIDR: {value!r}") from exc
        return text
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise InvalidIndicator(f"not an IP address or CIDR: {value!r}") from exc
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def normalise_domain(value: str) -> str:
    """Lower case, no trailing dot, IDNA (punycode) for non-ASCII; labels checked."""
    name = value.strip().rstrip(".").lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise InvalidIndicator(f"not a domain name: {value!r}") from exc
    if not name or len(name) > 253 or not all(_LABEL_RE.fullmatch(p) for p in name.split(".")):
        raise InvalidIndicator(f"not a domain name: {value!r}")
    return name


def normalise_url(value: str) -> str:
    """``scheme://host[:port]/path[?query]``: scheme and host lower case, default port,
    user info and fragment dropped, empty path as ``/``; a bare ``host/path`` is http."""
    text = value.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidIndicator(f"not a URL: {value!r}") from exc
    scheme = parts.scheme.lower()
    host = parts.hostname
    if not scheme or not host:
        raise InvalidIndicator(f"not a URL: {value!r}")
    try:
        host = str(ipaddress.ip_address(host))
        if ":" in host:
            host = f"[{host}]"
    except ValueError:
        host = normalise_domain(host)
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{parts.path or '/'}{query}"


def guess_type(value: str) -> IndicatorType:
    """The type a bare value most likely has (32 hex digits is MD5, not JA3: say so)."""
    text = value.strip()
    lowered = text.lower()
    if "://" in text:
        return IndicatorType.URL
    try:
        ipaddress.ip_network(text, strict=False)
        return IndicatorType.IP
    except ValueError:
        pass
    if _HEX_RE.fullmatch(lowered):
        for kind, length in _HEX.items():
            if len(lowered) == length:
                return kind
    if _JA4_RE.fullmatch(lowered):
        return IndicatorType.JA4
    if "/" in text:
        return IndicatorType.URL
    return IndicatorType.DOMAIN


def make(
    kind: IndicatorType,
    raw: str,
    *,
    source: str,
    confidence: int = 50,
    expires: float | None = None,
    ref: str | None = None,
) -> Indicator:
    """A checked, normalised indicator."""
    if not 0 <= confidence <= 100:
        raise InvalidIndicator(f"confidence must be 0-100, not {confidence}")
    return Indicator(kind, normalise(kind, raw), source, confidence, expires, ref)
