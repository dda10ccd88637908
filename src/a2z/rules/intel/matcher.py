"""Records against indicator sets: which field matched which indicator, turned into alerts.

Used per record by the agent (its tenant's set) and the backend (global plus tenant sets).
Each field costs one dict probe, one probe per domain label, or one radix-tree lookup.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from a2z.records import Alert, Conn, Dns, Http, Severity, Ssl, Weird
from a2z.rules.intel.indicators import Indicator, IndicatorType, InvalidIndicator, normalise_url
from a2z.rules.intel.store import Entries, IndicatorSet, WarningList

IntelRecord = Conn | Dns | Http | Ssl | Weird


@dataclass(frozen=True, slots=True)
class IntelHit:
    """One field of one record that holds an indicator's value."""

    field: str  # the record field, by its Zeek name (``url`` is host + uri)
    observed: str  # the value as seen in the record
    indicator: Indicator


@dataclass(slots=True)
class IntelStats:
    """Counters of one matcher; read them at any time."""

    records: int = 0  # records looked at
    hits: int = 0  # fields that matched a live, not warning-listed indicator
    suppressed: int = 0  # matches of warning-listed indicators (not reported)
    expired: int = 0  # matches of expired indicators (not reported)


def severity(confidence: int) -> Severity:
    """Alert severity from indicator confidence (STIX 0-100)."""
    if confidence >= 85:
        return Severity.HIGH
    if confidence >= 50:
        return Severity.MEDIUM
    return Severity.LOW


class IntelMatcher:
    """Matches records against several indicator sets (e.g. global, then the tenant's)."""

    def __init__(self, sets: Sequence[IndicatorSet], warnings: WarningList | None = None) -> None:
        self.sets = tuple(sets)  # looked up live: changes to the sets apply at once
        self.warnings = warnings if warnings is not None else WarningList.default()
        self.stats = IntelStats()

    def hits(self, record: IntelRecord, *, now: float | None = None) -> list[IntelHit]:
        """Every (field, indicator) match of the record; expiry judged at ``now`` or record ts."""
        self.stats.records += 1
        when = record.ts if now is None else now
        out: list[IntelHit] = []
        seen: set[tuple[IndicatorType, str, str]] = set()
        for field, observed, entries in self._probe(record):
            for indicator in entries:
                if indicator.key in seen:
                    continue
                if not indicator.live(when):
                    self.stats.expired += 1
                elif self.warnings.covers(indicator):
                    self.stats.suppressed += 1
                else:
                    seen.add(indicator.key)
                    out.append(IntelHit(field, observed, indicator))
        self.stats.hits += len(out)
        return out

    def match(self, record: IntelRecord, *, now: float | None = None) -> list[Alert]:
        """One alert per matching indicator, with the record as evidence."""
        return [alert_for(hit, record) for hit in self.hits(record, now=now)]

    def _probe(self, record: IntelRecord) -> Iterator[tuple[str, str, Entries]]:
        for field, address in (("id.orig_h", record.orig_h), ("id.resp_h", record.resp_h)):
            yield from self._ip(field, address)
        if isinstance(record, Dns):
            if record.query:
                yield from self._domain("query", record.query)
            for answer in record.answers or ():
                if _looks_ip(answer):
                    yield from self._ip("answers", answer)
                else:
                    yield from self._domain("answers", answer)
        elif isinstance(record, Http):
            if record.host:
                host = _strip_port(record.host)
                if _looks_ip(host):
                    yield from self._ip("host", host)
                else:
                    yield from self._domain("host", host)
            url = _record_url(record)
            if url is not None:
                yield from self._exact("url", IndicatorType.URL, url)
        elif isinstance(record, Ssl):
            if record.server_name:
                yield from self._domain("server_name", record.server_name)
            if record.ja3:
                yield from self._exact("ja3", IndicatorType.JA3, record.ja3.lower())
            if record.ja4:
                yield from self._exact("ja4", IndicatorType.JA4, record.ja4.lower())

    def _ip(self, field: str, address: str) -> Iterator[tuple[str, str, Entries]]:
        for s in self.sets:
            for entries in s.covering_ip(address):
                yield field, address, entries

    def _domain(self, field: str, name: str) -> Iterator[tuple[str, str, Entries]]:
        normal = name.lower().rstrip(".")
        for s in self.sets:
            for entries in s.lookup_domain(normal):
                yield field, name, entries

    def _exact(
        self, field: str, kind: IndicatorType, value: str
    ) -> Iterator[tuple[str, str, Entries]]:
        for s in self.sets:
            entries = s.lookup(kind, value)
            if entries:
                yield field, value, entries


# ATT&CK techniques an indicator match points at: traffic to a known-bad address, name or URL
# is command-and-control over an application protocol (T1071); a known-bad TLS client
# fingerprint is also the malware's encrypted channel (T1573); a known-bad file hash, a tool
# brought in (T1105).
ATTACK: dict[IndicatorType, list[str]] = {
    IndicatorType.IP: ["T1071"],
    IndicatorType.DOMAIN: ["T1071"],
    IndicatorType.URL: ["T1071"],
    IndicatorType.JA3: ["T1071", "T1573"],
    IndicatorType.JA4: ["T1071", "T1573"],
    IndicatorType.MD5: ["T1105"],
    IndicatorType.SHA1: ["T1105"],
    IndicatorType.SHA256: ["T1105"],
}


def alert_for(hit: IntelHit, record: IntelRecord) -> Alert:
    """The alert for one indicator match; repeats from one source share a dedup key."""
    ind = hit.indicator
    return Alert(
        ts=record.ts,
        uid=record.uid,
        orig_h=record.orig_h,
        orig_p=record.orig_p,
        resp_h=record.resp_h,
        resp_p=record.resp_p,
        rule_id=f"a2z-intel-{ind.type.value}",
        title=(
            f"Threat intel: {hit.field} {hit.observed} matches {ind.type.value} {ind.value}"
            f" from {ind.source} (confidence {ind.confidence})"
        ),
        severity=severity(ind.confidence),
        attack=list(ATTACK[ind.type]),
        uids=[record.uid],
        dedup_key=f"intel|{ind.type.value}|{ind.value}|{ind.source}|{record.orig_h}",
    )


def _looks_ip(text: str) -> bool:
    return ":" in text or text.replace(".", "").isdigit()


def _strip_port(host: str) -> str:
    if host.startswith("["):  # [v6]:port
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


_PLAIN_HOST = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)*")
_PLAIN_URI = re.compile(r"/([ -~]*[!-~])?")  # printable ASCII, no trailing space


def _record_url(record: Http) -> str | None:
    """The request's URL in normal form: absolute-form targets as sent, else Host + path."""
    uri = record.uri
    if not uri:
        return None
    host = record.host
    if host and _PLAIN_URI.fullmatch(uri) and "#" not in uri and not uri.endswith("?"):
        # The common case, built directly: urlsplit and the host checks cost more than the
        # rest of the record's lookups together (same result as normalise_url, tested).
        host = host.lower().removesuffix(":80")
        if _PLAIN_HOST.fullmatch(host) and not host.replace(".", "").isdigit():
            return f"http://{host}{uri}"
    try:
        if "://" in uri:
            return normalise_url(uri)
        if record.host and uri.startswith("/"):
            return normalise_url(f"http://{record.host}{uri}")
    except InvalidIndicator:
        return None
    return None
