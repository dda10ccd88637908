"""Tenant rule routes: custom Sigma rules and overrides of shipped rules, versions, dry runs.

Who may do what (auth/policy.py): every member reads rules, shipped rules and the effective
set; admins (owner, admin, operator) write; analysts may also validate and dry-run, which
write nothing. Every write is audited.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import Field

from a2z.rules.catalog import Catalog
from a2z.server.agents import edge_rules
from a2z.server.agents import service as agents
from a2z.server.audit import service as audit
from a2z.server.context import ServerContext
from a2z.server.deps import Context, Reader, RuleAdmin, RuleTester, Source
from a2z.server.errors import InvalidInput, NotFound
from a2z.server.rules import service as rules
from a2z.server.rules.models import RuleVersion, TenantRule
from a2z.server.schemas import Body, CursorParam, Limit, Out
from a2z.server.store.session import ScopedSession

router = APIRouter(prefix="/api/v1/rules", tags=["rules"])
# Rule routes match ``{rule_id:uuid}`` only, so /rules/validate, /rules/shipped and
# /rules/effective never fall into them: PUT /rules/validate is a 405, not a 422 about a UUID.

DRY_RUN_MAX_RECORDS = 100_000
DRY_RUN_MAX_RANGE = timedelta(days=31)
DRY_RUN_DEFAULT_RANGE = timedelta(hours=24)

RuleText = Annotated[
    str, Field(min_length=1, max_length=rules.MAX_RULE_BYTES, description="a Sigma rule (YAML)")
]


class RuleIn(Body):
    """A new rule; with a shipped rule's id it becomes the tenant's override of that rule."""

    yaml: RuleText
    enabled: bool = True


class RuleUpdate(Body):
    """A rule's next version."""

    yaml: RuleText


class RuleSwitch(Body):
    """Turn a rule on or off."""

    enabled: bool


class ValidateIn(Body):
    """A rule text to check; nothing is stored."""

    yaml: RuleText


class MergeConflictOut(Out):
    """A key both the tenant and upstream changed; the rule kept the tenant's value."""

    path: str  # dotted keys, e.g. detection.selection
    base: Any  # the shipped value the override was made from (null: absent)
    ours: Any  # the tenant's value, in force
    theirs: Any  # upstream's new value, not applied


class RuleOut(Out):
    """A tenant rule and its current version."""

    id: uuid.UUID  # the Sigma id
    kind: str  # custom | override
    title: str
    enabled: bool
    archived: bool
    version: int
    yaml: str
    digest: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None
    # Overrides: current (made from the shipped version in force), stale (merged at the next
    # start), removed (no longer shipped); null for custom rules.
    upstream: str | None
    conflicts: list[MergeConflictOut]  # of the current version's upstream merge
    merge_error: str | None

    @classmethod
    def of(cls, rule: TenantRule, version: RuleVersion, catalog: Catalog) -> RuleOut:
        """Project a rule and its current version."""
        return cls(
            id=rule.id, kind=rule.kind, title=rule.title, enabled=rule.enabled,
            archived=rule.archived_at is not None, version=rule.version, yaml=version.yaml,
            digest=version.digest, created_by=rule.created_by, created_at=rule.created_at,
            updated_at=rule.updated_at, archived_at=rule.archived_at,
            upstream=rules.upstream_status(rule, version, catalog),
            conflicts=[MergeConflictOut(**c) for c in rules.conflicts_of(version)],
            merge_error=version.merge_error,
        )  # fmt: skip


class RulePage(Out):
    """One page of rules."""

    items: list[RuleOut]
    next_cursor: str | None


class RuleVersionOut(Out):
    """One immutable version of a rule."""

    version: int
    title: str
    yaml: str
    digest: str
    origin: str  # create | update | upstream
    created_by: str
    created_at: datetime
    base_digest: str | None  # overrides: the shipped version it derives from
    conflicts: list[MergeConflictOut]
    merge_error: str | None

    @classmethod
    def of(cls, row: RuleVersion) -> RuleVersionOut:
        """Project a version row."""
        return cls(
            version=row.version, title=row.title, yaml=row.yaml, digest=row.digest,
            origin=row.origin, created_by=row.created_by, created_at=row.created_at,
            base_digest=row.base_digest,
            conflicts=[MergeConflictOut(**c) for c in rules.conflicts_of(row)],
            merge_error=row.merge_error,
        )  # fmt: skip


