"""HTTP bodies of the intel routes (tenant and global share them)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BeforeValidator, Field

from a2z.rules.intel import IndicatorType
from a2z.server.intel import service as intel
from a2z.server.intel.imports import MAX_IMPORT_BYTES, CsvLayout, FeedFormat, Parsed
from a2z.server.intel.models import SOURCE_MAX, WarningKind
from a2z.server.intel.service import ImportCounts, IndicatorRow, WarningRow
from a2z.server.schemas import Body, Out

SOURCE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._:/@+-]*$"
SourceName = Annotated[
    str,
    Field(
        min_length=1, max_length=SOURCE_MAX, pattern=SOURCE_PATTERN,
        description="the feed or list the indicators come from; deletes go by it",
    ),
]  # fmt: skip
# Strict in bodies: a JSON ``false`` is not confidence 0.
Confidence = Annotated[int, Field(ge=0, le=100, strict=True, description="0-100, as in STIX 2.1")]


def _iso_only(value: object) -> object:
    # Pydantic would read a number as epoch seconds; the schema says an ISO 8601 date-time.
    if value is not None and not isinstance(value, str | datetime):
        raise ValueError("must be an ISO 8601 date-time")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_only)]


class ImportIn(Body):
    """A feed to import: its text, format and the defaults its entries take."""

    format: FeedFormat = FeedFormat.PLAIN
    content: str = Field(min_length=1, max_length=MAX_IMPORT_BYTES)
    source: SourceName
    confidence: Confidence = 50  # STIX indicators keep their own
    expires_at: IsoDateTime | None = None  # STIX indicators keep their own valid_until
    type: IndicatorType | None = None  # plain lists and ``value`` CSVs: every entry's type
    csv_layout: CsvLayout = CsvLayout.VALUE


class ImportOut(Out):
    """What an import did."""

    parsed: int  # indicators the feed held (after its own duplicates)
    added: int
    updated: int
    unchanged: int
    rejected: int  # values that are not valid indicators (see messages)
    too_long: int  # values over the stored length
    unsupported: dict[str, int]  # STIX patterns we do not match on, by reason
    skipped: int  # STIX: revoked or already expired
    messages: list[str]  # the first problems, by line
    version: int  # the intel version after the import

    @classmethod
    def of(cls, parsed: Parsed, counts: ImportCounts) -> ImportOut:
        """Combine the parse and the store's counts."""
        return cls(
            parsed=counts.added + counts.updated + counts.unchanged + counts.too_long,
            added=counts.added, updated=counts.updated, unchanged=counts.unchanged,
            rejected=parsed.rejected, too_long=counts.too_long,
            unsupported=dict(parsed.unsupported), skipped=parsed.skipped,
            messages=parsed.messages, version=counts.version,
        )  # fmt: skip


class IndicatorOut(Out):
    """A stored indicator."""

    id: uuid.UUID
    type: str
    value: str
    source: str
    confidence: int
    expires_at: datetime | None
    ref: str | None
    first_seen: datetime
    last_seen: datetime
    version: int  # the intel version that last changed it

    @classmethod
    def of(cls, row: IndicatorRow) -> IndicatorOut:
        """Project a row."""
        return cls(
            id=row.id, type=row.type, value=row.value, source=row.source,
            confidence=row.confidence, expires_at=row.expires_at, ref=row.ref,
            first_seen=row.first_seen, last_seen=row.last_seen, version=row.version,
        )  # fmt: skip


class IndicatorPage(Out):
    """One page of indicators, oldest first."""

    items: list[IndicatorOut]
    next_cursor: str | None


class SourceIn(Body):
    """A source whose indicators to delete."""

    source: SourceName


class SourceDeleted(Out):
    """What deleting a source did."""

    deleted: int
    version: int


class WarningIn(Body):
    """A known-benign value: matches of indicators it covers raise no alert."""

    kind: WarningKind
    value: str = Field(min_length=1, max_length=1024)
    note: str = Field(default="", max_length=200)


class WarningOut(Out):
    """A warning-list entry."""

    id: uuid.UUID
    kind: str
    value: str
    note: str
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, row: WarningRow) -> WarningOut:
        """Project a row."""
        return cls(
            id=row.id, kind=row.kind, value=row.value, note=row.note,
            created_by=row.created_by, created_at=row.created_at,
        )  # fmt: skip


class WarningPage(Out):
    """One page of warning-list entries, oldest first."""

    items: list[WarningOut]
    next_cursor: str | None


class StatsOut(Out):
    """Counts of an owner's live indicators and its versions."""

    version: int  # bumped by every change (indicators or warning list)
    floor: int  # deltas start no earlier than this version; older agents get the whole set
    total: int
    expired: int  # still stored, no longer matching
    by_type: dict[str, int]
    by_source: dict[str, int]
    warnings: int  # warning-list entries

    @classmethod
    def of(cls, found: intel.Stats) -> StatsOut:
        """Project the service's stats."""
        return cls(
            version=found.version, floor=found.floor, total=found.total, expired=found.expired,
            by_type=found.by_type, by_source=found.by_source, warnings=found.warnings,
        )  # fmt: skip


class TenantStatsOut(StatsOut):
    """The tenant's intel, and the combined version its agents should reach."""

    global_version: int
    agent_version: int  # what an agent matching the current set reports (ADR 12)
