"""Tenant rules: checking, versioning, dry runs, upstream merges and the effective rule set.

A tenant's rules are its custom Sigma rules plus its overrides of shipped rules (same Sigma
id). Every text is parsed and compiled before it is stored; each change is a new immutable
version. When the shipped version of an overridden rule changes, ``merge_upstream`` three-way
merges the override (``a2z.rules.merge``) into a new version and keeps any conflict on it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from a2z.rules.catalog import (
    Catalog,
    ShippedRule,
    digest_of,
    header_of,
    is_correlation,
    sigma_id,
)
from a2z.rules.compile import CompiledRule, compile_yaml
from a2z.rules.correlation import (
    CorrelationSet,
    CorrelationSettings,
    Correlator,
    compile_correlations,
)
from a2z.rules.errors import RuleError, RuleSyntaxError, UnsupportedRuleError
from a2z.rules.fields import RuleRecord
from a2z.rules.merge import dump_document, load_document, merge3
from a2z.server.audit import service as audit
from a2z.server.errors import Conflict, InvalidInput
from a2z.server.events import search
from a2z.server.events import service as events
from a2z.server.metrics import ServerMetrics
from a2z.server.rules.models import TITLE_MAX, RuleKind, RuleVersion, TenantRule, VersionOrigin
from a2z.server.store.base import utcnow
from a2z.server.store.pagination import BadCursor, Page, paginate
from a2z.server.store.session import ScopedSession, SessionFactory
from a2z.server.tenants.models import Tenant

log = logging.getLogger(__name__)

MAX_RULE_BYTES = 64 * 1024
"""Largest rule text accepted; SigmaHQ's largest network/web rule is under 9 KiB."""

UPSTREAM_ACTOR = "system:upgrade"
"""The audit actor of versions made by merging overrides with new shipped rules."""


class RuleRejected(InvalidInput):
    """A rule text that does not parse or that our records cannot run (a2z.rules' reason)."""

    title = "Invalid rule"

    def __init__(self, error: RuleError) -> None:
        super().__init__(str(error))
        self.error = error
        self.kind = "unsupported" if isinstance(error, UnsupportedRuleError) else "syntax"

    def extra(self) -> dict[str, object]:
        feature = self.error.feature if isinstance(self.error, UnsupportedRuleError) else None
        return {
            "rule_error": {"kind": self.kind, "message": self.error.message, "feature": feature}
        }


@dataclass(frozen=True, slots=True)
class CheckedRule:
    """A rule text that compiles, with what storing it needs."""

    rule_id: uuid.UUID  # its Sigma id
    title: str
    text: str
    compiled: CompiledRule | None  # a detection rule (None for a correlation rule)
    correlation: CorrelationSet | None = None  # a correlation rule, with the base rules it uses


References = Callable[[], Iterable[tuple[str | None, str]]]
"""The texts a correlation rule may reference besides its own: the tenant's effective rules."""


def check(text: str, *, references: References | None = None) -> CheckedRule:
    """Parse and compile a tenant's rule text; RuleRejected with the exact reason if it fails.

    Unlike a shipped or corpus rule, a tenant rule must carry a Sigma id: it is the key the
    rule is versioned, overridden and reported under. A correlation rule (ADR 13) is one or
    more YAML documents: its base rules and inner correlations, then the correlation that
    names it; it may also reference ``references`` (the tenant's rules) by id or name.
    """
    try:
        if len(text.encode("utf-8")) > MAX_RULE_BYTES:
            raise RuleSyntaxError(f"the rule is larger than {MAX_RULE_BYTES} bytes")
        if is_correlation(text):
            return _check_correlation(text, references() if references is not None else ())
        compiled = compile_yaml(text)
        header = load_document(text)
        if header.get("id") is None:
            raise RuleSyntaxError("a tenant rule needs an id (a UUID), as Sigma recommends")
        rule_id = uuid.UUID(sigma_id(header["id"]))
        if len(compiled.title) > TITLE_MAX:
            raise RuleSyntaxError(f"the title is longer than {TITLE_MAX} characters")
    except RuleError as exc:
        raise RuleRejected(exc) from exc
    return CheckedRule(rule_id, compiled.title, text, compiled)