class RuleVersionPage(Out):
    """One page of versions, newest first."""

    items: list[RuleVersionOut]
    next_cursor: str | None


class RuleErrorOut(Out):
    """Why a rule text cannot run (a2z.rules.errors)."""

    kind: str  # syntax | unsupported
    message: str
    feature: str | None  # the unsupported feature, e.g. "logsource product=cisco ..."


class Validation(Out):
    """The verdict on a rule text."""

    valid: bool
    rule_id: uuid.UUID | None = None
    title: str | None = None
    record_type: str | None = None  # the records it would run on (conn, dns, http, ...)
    # A correlation rule (runs in the backend only): its type, e.g. value_count.
    correlation_type: str | None = None
    overrides_shipped: bool | None = None  # its id is a shipped rule's: it would override it
    error: RuleErrorOut | None = None


class ShippedRuleOut(Out):
    """A rule the product ships, and whether the caller's tenant overrides it."""

    rule_id: uuid.UUID
    title: str
    yaml: str
    digest: str
    source: str  # its file in the package
    overridden: bool


class ShippedRules(Out):
    """The shipped catalog."""

    digest: str
    items: list[ShippedRuleOut]


class EffectiveRuleOut(Out):
    """One rule the tenant's detection runs."""

    rule_id: uuid.UUID
    source: str  # shipped | override | custom
    version: int | None  # the tenant rule's version (null for a shipped rule)
    title: str
    yaml: str
    digest: str


class EffectiveRules(Out):
    """Everything the tenant's detection runs, and its fingerprint."""

    digest: str
    version: int
    items: list[EffectiveRuleOut]
    # The part agents run at the edge (all but correlation rules; ADR 13): agents report it.
    edge_digest: str
    edge_version: int


class DryRunIn(Body):
    """Where to try a rule: a time range of stored records (default: the last 24 hours)."""

    since: datetime | None = None  # inclusive; default until - 24 h
    until: datetime | None = None  # exclusive; default now
    max_records: int = Field(default=10_000, ge=1, le=DRY_RUN_MAX_RECORDS)
    version: int | None = Field(default=None, ge=1, le=1_000_000_000)  # default: current


class DryRunOut(Out):
    """What the rule would have matched (a correlation rule: the alerts it would have raised,
    replaying the newest records of its base rules' types in time order)."""

    rule_id: uuid.UUID
    version: int
    record_type: str  # a correlation's: every type its base rules read, comma-separated
    since: datetime
    until: datetime
    scanned: int
    matched: int
    truncated: bool  # stopped at max_records before the oldest record of the range
    undecodable: int  # stored rows skipped as not valid records of the type
    sample_uids: list[str]  # evidence: uids of the newest matching records


def _get(session: ScopedSession, rule_id: uuid.UUID) -> TenantRule:
    rule = rules.get(session=session, rule_id=rule_id)
    if rule is None:
        raise NotFound("no such rule")
    return rule


def _references(ctx: ServerContext, tenant_id: uuid.UUID) -> rules.References:
    """The tenant's effective rules, read only if the text is a correlation that needs them."""

    def read() -> list[tuple[str | None, str]]:
        with ctx.sessions.tenant(tenant_id) as session:
            return rules.reference_texts(session=session, catalog=ctx.rules_catalog)

    return read


def _checked(ctx: ServerContext, text: str, tenant_id: uuid.UUID) -> rules.CheckedRule:
    """The compiled text; a refused one is counted before the problem response goes out."""
    try:
        return rules.check(text, references=_references(ctx, tenant_id))
    except rules.RuleRejected as exc:
        rules.count_rejection(ctx.metrics, exc)
        raise


def _out(session: ScopedSession, rule: TenantRule, ctx: ServerContext) -> RuleOut:
    return RuleOut.of(rule, rules.current(session=session, rule=rule), ctx.rules_catalog)


def _announce(ctx: ServerContext, tenant_id: uuid.UUID) -> None:
    """After a committed rule change: tell the gateway every agent of the tenant may be due a
    new edge rule set (it pushes only to those whose set differs; ADR 13)."""
    with ctx.sessions.tenant(tenant_id) as session:
        ids = agents.ids(session=session)
    ctx.signals.changed(tenant_id, ids)


