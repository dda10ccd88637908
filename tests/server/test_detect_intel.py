"""The detect role's intel matching: global plus tenant indicators, warning lists, tenants kept
apart, sets refreshed by version with only the changed rows, and edge alerts not repeated."""

from __future__ import annotations

from a2z.records import Alert, Conn, Dns, Severity
from a2z.rules.intel import IndicatorType, make
from a2z.server.context import ServerContext
from a2z.server.detect.intel import IntelDetector
from a2z.server.detect.runner import default_detectors
from a2z.server.intel import service as intel
from a2z.server.intel.models import WarningKind
from tests.server.conftest import TenantFixture

T0 = 1_750_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def conn(uid: str, resp_h: str, orig_h: str = "10.1.1.1", ts: float = T0) -> Conn:
    return Conn(ts=ts, uid=uid, orig_h=orig_h, orig_p=40000, resp_h=resp_h, resp_p=443, proto="tcp")


def dns(uid: str, query: str) -> Dns:
    return Dns(
        ts=T0, uid=uid, orig_h="10.1.1.1", orig_p=5353, resp_h="10.1.1.53", resp_p=53,
        proto="udp", trans_id=1, query=query,
    )  # fmt: skip


def add(ctx: ServerContext, tenant: TenantFixture, scope: intel.Scope, *values: str) -> None:  # type: ignore[type-arg]
    with ctx.sessions.tenant(tenant.id, global_intel=scope.is_global) as session:
        intel.import_indicators(
            session, scope,
            [make(IndicatorType.IP if v[0].isdigit() else IndicatorType.DOMAIN, v,
                  source="feed", confidence=90) for v in values],
        )  # fmt: skip


def test_global_and_tenant_indicators_match_and_tenants_stay_apart(
    ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    add(ctx, tenant_a, intel.TENANT, "198.51.100.10", "c2.example")
    add(ctx, tenant_b, intel.TENANT, "198.51.100.20")
    add(ctx, tenant_a, intel.GLOBAL, "198.51.100.30")
    detector = IntelDetector(ctx.sessions, ctx.metrics)
    records = [
        conn("C1", "198.51.100.10"), conn("C2", "198.51.100.20"), conn("C3", "198.51.100.30"),
        dns("D1", "www.c2.example"), conn("C4", "192.0.2.99"),
    ]  # fmt: skip
    a = detector.detect(str(tenant_a.id), records)
    b = detector.detect(str(tenant_b.id), records)
    assert sorted(x.uids[0] for x in a) == ["C1", "C3", "D1"]
    assert sorted(x.uids[0] for x in b) == ["C2", "C3"]
    [global_hit] = [x for x in b if x.uids == ["C3"]]
    assert "global:feed" in global_hit.title and global_hit.dedup_key.endswith("|10.1.1.1")
    assert all(x.attack == ["T1071"] and x.severity is Severity.HIGH for x in a)


def test_sets_refresh_by_version_with_the_changed_rows_only(
    ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    clock = Clock()
    detector = IntelDetector(ctx.sessions, ctx.metrics, refresh_s=10, clock=clock)
    tenant = str(tenant_a.id)
    add(ctx, tenant_a, intel.TENANT, "198.51.100.10")
    assert len(detector.detect(tenant, [conn("C1", "198.51.100.10")])) == 1
    loads = detector.refreshes
    add(ctx, tenant_a, intel.TENANT, "198.51.100.11")
    with ctx.sessions.tenant(tenant_a.id) as session:
        row = intel.list_page(session, intel.TENANT, limit=10, cursor=None,
                              prefix="198.51.100.10").items[0]  # fmt: skip
        intel.remove(session, intel.TENANT, row)
    new = conn("C2", "198.51.100.11", orig_h="10.1.1.2")
    assert detector.detect(tenant, [new]) == []  # not looked at again within refresh_s
    clock.now = 11
    assert [x.uids for x in detector.detect(tenant, [new])] == [["C2"]]
    assert detector.detect(tenant, [conn("C3", "198.51.100.10", orig_h="10.1.1.3")]) == []
    assert detector.refreshes == loads + 1  # one incremental load (tenant); global unchanged
    tenant_set = detector._tenants[tenant].own.indicators
    assert len(tenant_set) == 1 and tenant_set.version == 3


def test_warning_lists_suppress_and_repeats_are_counted_not_repeated(
    ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    add(ctx, tenant_a, intel.TENANT, "198.51.100.10", "198.51.100.11")
    with ctx.sessions.tenant(tenant_a.id) as session:
        intel.add_warning(session, intel.TENANT, kind=WarningKind.CIDR, value="198.51.100.11",
                          note="", actor="t")  # fmt: skip
    detector = IntelDetector(ctx.sessions, ctx.metrics)
    tenant = str(tenant_a.id)
    found = detector.detect(
        tenant, [conn("C1", "198.51.100.10"), conn("C2", "198.51.100.11"),
                 conn("C3", "198.51.100.10", ts=T0 + 1)],
    )  # fmt: skip
    assert [x.uids for x in found] == [["C1"]]  # C2 warning-listed, C3 a repeat in the window
    assert detector.suppressor.stats.suppressed == 1


def test_an_alert_the_edge_raised_is_not_raised_again(
    ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    add(ctx, tenant_a, intel.TENANT, "198.51.100.10")
    detector = IntelDetector(ctx.sessions, ctx.metrics)
    record = conn("C1", "198.51.100.10")
    [own] = IntelDetector(ctx.sessions, ctx.metrics).detect(str(tenant_a.id), [record])
    edge = Alert(
        ts=record.ts, uid="C1", orig_h=record.orig_h, orig_p=record.orig_p,
        resp_h=record.resp_h, resp_p=record.resp_p, rule_id=own.rule_id, title=own.title,
        severity=own.severity, uids=["C1"], dedup_key=own.dedup_key,
    )  # fmt: skip
    assert detector.detect(str(tenant_a.id), [record, edge]) == []


def test_intel_runs_in_the_default_detect_role(ctx: ServerContext) -> None:
    names = [d.name for d in default_detectors(ctx.sessions, ctx.metrics, ctx.rules_catalog)]
    assert "intel" in names