_OWN = "<rule>"  # the path a correlation's own text compiles under, to tell its errors apart


def _check_correlation(text: str, references: Iterable[tuple[str | None, str]]) -> CheckedRule:
    header = header_of(text)
    if header.get("id") is None:
        raise RuleSyntaxError("a tenant rule needs an id (a UUID), as Sigma recommends")
    rule_id = uuid.UUID(sigma_id(header["id"]))
    others = [(path, body) for path, body in references if not is_correlation(body)]
    load = compile_correlations([(_OWN, text), *others])
    own_errors = [e for e in load.errors if e.path == _OWN]
    if own_errors:
        own_errors[0].path = None  # the text is the request's, not a file
        raise own_errors[0].located(path=None, rule_id=None)
    ours = next((c for c in load.rules.correlations if c.rule_id == str(rule_id)), None)
    if ours is None:  # e.g. its id is written differently from its canonical form
        raise RuleSyntaxError(f"the correlation {rule_id} did not compile")
    if len(ours.title) > TITLE_MAX:
        raise RuleSyntaxError(f"the title is longer than {TITLE_MAX} characters")
    return CheckedRule(rule_id, ours.title, text, None, load.rules)


def count_rejection(metrics: ServerMetrics, exc: RuleRejected) -> None:
    """Count a refused text by kind (syntax or unsupported)."""
    metrics.rules_rejected.labels(exc.kind).inc()


def get(*, session: ScopedSession, rule_id: uuid.UUID) -> TenantRule | None:
    """One rule of the session's tenant (archived too), or None (also another tenant's)."""
    return session.get(TenantRule, (session.tenant_id, rule_id))


def get_version(*, session: ScopedSession, rule_id: uuid.UUID, version: int) -> RuleVersion | None:
    """One version of a rule of the session's tenant."""
    return session.get(RuleVersion, (session.tenant_id, rule_id, version))


def current(*, session: ScopedSession, rule: TenantRule) -> RuleVersion:
    """The rule's current version (it always exists: versions are never deleted)."""
    row = get_version(session=session, rule_id=rule.id, version=rule.version)
    if row is None:  # only a broken database could get here
        raise LookupError(f"rule {rule.id} has no version {rule.version}")
    return row


def list_page(
    *, session: ScopedSession, limit: int, cursor: str | None, archived: bool = False
) -> Page[TenantRule]:
    """The tenant's rules, oldest first; archived ones only when asked for."""
    stmt = select(TenantRule)
    if not archived:
        stmt = stmt.where(TenantRule.archived_at.is_(None))
    return paginate(
        session, stmt, at=TenantRule.created_at, row_id=TenantRule.id, limit=limit, cursor=cursor
    )