@router.get("")
def list_rules(
    principal: Reader,
    ctx: Context,
    limit: Limit = 50,
    cursor: CursorParam = None,
    archived: Annotated[bool, Query(description="include archived rules")] = False,
) -> RulePage:
    """The tenant's custom rules and overrides, oldest first."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        page = rules.list_page(session=session, limit=limit, cursor=cursor, archived=archived)
        return RulePage(
            items=[_out(session, r, ctx) for r in page.items], next_cursor=page.next_cursor
        )


@router.post("", status_code=201)
def create_rule(body: RuleIn, principal: RuleAdmin, ctx: Context, source: Source) -> RuleOut:
    """Add a rule (422 with the reason if it does not compile); a shipped rule's id makes it
    the tenant's override of that rule, e.g. with another level, a filter, or disabled."""
    checked = _checked(ctx, body.yaml, principal.tenant_id)
    with ctx.sessions.tenant(principal.tenant_id) as session:
        rule = rules.create(
            session=session,
            catalog=ctx.rules_catalog,
            checked=checked,
            enabled=body.enabled,
            actor=principal.actor,
        )
        audit.record(
            session=session, actor=principal.actor, action="rule.create",
            target=f"rule:{rule.id}", source=source,
            detail={"kind": rule.kind, "version": 1, "enabled": rule.enabled},
        )  # fmt: skip
        out = _out(session, rule, ctx)
    _announce(ctx, principal.tenant_id)
    return out


@router.post("/validate")
def validate_rule(body: ValidateIn, principal: RuleTester, ctx: Context) -> Validation:
    """Check a rule text without storing it: parse, compile, and say why not if it fails."""
    try:
        checked = rules.check(body.yaml, references=_references(ctx, principal.tenant_id))
    except rules.RuleRejected as exc:
        rules.count_rejection(ctx.metrics, exc)
        detail: Any = exc.extra()["rule_error"]
        return Validation(valid=False, error=RuleErrorOut(**detail))
    record_type = correlation = None
    if checked.compiled is not None:
        record_type = str(checked.compiled.record_type.__struct_config__.tag)
    elif checked.correlation is not None:
        top = next(c for c in checked.correlation.correlations if c.rule_id == str(checked.rule_id))
        correlation = top.type.value
    return Validation(
        valid=True,
        rule_id=checked.rule_id,
        title=checked.title,
        record_type=record_type,
        correlation_type=correlation,
        overrides_shipped=ctx.rules_catalog.get(str(checked.rule_id)) is not None,
    )


@router.get("/shipped")
def list_shipped_rules(principal: Reader, ctx: Context) -> ShippedRules:
    """The rules the product ships; every tenant runs them unless it overrides them. To
    override one (another level, a filter, or disabled), POST its edited text as a new rule."""
    catalog = ctx.rules_catalog
    with ctx.sessions.tenant(principal.tenant_id) as session:
        overridden = {str(rule_id) for rule_id in rules.active_override_ids(session=session)}
    return ShippedRules(
        digest=catalog.digest,
        items=[
            ShippedRuleOut(
                rule_id=uuid.UUID(r.rule_id),
                title=r.title,
                yaml=r.yaml,
                digest=r.digest,
                source=r.source,
                overridden=r.rule_id in overridden,
            )
            for r in catalog
        ],
    )


@router.get("/effective")
def effective_rules(principal: Reader, ctx: Context) -> EffectiveRules:
    """What the tenant's detection runs: shipped rules minus the disabled, overrides applied,
    plus enabled custom rules; ``version`` changes whenever any of it does."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        found = rules.effective_rules(session=session, catalog=ctx.rules_catalog)
    edge = edge_rules.edge_set(found)
    return EffectiveRules(
        digest=found.digest,
        version=found.version,
        edge_digest=edge.digest,
        edge_version=edge.version,
        items=[
            EffectiveRuleOut(
                rule_id=uuid.UUID(r.rule_id),
                source=r.source,
                version=r.version,
                title=r.title,
                yaml=r.yaml,
                digest=r.digest,
            )
            for r in found.rules
        ],
    )


@router.get("/{rule_id:uuid}")
def get_rule(rule_id: uuid.UUID, principal: Reader, ctx: Context) -> RuleOut:
    """One rule (archived too); another tenant's rule is 404, like one that does not exist."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        return _out(session, _get(session, rule_id), ctx)


