"""Feed import: plain lists, CSV (abuse.ch and the like) and STIX 2.1 bundles -> indicators.

A bad line or an unsupported STIX pattern is counted in the ``FeedResult`` with its reason;
only a file that cannot be read at all (not CSV, not JSON, not a bundle) raises ``FeedError``.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import stix2  # type: ignore[import-untyped]  # stix2 ships no type information
from stix2 import patterns as sp
from stix2.pattern_visitor import create_pattern_object  # type: ignore[import-untyped]

from a2z.rules.intel.indicators import (
    Indicator,
    IndicatorType,
    IntelError,
    InvalidIndicator,
    guess_type,
    make,
)

MAX_MESSAGES = 20  # rejected-line messages kept per import; the count is always exact


class FeedError(IntelError):
    """A feed file that cannot be read as the format it claims to be."""


@dataclass(slots=True)
class FeedResult:
    """What one import gave: indicators, and what was rejected or unsupported and why."""

    indicators: list[Indicator] = field(default_factory=list)
    rejected: int = 0  # values that are not valid indicators
    unsupported: Counter[str] = field(default_factory=Counter)  # reason -> count (STIX)
    skipped: int = 0  # revoked or already expired
    messages: list[str] = field(default_factory=list)  # the first MAX_MESSAGES problems

    def reject(self, message: str) -> None:
        self.rejected += 1
        if len(self.messages) < MAX_MESSAGES:
            self.messages.append(message)


def parse_plain(
    text: str,
    *,
    source: str,
    kind: IndicatorType | None = None,
    confidence: int = 50,
    expires: float | None = None,
) -> FeedResult:
    """One value per line, ``#`` comments; the type is guessed per line unless ``kind``."""
    out = FeedResult()
    for n, line in enumerate(text.splitlines(), 1):
        value = line.split("#", 1)[0].strip()
        if not value:
            continue
        try:
            out.indicators.append(
                make(kind or guess_type(value), value, source=source, confidence=confidence,
                     expires=expires)
            )  # fmt: skip
        except InvalidIndicator as exc:
            out.reject(f"line {n}: {exc}")
    return out


@dataclass(frozen=True, slots=True)
class CsvFormat:
    """Which CSV columns hold which indicator type; headers may sit in a ``#`` comment."""

    columns: Mapping[str, IndicatorType]  # header name -> type of its values
    multi: str = "|"  # separator of several values in one cell (ransomware tracker's IPs)


# abuse.ch feeds as they are published (headers in the last comment line).
FEODO = CsvFormat({"DstIP": IndicatorType.IP})
URLHAUS = CsvFormat({"URL": IndicatorType.URL})
RANSOMWARE_TRACKER = CsvFormat(
    {"Host": IndicatorType.DOMAIN, "URL": IndicatorType.URL, "IP address(es)": IndicatorType.IP}
)


def parse_csv(
    text: str,
    fmt: CsvFormat,
    *,
    source: str,
    confidence: int = 50,
    expires: float | None = None,
) -> FeedResult:
    """Rows of a CSV feed; the header is the first line, or the last ``#`` line before data."""
    out = FeedResult()
    header: list[str] | None = None
    comment_header: list[str] | None = None
    reader = csv.reader(io.StringIO(text))
    try:
        for row in reader:
            if not row or not "".join(row).strip():
                continue
            if row[0].lstrip().startswith("#"):
                cells = [row[0].lstrip()[1:].strip(), *(c.strip() for c in row[1:])]
                if len(cells) > 1 or cells[0] in fmt.columns:
                    comment_header = cells
                continue
            if header is None:
                header = comment_header or [c.strip() for c in row]
                _require_columns(header, fmt)
                if comment_header is None:
                    continue  # this row was the header
            _take_row(out, header, row, fmt, reader.line_num, source, confidence, expires)
    except csv.Error as exc:
        raise FeedError(f"not CSV (line {reader.line_num}): {exc}") from exc
    return out


def _require_columns(header: list[str], fmt: CsvFormat) -> None:
    missing = [c for c in fmt.columns if c not in header]
    if missing:
        raise FeedError(f"CSV header {header} lacks the columns {missing}")


def _take_row(
    out: FeedResult,
    header: list[str],
    row: list[str],
    fmt: CsvFormat,
    line: int,
    source: str,
    confidence: int,
    expires: float | None,
) -> None:
    for column, kind in fmt.columns.items():
        i = header.index(column)
        cell = row[i] if i < len(row) else ""
        for raw in cell.split(fmt.multi) if fmt.multi else [cell]:
            value = raw.strip()
            if not value:
                continue
            try:
                out.indicators.append(
                    make(kind, value, source=source, confidence=confidence, expires=expires)
                )
            except InvalidIndicator as exc:
                out.reject(f"line {line} {column}: {exc}")


