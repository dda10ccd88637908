"""What an agent is sent to follow its tenant's intel: global plus tenant indicators, one version.

An agent matches the global set and its tenant's as one set, at one version that combines both
owners' versions: ``global << 32 | tenant``. Both only grow, so the combination does too, and
it splits back into the two bases a delta starts from. A base below either owner's floor (its
tombstones were purged), above its version (a restored database), or 0 gets the whole set.
"""

from __future__ import annotations

from a2z.records import IntelPush, IntelWarnings
from a2z.rules.intel import IntelDelta
from a2z.rules.intel.transfer import pack, split
from a2z.server.intel import service as intel
from a2z.server.intel.models import WarningKind
from a2z.server.store.session import ScopedSession

_SHIFT = 32
_TENANT_MASK = (1 << _SHIFT) - 1


def combine(global_version: int, tenant_version: int) -> int:
    """One agent-facing version from the two owners' versions."""
    return (global_version << _SHIFT) | tenant_version


def parts_of(version: int) -> tuple[int, int]:
    """(global, tenant) versions of a combined one."""
    return version >> _SHIFT, version & _TENANT_MASK


def current(session: ScopedSession) -> int:
    """The combined version the session's tenant is at now (two one-row reads)."""
    return combine(intel.GLOBAL.state(session).version, intel.TENANT.state(session).version)


def delta(session: ScopedSession, base: int) -> IntelDelta:
    """The delta from ``base`` to now, or the whole set when ``base`` cannot be a start."""
    g_state, t_state = intel.GLOBAL.state(session), intel.TENANT.state(session)
    version = combine(g_state.version, t_state.version)
    g_base, t_base = parts_of(base)
    usable = (
        base > 0
        and g_state.floor <= g_base <= g_state.version
        and t_state.floor <= t_base <= t_state.version
    )
    if not usable:
        added = intel.snapshot(session, intel.GLOBAL) + intel.snapshot(session, intel.TENANT)
        return IntelDelta(base=0, version=version, full=True, added=added)
    g_added, g_removed = intel.changes(session, intel.GLOBAL, g_base)
    t_added, t_removed = intel.changes(session, intel.TENANT, t_base)
    return IntelDelta(
        base=base, version=version, added=g_added + t_added, removed=g_removed + t_removed
    )


def warnings(session: ScopedSession) -> IntelWarnings:
    """The global and the tenant's warning lists together."""
    merged: dict[WarningKind, list[str]] = {kind: [] for kind in WarningKind}
    for listed in (
        intel.warning_values(session, intel.GLOBAL),
        intel.warning_values(session, intel.TENANT),
    ):
        for kind, values in listed.items():
            merged[kind].extend(values)
    return IntelWarnings(
        cidrs=merged[WarningKind.CIDR],
        domains=merged[WarningKind.DOMAIN],
        values=merged[WarningKind.VALUE],
    )


def pushes(session: ScopedSession, base: int) -> list[IntelPush]:
    """The messages that take an agent at ``base`` to the current version."""
    change = delta(session, base)
    cut = split(change)
    listed = warnings(session)
    last = len(cut) - 1
    return [
        IntelPush(
            version=change.version,
            base=change.base,
            full=change.full,
            part=n,
            parts=len(cut),
            data=pack(part),
            warnings=listed if n == last else None,
        )
        for n, part in enumerate(cut)
    ]