@router.put("/{rule_id:uuid}")
def update_rule(
    rule_id: uuid.UUID, body: RuleUpdate, principal: RuleAdmin, ctx: Context, source: Source
) -> RuleOut:
    """Store a new version (an archived rule is restored); the same text again is a no-op."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        rule = _get(session, rule_id)
        checked = _checked(ctx, body.yaml, principal.tenant_id)
        if rules.update(session=session, rule=rule, checked=checked, actor=principal.actor):
            audit.record(
                session=session, actor=principal.actor, action="rule.update",
                target=f"rule:{rule.id}", source=source, detail={"version": rule.version},
            )  # fmt: skip
        out = _out(session, rule, ctx)
    _announce(ctx, principal.tenant_id)
    return out


@router.patch("/{rule_id:uuid}")
def switch_rule(
    rule_id: uuid.UUID, body: RuleSwitch, principal: RuleAdmin, ctx: Context, source: Source
) -> RuleOut:
    """Enable or disable a rule (a disabled override also silences the shipped rule)."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        rule = _get(session, rule_id)
        rules.set_enabled(session=session, rule=rule, enabled=body.enabled)
        audit.record(
            session=session, actor=principal.actor,
            action="rule.enable" if body.enabled else "rule.disable",
            target=f"rule:{rule.id}", source=source,
        )  # fmt: skip
        out = _out(session, rule, ctx)
    _announce(ctx, principal.tenant_id)
    return out


@router.delete("/{rule_id:uuid}", status_code=204)
def archive_rule(
    rule_id: uuid.UUID, principal: RuleAdmin, ctx: Context, source: Source
) -> Response:
    """Archive the rule: it stops running and leaves the list, its versions stay readable
    (past alerts refer to them); archiving an override puts the shipped rule back."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        rule = _get(session, rule_id)
        rules.archive(session=session, rule=rule)
        audit.record(
            session=session, actor=principal.actor, action="rule.archive",
            target=f"rule:{rule.id}", source=source,
        )  # fmt: skip
    _announce(ctx, principal.tenant_id)
    return Response(status_code=204)


@router.get("/{rule_id:uuid}/versions")
def list_rule_versions(
    rule_id: uuid.UUID,
    principal: Reader,
    ctx: Context,
    limit: Limit = 50,
    cursor: CursorParam = None,
) -> RuleVersionPage:
    """The rule's versions, newest first."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        _get(session, rule_id)
        page = rules.list_versions(session=session, rule_id=rule_id, limit=limit, cursor=cursor)
        return RuleVersionPage(
            items=[RuleVersionOut.of(v) for v in page.items], next_cursor=page.next_cursor
        )


@router.post("/{rule_id:uuid}/dry-run")
def dry_run_rule(
    rule_id: uuid.UUID, body: DryRunIn, principal: RuleTester, ctx: Context
) -> DryRunOut:
    """Run the rule (its current or a given version) over the tenant's stored records in a
    time range, newest first, reading at most ``max_records``; nothing is written."""
    end = rules.to_epoch("until", body.until) if body.until else datetime.now(UTC).timestamp()
    start = (
        rules.to_epoch("since", body.since)
        if body.since
        else end - DRY_RUN_DEFAULT_RANGE.total_seconds()
    )
    if start >= end:
        raise InvalidInput("since must be before until")
    if end - start > DRY_RUN_MAX_RANGE.total_seconds():
        raise InvalidInput(f"the range is longer than {DRY_RUN_MAX_RANGE.days} days")
    with ctx.sessions.tenant(principal.tenant_id) as session:
        rule = _get(session, rule_id)
        number = body.version or rule.version
        version = rules.get_version(session=session, rule_id=rule.id, version=number)
        if version is None:
            raise NotFound(f"rule {rule.id} has no version {number}")
        checked = rules.check(version.yaml, references=_references(ctx, principal.tenant_id))
        if checked.compiled is not None:
            result = rules.dry_run(
                session=session, rule=checked.compiled, since=start, until=end,
                max_records=body.max_records, metrics=ctx.metrics,
            )  # fmt: skip
        else:
            assert checked.correlation is not None
            result = rules.dry_run_correlation(
                session=session, rules=checked.correlation, since=start, until=end,
                max_records=body.max_records, metrics=ctx.metrics,
            )  # fmt: skip
    return DryRunOut(
        rule_id=rule_id, version=number, record_type=result.record_type,
        since=datetime.fromtimestamp(start, UTC), until=datetime.fromtimestamp(end, UTC),
        scanned=result.scanned, matched=result.matched, truncated=result.truncated,
        undecodable=result.undecodable, sample_uids=result.sample_uids,
    )  # fmt: skip