def list_versions(
    *, session: ScopedSession, rule_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[RuleVersion]:
    """A rule's versions, newest first; the cursor is the last version number shown."""
    stmt = select(RuleVersion).where(RuleVersion.rule_id == rule_id)
    if cursor:
        if not cursor.isdigit() or len(cursor) > 9:
            raise BadCursor("cursor is malformed")
        stmt = stmt.where(RuleVersion.version < int(cursor))
    rows = list(session.scalars(stmt.order_by(RuleVersion.version.desc()).limit(limit + 1)))
    if len(rows) <= limit:
        return Page(rows, None)
    return Page(rows[:limit], str(rows[limit - 1].version))


def active_override_ids(*, session: ScopedSession) -> set[uuid.UUID]:
    """The Sigma ids of the shipped rules the tenant overrides (archived overrides aside)."""
    stmt = select(TenantRule.id).where(
        TenantRule.kind == RuleKind.OVERRIDE, TenantRule.archived_at.is_(None)
    )
    return set(session.scalars(stmt))


def create(
    *, session: ScopedSession, catalog: Catalog, checked: CheckedRule, enabled: bool, actor: str
) -> TenantRule:
    """A new rule from a checked text; a shipped rule's id makes it the tenant's override."""
    existing = get(session=session, rule_id=checked.rule_id)
    if existing is not None:
        if existing.archived_at is not None:
            raise Conflict(
                f"rule {checked.rule_id} exists but is archived: PUT a new version to restore it"
            )
        raise Conflict(f"rule {checked.rule_id} exists: PUT a new version to change it")
    shipped = catalog.get(str(checked.rule_id))
    now = utcnow()
    rule = TenantRule(
        tenant_id=session.tenant_id,
        id=checked.rule_id,
        kind=RuleKind.OVERRIDE if shipped else RuleKind.CUSTOM,
        title=checked.title,
        enabled=enabled,
        version=1,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(rule)
    session.flush()  # the version row refers to it
    _add_version(
        session, rule, checked.text, checked.title, VersionOrigin.CREATE, actor,
        base=(shipped.yaml, shipped.digest) if shipped else None,
    )  # fmt: skip
    return rule


def update(*, session: ScopedSession, rule: TenantRule, checked: CheckedRule, actor: str) -> bool:
    """Make a checked text the rule's new version (restoring an archived rule); False if
    unchanged.

    An override keeps the shipped base of the version it replaces: the tenant edited against
    that base, and the next upstream merge starts from it.
    """
    if checked.rule_id != rule.id:
        raise InvalidInput(
            f"the rule's id is {rule.id}, the text says {checked.rule_id}: "
            "an id cannot change (create a new rule instead)"
        )
    previous = current(session=session, rule=rule)
    if previous.yaml == checked.text and rule.archived_at is None:
        return False
    base = (
        (previous.base_yaml, previous.base_digest)
        if previous.base_yaml is not None and previous.base_digest is not None
        else None
    )
    rule.version += 1
    rule.title = checked.title
    rule.updated_at = utcnow()
    rule.archived_at = None
    _add_version(session, rule, checked.text, checked.title, VersionOrigin.UPDATE, actor, base=base)
    return True


def set_enabled(*, session: ScopedSession, rule: TenantRule, enabled: bool) -> None:
    """Switch a rule on or off (not a new version: the text is unchanged)."""
    if rule.archived_at is not None and enabled:
        raise Conflict(f"rule {rule.id} is archived: PUT a new version to restore it first")
    rule.enabled = enabled
    rule.updated_at = utcnow()


def archive(*, session: ScopedSession, rule: TenantRule) -> None:
    """ "Delete": the rule stops running and leaves the list; its versions stay readable.

    Archiving an override puts the shipped rule back in force.
    """
    now = utcnow()
    rule.archived_at = rule.archived_at or now
    rule.enabled = False
    rule.updated_at = now


def _add_version(
    session: ScopedSession,
    rule: TenantRule,
    text: str,
    title: str,
    origin: VersionOrigin,
    actor: str,
    *,
    base: tuple[str, str] | None,
    conflicts: list[dict[str, object]] | None = None,
    merge_error: str | None = None,
) -> RuleVersion:
    row = RuleVersion(
        tenant_id=session.tenant_id,
        rule_id=rule.id,
        version=rule.version,
        title=title,
        yaml=text,
        digest=digest_of(text),
        origin=origin,
        created_by=actor,
        created_at=utcnow(),
        base_yaml=base[0] if base else None,
        base_digest=base[1] if base else None,
        conflicts=msgspec.json.encode(conflicts or []).decode(),
        merge_error=merge_error,
    )
    session.add(row)
    session.flush()
    return row


def conflicts_of(version: RuleVersion) -> list[dict[str, Any]]:
    """The version's upstream-merge conflicts (empty for most versions)."""
    found: list[dict[str, Any]] = msgspec.json.decode(version.conflicts)
    return found


class UpstreamStatus:
    """How an override stands against the shipped catalog."""

    CURRENT = "current"  # made from (or merged with) the shipped version in force
    STALE = "stale"  # the shipped version changed; the next startup merges it
    REMOVED = "removed"  # the product no longer ships this rule; the override runs alone


def upstream_status(rule: TenantRule, version: RuleVersion, catalog: Catalog) -> str | None:
    """The override's standing (None for a custom rule)."""
    if rule.kind != RuleKind.OVERRIDE:
        return None
    shipped = catalog.get(str(rule.id))
    if shipped is None:
        return UpstreamStatus.REMOVED
    return UpstreamStatus.CURRENT if version.base_digest == shipped.digest else UpstreamStatus.STALE


# Dry runs ---------------------------------------------------------------------------------

DRY_RUN_PAGE = 1000  # records read per query
DRY_RUN_SAMPLE = 20  # evidence uids returned at most


@dataclass(frozen=True, slots=True)
class DryRun:
    """What a rule would have matched among stored records."""

    record_type: str  # the only record type the rule reads
    scanned: int  # records of that type read, newest first
    matched: int
    sample_uids: list[str]  # uids of the newest matches (distinct), at most DRY_RUN_SAMPLE
    truncated: bool  # the scan stopped at max_records before the range's oldest record
    undecodable: int  # stored rows that are not a valid record of the type (skipped, counted)


def dry_run(
    *,
    session: ScopedSession,
    rule: CompiledRule,
    since: float,
    until: float,
    max_records: int,
    metrics: ServerMetrics,
) -> DryRun:
    """Run ``rule`` over the tenant's stored records in ``[since, until)``, newest first,
    reading at most ``max_records`` of the rule's record type. Nothing is written."""
    record_type = rule.record_type
    path = record_type.__struct_config__.tag
    assert isinstance(path, str)  # every record type is tagged with its Zeek log name
    scanned = matched = undecodable = 0
    uids: list[str] = []
    truncated = False
    for data in _stored_records(session, search.EventFilter(since=since, until=until, path=path)):
        if scanned == max_records:
            truncated = True
            break
        scanned += 1
        try:
            record: RuleRecord = msgspec.convert(data, type=record_type, strict=False)
        except msgspec.ValidationError:
            undecodable += 1
            continue
        if rule.predicate(record):
            matched += 1
            if len(uids) < DRY_RUN_SAMPLE and record.uid not in uids:
                uids.append(record.uid)
    metrics.rules_dry_run_records.inc(scanned)
    return DryRun(path, scanned, matched, uids, truncated, undecodable)


def dry_run_correlation(
    *,
    session: ScopedSession,
    rules: CorrelationSet,
    since: float,
    until: float,
    max_records: int,
    metrics: ServerMetrics,
) -> DryRun:
    """Run a correlation rule over the tenant's stored records in ``[since, until)``: the
    newest records of each type its base rules read (``max_records`` shared among the types),
    replayed in time order through a fresh correlator. ``matched`` counts its alerts."""
    types = sorted(
        {rule.record_type for rule in rules.base_rules.values()},
        key=lambda t: str(t.__struct_config__.tag),
    )
    per_type = max(1, max_records // max(1, len(types)))
    gathered: list[RuleRecord] = []
    scanned = undecodable = 0
    truncated = False
    for record_type in types:
        path = str(record_type.__struct_config__.tag)
        read = 0
        for data in _stored_records(
            session, search.EventFilter(since=since, until=until, path=path)
        ):
            if read == per_type:
                truncated = True
                break
            read += 1
            try:
                gathered.append(msgspec.convert(data, type=record_type, strict=False))
            except msgspec.ValidationError:
                undecodable += 1
        scanned += read
    gathered.sort(key=lambda record: record.ts)
    # Stored records are past: no clock bound; one pseudo-tenant, as the correlator is fresh.
    correlator = Correlator(rules, CorrelationSettings(max_future=None))
    alerts = [alert for record in gathered for alert in correlator.process("dry-run", record)]
    alerts.extend(correlator.flush("dry-run"))
    uids = list(dict.fromkeys(uid for alert in alerts for uid in alert.uids))
    metrics.rules_dry_run_records.inc(scanned)
    paths = ",".join(str(t.__struct_config__.tag) for t in types)
    return DryRun(paths, scanned, len(alerts), uids[-DRY_RUN_SAMPLE:], truncated, undecodable)


def _stored_records(session: ScopedSession, flt: search.EventFilter) -> Iterator[dict[str, Any]]:
    """Each stored record matching ``flt`` (Zeek field names), newest first, page by page.

    Reads through the events service (not the table), so a change of the event store's
    layout stays inside that service.
    """
    cursor: events.Cursor | None = None
    while True:
        rows, cursor = events.list_recent(
            session=session, limit=DRY_RUN_PAGE, flt=flt, cursor=cursor
        )
        for row in rows:
            yield events.record_of(row)
        if cursor is None:
            return


# Upstream merges --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpstreamMerge:
    """One override brought onto a new shipped version."""

    rule_id: uuid.UUID
    version: int  # the new version the merge made
    conflicts: list[dict[str, object]]  # keys both changed; the tenant's value was kept
    merge_error: str | None  # set when the merged text did not compile (tenant's text kept)


def merge_upstream(
    *, session: ScopedSession, catalog: Catalog, actor: str = UPSTREAM_ACTOR
) -> list[UpstreamMerge]:
    """Merge each of the tenant's overrides whose shipped rule changed since it was made.

    Idempotent: an override already based on the shipped version in force is left alone.
    Archived overrides are skipped (they run nowhere); restoring one and a later start merge it.
    """
    stmt = select(TenantRule).where(
        TenantRule.kind == RuleKind.OVERRIDE, TenantRule.archived_at.is_(None)
    )
    done: list[UpstreamMerge] = []
    for rule in session.scalars(stmt.order_by(TenantRule.id)).all():
        shipped = catalog.get(str(rule.id))
        ours = current(session=session, rule=rule)
        if shipped is None or ours.base_digest == shipped.digest or ours.base_yaml is None:
            continue
        done.append(_merge_one(session, rule, ours, shipped, actor))
    return done


def _merge_one(
    session: ScopedSession, rule: TenantRule, ours: RuleVersion, shipped: ShippedRule, actor: str
) -> UpstreamMerge:
    assert ours.base_yaml is not None
    merge_error: str | None = None
    try:
        ours_doc = load_document(ours.yaml)
        result = merge3(load_document(ours.base_yaml), ours_doc, load_document(shipped.yaml))
        conflicts = [c.describe() for c in result.conflicts]
        if result.merged == ours_doc:
            text = ours.yaml  # nothing of upstream's applies: keep the tenant's text as written
        elif not conflicts and result.merged == load_document(shipped.yaml):
            text = shipped.yaml  # the override now says what upstream says
        else:
            text = dump_document(result.merged)
        title = check(text).title
    except (RuleRejected, RuleError) as exc:
        # Each side compiled alone, but their merge does not: keep the tenant's text (it still
        # runs) and say why, so a person can reconcile the two by hand.
        reason = exc.error if isinstance(exc, RuleRejected) else exc
        merge_error = f"the merged rule did not compile ({reason}); the tenant's text was kept"
        text, title = ours.yaml, ours.title
        conflicts = []
    rule.version += 1
    rule.title = title
    rule.updated_at = utcnow()
    _add_version(
        session, rule, text, title, VersionOrigin.UPSTREAM, actor,
        base=(shipped.yaml, shipped.digest), conflicts=conflicts, merge_error=merge_error,
    )  # fmt: skip
    audit.record(
        session=session,
        actor=actor,
        action="rule.upstream_merge",
        target=f"rule:{rule.id}",
        detail={
            "version": rule.version,
            "shipped_digest": shipped.digest,
            "conflicts": [str(c["path"]) for c in conflicts],
            "merge_error": merge_error,
        },
    )
    return UpstreamMerge(rule.id, rule.version, conflicts, merge_error)


def merge_upstream_all(
    *, sessions: SessionFactory, catalog: Catalog, metrics: ServerMetrics
) -> list[UpstreamMerge]:
    """``merge_upstream`` for every tenant, one transaction each; a failing tenant is logged,
    counted and retried at the next start, and never stops the others."""
    with sessions.system() as session:
        tenant_ids = list(session.scalars(select(Tenant.id).order_by(Tenant.id)))
    merged: list[UpstreamMerge] = []
    for tenant_id in tenant_ids:
        try:
            with sessions.tenant(tenant_id) as session:
                done = merge_upstream(session=session, catalog=catalog)
        except SQLAlchemyError:
            # E.g. another API process merged the same override first (duplicate version).
            log.exception("upstream rule merge failed", extra={"tenant_id": str(tenant_id)})
            metrics.rules_upstream_merge_errors.inc()
            continue
        for item in done:
            outcome = "kept" if item.merge_error else "conflict" if item.conflicts else "clean"
            metrics.rules_upstream_merges.labels(outcome).inc()
        merged.extend(done)
    return merged


# The effective rule set -------------------------------------------------------------------


class RuleSource:
    """Where an effective rule's text comes from."""

    SHIPPED = "shipped"
    OVERRIDE = "override"
    CUSTOM = "custom"


@dataclass(frozen=True, slots=True)
class EffectiveRule:
    """One rule a tenant's detection runs."""

    rule_id: str  # the Sigma id
    source: str  # RuleSource
    version: int | None  # the tenant rule's version (None for a shipped rule)
    title: str
    yaml: str
    digest: str  # digest_of(yaml)


@dataclass(frozen=True, slots=True)
class EffectiveRuleSet:
    """What a tenant's detection runs, in Sigma-id order, and a fingerprint of all of it.

    ``digest`` changes exactly when a rule is added, removed or changes text; ``version`` is
    its first 60 bits as a number, for an agent's ``config_version``.
    """

    rules: tuple[EffectiveRule, ...]
    digest: str
    version: int


def effective_rules(*, session: ScopedSession, catalog: Catalog) -> EffectiveRuleSet:
    """Shipped rules minus those the tenant disabled, with its overrides applied, plus its
    enabled custom rules. One query; deterministic for the same rules and catalog."""
    stmt = (
        select(TenantRule, RuleVersion)
        .join(
            RuleVersion,
            (RuleVersion.tenant_id == TenantRule.tenant_id)
            & (RuleVersion.rule_id == TenantRule.id)
            & (RuleVersion.version == TenantRule.version),
        )
        .where(TenantRule.archived_at.is_(None))
    )
    tenant_rules = {str(rule.id): (rule, version) for rule, version in session.execute(stmt)}
    out: list[EffectiveRule] = []
    for shipped in catalog:
        if shipped.rule_id not in tenant_rules:
            out.append(
                EffectiveRule(
                    shipped.rule_id,
                    RuleSource.SHIPPED,
                    None,
                    shipped.title,
                    shipped.yaml,
                    shipped.digest,
                )
            )
    for rule_id, (rule, version) in tenant_rules.items():
        if rule.enabled:
            source = RuleSource.OVERRIDE if rule.kind == RuleKind.OVERRIDE else RuleSource.CUSTOM
            out.append(
                EffectiveRule(
                    rule_id, source, version.version, version.title, version.yaml, version.digest
                )
            )
    out.sort(key=lambda r: r.rule_id)
    fingerprint = digest_of("".join(f"{r.rule_id}:{r.source}:{r.digest}\n" for r in out))
    return EffectiveRuleSet(tuple(out), fingerprint, int(fingerprint[:15], 16))


def reference_texts(*, session: ScopedSession, catalog: Catalog) -> list[tuple[str | None, str]]:
    """The tenant's effective rules as ``(Sigma id, text)``: what its correlations may use."""
    found = effective_rules(session=session, catalog=catalog)
    return [(rule.rule_id, rule.yaml) for rule in found.rules]


_LATEST = 253402300799.0  # 9999-12-31T23:59:59Z, the last second datetime can show


def to_epoch(name: str, stamp: datetime) -> float:
    """A request's time as epoch seconds (naive means UTC); InvalidInput before 1970 or after
    9999, where no record can be and where the time arithmetic of a range would overflow."""
    try:
        aware = stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)
        seconds = aware.timestamp()
    except (OverflowError, ValueError, OSError) as exc:
        raise InvalidInput(f"{name}: out of range") from exc
    if not 0 <= seconds <= _LATEST:
        raise InvalidInput(f"{name}: out of range (1970 to 9999)")
    return seconds