# STIX 2.1 ---------------------------------------------------------------------------------

_STIX_PATHS: dict[tuple[str, tuple[str, ...]], IndicatorType] = {
    ("ipv4-addr", ("value",)): IndicatorType.IP,
    ("ipv6-addr", ("value",)): IndicatorType.IP,
    ("domain-name", ("value",)): IndicatorType.DOMAIN,
    ("url", ("value",)): IndicatorType.URL,
    ("file", ("hashes", "md5")): IndicatorType.MD5,
    ("file", ("hashes", "sha-1")): IndicatorType.SHA1,
    ("file", ("hashes", "sha1")): IndicatorType.SHA1,
    ("file", ("hashes", "sha-256")): IndicatorType.SHA256,
    ("file", ("hashes", "sha256")): IndicatorType.SHA256,
}


class _Unsupported(Exception):
    """A pattern feature we do not match on; the message is the reason counted."""


def parse_stix(
    text: str,
    *,
    source: str,
    confidence: int = 50,
    now: float | None = None,
) -> FeedResult:
    """Indicators of a STIX 2.1 bundle whose patterns are OR-ed ``=`` comparisons.

    Supported: ``[ipv4-addr:value = '…']`` (a CIDR too), ipv6-addr, domain-name, url and
    ``file:hashes.'SHA-256'`` (MD5, SHA-1), OR-ed within or across observations. Anything
    else (AND, other operators, qualifiers, other objects) is counted as unsupported. The
    indicator's own ``confidence`` and ``valid_until`` win over the arguments.
    """
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FeedError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("type") != "bundle":
        raise FeedError("not a STIX bundle (no top-level 'type': 'bundle')")
    objects = document.get("objects")
    if not isinstance(objects, list):
        raise FeedError("STIX bundle without an 'objects' list")
    out = FeedResult()
    for obj in objects:
        if isinstance(obj, dict) and obj.get("type") == "indicator":
            _take_indicator(out, obj, source, confidence, now)
    return out


def _take_indicator(
    out: FeedResult, obj: dict[str, Any], source: str, confidence: int, now: float | None
) -> None:
    ref = str(obj.get("id", "?"))
    try:
        indicator = stix2.parse(obj, allow_custom=True, version="2.1")
    except Exception as exc:  # stix2 validates patterns with antlr, which raises many types
        out.reject(f"{ref}: invalid STIX indicator: {type(exc).__name__}: {exc}")
        return
    if getattr(indicator, "revoked", False):
        out.skipped += 1
        return
    if getattr(indicator, "pattern_type", "stix") != "stix":
        out.unsupported[f"pattern_type {indicator.pattern_type}"] += 1
        return
    until = getattr(indicator, "valid_until", None)
    expires = _epoch(until) if until is not None else None
    if expires is not None and now is not None and expires <= now:
        out.skipped += 1
        return
    level = getattr(indicator, "confidence", None)
    try:
        comparisons = list(_comparisons(create_pattern_object(indicator.pattern)))
    except _Unsupported as exc:
        out.unsupported[str(exc)] += 1
        return
    except Exception as exc:  # the STIX pattern parser (antlr) raises many error types
        out.reject(f"{ref}: unparsable pattern: {exc}")
        return
    for kind, value in comparisons:
        try:
            out.indicators.append(
                make(kind, value, source=source,
                     confidence=level if isinstance(level, int) else confidence,
                     expires=expires, ref=ref)
            )  # fmt: skip
        except InvalidIndicator as exc:
            out.reject(f"{ref}: {exc}")


def _comparisons(node: object) -> Iterable[tuple[IndicatorType, str]]:
    """The (type, value) pairs of a pattern that is only OR-ed equality comparisons."""
    if isinstance(node, sp.OrObservationExpression | sp.OrBooleanExpression):
        for operand in node.operands:
            yield from _comparisons(operand)
    elif isinstance(node, sp.ObservationExpression):
        yield from _comparisons(node.operand)
    elif isinstance(node, sp.EqualityComparisonExpression) and not node.negated:
        path = tuple(str(getattr(c, "property_name", "[]")).lower() for c in node.lhs.property_path)
        kind = _STIX_PATHS.get((node.lhs.object_type_name, path))
        if kind is None:
            raise _Unsupported(f"object path {node.lhs.object_type_name}:{'.'.join(path)}")
        yield kind, str(node.rhs.value)
    elif getattr(node, "negated", False):
        raise _Unsupported("pattern with a negated comparison")
    else:
        raise _Unsupported(f"pattern with {type(node).__name__.removesuffix('Expression')}")


def _epoch(value: object) -> float:
    if isinstance(value, datetime):
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
        return when.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
