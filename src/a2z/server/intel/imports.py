"""Feed texts (plain list, CSV, STIX 2.1 bundle) into indicators, with what was refused.

Parsing is a2z.rules.intel.feeds; this adds the API's limits, defaults and typed errors.
"""

from __future__ import annotations

import csv
import enum
import io
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from a2z.rules.intel import (
    FEODO,
    RANSOMWARE_TRACKER,
    URLHAUS,
    CsvFormat,
    FeedError,
    FeedResult,
    Indicator,
    IndicatorType,
    parse_csv,
    parse_plain,
    parse_stix,
)
from a2z.server.errors import InvalidInput
from a2z.server.metrics import ServerMetrics

MAX_IMPORT_BYTES = 32 * 1024 * 1024  # one import's text; a bigger feed is split by the caller


class FeedFormat(enum.StrEnum):
    """How an import's text is written (the last is the default: a plain list)."""

    STIX = "stix"  # a STIX 2.1 bundle (JSON)
    CSV = "csv"  # CSV with a header row (or the abuse.ch ``#`` header)
    PLAIN = "plain"  # one value per line, ``#`` comments


class CsvLayout(enum.StrEnum):
    """Which CSV columns hold indicators."""

    FEODO = "feodo"  # abuse.ch Feodo Tracker: DstIP
    URLHAUS = "urlhaus"  # abuse.ch URLhaus: URL
    RANSOMWARE_TRACKER = "ransomware_tracker"  # Host, URL, IP address(es)
    VALUE = "value"  # a generic list: a ``value`` column, type guessed per row via ``type``


_LAYOUTS: dict[CsvLayout, CsvFormat] = {
    CsvLayout.FEODO: FEODO,
    CsvLayout.URLHAUS: URLHAUS,
    CsvLayout.RANSOMWARE_TRACKER: RANSOMWARE_TRACKER,
}


class FeedRejected(InvalidInput):
    """An import that yielded nothing usable: an unreadable file, or every value refused."""

    title = "Feed rejected"

    def __init__(self, detail: str, result: FeedResult | None = None) -> None:
        super().__init__(detail)
        self.result = result

    def extra(self) -> dict[str, object]:
        if self.result is None:
            return {"rejected": 0, "messages": []}
        return {
            "rejected": self.result.rejected,
            "unsupported": dict(self.result.unsupported),
            "messages": self.result.messages,
        }


@dataclass(frozen=True)
class ImportRequest:
    """One import's text and its defaults."""

    text: str
    format: FeedFormat
    source: str
    confidence: int = 50
    expires_at: datetime | None = None
    type: IndicatorType | None = None  # plain lists: the type of every line (else guessed)
    csv_layout: CsvLayout = CsvLayout.VALUE


@dataclass
class Parsed:
    """What a feed gave, deduplicated, and what it refused."""

    indicators: list[Indicator]
    rejected: int = 0
    unsupported: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    messages: list[str] = field(default_factory=list)


def parse(request: ImportRequest, metrics: ServerMetrics) -> Parsed:
    """Parse the text; FeedRejected (counted) when nothing in it can be used."""
    if len(request.text) > MAX_IMPORT_BYTES:
        metrics.intel_import_rejected.labels("too_large").inc()
        raise FeedRejected(f"the feed is larger than {MAX_IMPORT_BYTES} bytes: split it")
    expires = request.expires_at.timestamp() if request.expires_at is not None else None
    try:
        result = _parse(request, expires)
    except FeedError as exc:
        metrics.intel_import_rejected.labels("unreadable").inc()
        raise FeedRejected(f"not a {request.format.value} feed: {exc}") from exc
    if result.rejected:
        metrics.intel_import_rejected.labels("rejected").inc(result.rejected)
    if result.unsupported:
        metrics.intel_import_rejected.labels("unsupported").inc(sum(result.unsupported.values()))
    if not result.indicators and (result.rejected or result.unsupported):
        raise FeedRejected(
            f"no usable indicator: {result.rejected} values rejected, "
            f"{sum(result.unsupported.values())} unsupported",
            result,
        )
    return Parsed(
        indicators=result.indicators, rejected=result.rejected, unsupported=result.unsupported,
        skipped=result.skipped, messages=result.messages,
    )  # fmt: skip


def _parse(request: ImportRequest, expires: float | None) -> FeedResult:
    common = {"source": request.source, "confidence": request.confidence}
    if request.format is FeedFormat.PLAIN:
        return parse_plain(request.text, kind=request.type, expires=expires, **common)  # type: ignore[arg-type]
    if request.format is FeedFormat.CSV:
        layout = _LAYOUTS.get(request.csv_layout)
        if layout is None:
            return _parse_value_csv(request, expires)
        return parse_csv(request.text, layout, expires=expires, **common)  # type: ignore[arg-type]
    result = parse_stix(request.text, now=_now(), **common)  # type: ignore[arg-type]
    if expires is not None:  # the import's default applies where the bundle set none
        result.indicators = [
            i if i.expires is not None else _with_expiry(i, expires) for i in result.indicators
        ]
    return result


def _parse_value_csv(request: ImportRequest, expires: float | None) -> FeedResult:
    kind = request.type
    if kind is not None:
        layout = CsvFormat({"value": kind})
        return parse_csv(
            request.text, layout, source=request.source, confidence=request.confidence,
            expires=expires,
        )  # fmt: skip
    # No type given: the column read as a plain list (the type guessed per value).
    column = _column(request.text)
    return parse_plain(
        "\n".join(column), source=request.source, confidence=request.confidence, expires=expires
    )


def _column(text: str) -> list[str]:
    try:
        rows = [r for r in csv.reader(io.StringIO(text)) if r and not r[0].lstrip().startswith("#")]
    except csv.Error as exc:
        raise FeedError(f"not CSV: {exc}") from exc
    if not rows:
        return []
    header = [c.strip() for c in rows[0]]
    if "value" not in header:
        raise FeedError(f"CSV header {header} lacks the column 'value'")
    at = header.index("value")
    return [r[at].strip() for r in rows[1:] if at < len(r)]


def _now() -> float:
    return time.time()


def _with_expiry(indicator: Indicator, expires: float) -> Indicator:
    return msgspec.structs.replace(indicator, expires=expires)
