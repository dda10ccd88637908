"""Per-tenant online anomaly model over per-source windows (river's Half-Space Trees).

Each tenant gets one model. Every ``conn`` and ``dns`` record updates its source's sliding window
(``window.SourceWindow``); each ``conn`` is then scored on its source's aggregates as they stand
after it, so every connection carries the score of what its source was doing at that moment.
Half-Space Trees (Tan, Ting & Liu, 2011) suit a stream: constant memory per model,
O(trees x height) per record, and a model that follows drift because the mass profile it scores
against is the previous ``window`` of learned records. Until ``warm_up`` records have been
learned a model scores nothing. A record scored at or above the threshold is not learned, so an
attack does not teach the model that it is normal while it lasts. Traffic to multicast and
broadcast addresses (neighbour discovery, MLD, mDNS) is left out: every interface sends it.

Imported only by the backend (``a2z.server.detect``): river pulls in numpy and scipy (~140 MiB
resident), far beyond the agent's memory budget, so ``a2z.rules`` does not re-export it. Even
there river is imported on first use (``load_library``): its import takes 2-3 CPU seconds, which
a server should not spend before it answers its health check.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from a2z.records import Alert, Conn, Dns, Record, Severity
from a2z.rules.anomaly.window import SourceWindows, WindowStats, link_control

if TYPE_CHECKING:
    from river.anomaly import HalfSpaceTrees

RULE_ID = "a2z-anomaly-source"
RULE_TITLE = "Unusual activity from this source for this tenant"

FEATURES = (
    "conns",
    "hosts",
    "ports",
    "failed",
    "no_service",
    "periodic",
    "dns_unique",
    "dns_entropy",
    "dns_failed",
)

_MAX_ENTROPY = 5.0  # bits per character of a base32 label; hex tops out at 4


def load_library() -> None:
    """Import river now (slow: it pulls in scipy) instead of when the first model is built."""
    import river.anomaly  # noqa: F401


def window_features(stats: WindowStats, max_entries: int) -> dict[str, float]:
    """The model's view of one source's window: every value in [0, 1].

    Counts are log-scaled against the window's capacity and shares are ratios, so the trees
    can split on fixed limits instead of an online scaler whose range drifts with outliers.
    """
    log_cap = math.log1p(max_entries)
    conns = max(stats.conns, 1)
    dns = max(stats.dns, 1)
    periodic = 0.0 if stats.gap_cv is None else 1.0 - min(stats.gap_cv, 1.0)
    return {
        "conns": min(math.log1p(stats.conns) / log_cap, 1.0),
        "hosts": min(math.log1p(stats.hosts) / log_cap, 1.0),
        "ports": min(math.log1p(stats.ports) / log_cap, 1.0),
        "failed": stats.failed / conns,
        "no_service": stats.no_service / conns,
        "periodic": periodic,
        "dns_unique": stats.dns_names / dns,
        "dns_entropy": min(stats.dns_entropy / _MAX_ENTROPY, 1.0),
        "dns_failed": stats.dns_failed / dns,
    }


@dataclass(frozen=True, slots=True)
class AnomalySettings:
    """Tunables (docs/detections.md): defaults measured with ``make eval-detection``."""

    threshold: float = 0.99  # chosen on the validation split of make eval-detection
    warm_up: int = 2_000  # connections learned before any score counts
    span: float = 60.0  # seconds of a source's activity its window aggregates
    max_entries: int = 256  # records kept per source window (each of conn and dns)
    max_sources: int = 4_096  # source windows kept per tenant (least recently active evicted)
    window: int = 250  # Half-Space Trees window: mass profiles swap every this many records
    trees: int = 10  # more trees: smoother scores, proportionally more CPU per record
    height: int = 8  # tree depth; cost per record grows linearly with it
    seed: int = 42  # fixed so a replay scores identically
    severity: Severity = Severity.LOW

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1]: {self.threshold}")
        if self.warm_up < self.window:
            raise ValueError("warm_up must cover at least one window")
        if self.window < 1 or self.trees < 1 or self.height < 1:
            raise ValueError("window, trees and height must be positive")
        if self.span <= 0.0 or self.max_entries < 2 or self.max_sources < 1:
            raise ValueError("span, max_entries and max_sources must be positive")


class SourceAnomalyModel:
    """One tenant's model: ``observe`` updates the source windows and scores each connection."""

    def __init__(self, settings: AnomalySettings | None = None) -> None:
        from river.anomaly import HalfSpaceTrees

        self.settings = settings or AnomalySettings()
        self._trees: HalfSpaceTrees = HalfSpaceTrees(
            n_trees=self.settings.trees,
            height=self.settings.height,
            window_size=self.settings.window,
            seed=self.settings.seed,
            limits=dict.fromkeys(FEATURES, (0.0, 1.0)),
        )
        self.windows = SourceWindows(
            self.settings.span, self.settings.max_entries, self.settings.max_sources
        )
        self.learned = 0

    @property
    def warm(self) -> bool:
        """True once the model has learned enough to score."""
        return self.learned >= self.settings.warm_up

    def observe(self, record: Record, threshold: float | None = None) -> float | None:
        """Add a record to its source's window; a connection's score in [0, 1] (None while
        warming up, and for other record types). ``threshold`` overrides the settings'."""
        if not isinstance(record, (Conn, Dns)) or link_control(record.resp_h):
            return None
        if isinstance(record, Dns):
            self.windows.of(record.orig_h).add_dns(record)
            return None
        window = self.windows.of(record.orig_h)
        window.add_conn(record)
        features = window_features(window.stats(), self.settings.max_entries)
        # river's HalfSpaceTrees methods carry no annotations (hence the ignores).
        score = float(self._trees.score_one(features)) if self.warm else None  # type: ignore[no-untyped-call]
        if score is None or score < (threshold or self.settings.threshold):
            self._trees.learn_one(features)  # type: ignore[no-untyped-call]
            self.learned += 1
        return score

    def alert(self, conn: Conn, score: float, threshold: float | None = None) -> Alert | None:
        """The alert for a scored connection, if its score reaches the threshold and its source
        raised none in the last ``span`` seconds (one alert per source per window)."""
        if score < (threshold or self.settings.threshold):
            return None
        window = self.windows.of(conn.orig_h)
        now = conn.ts + max(conn.duration or 0.0, 0.0)
        if window.last_alert is not None and now - window.last_alert < self.settings.span:
            return None
        window.last_alert = now
        stats = window.stats()
        return Alert(
            ts=conn.ts,
            uid=conn.uid,
            orig_h=conn.orig_h,
            orig_p=conn.orig_p,
            resp_h=conn.resp_h,
            resp_p=conn.resp_p,
            rule_id=RULE_ID,
            title=f"{RULE_TITLE}: {describe(stats)} in {self.settings.span:g} s",
            severity=self.settings.severity,
            uids=[conn.uid],
            dedup_key=f"{RULE_ID}|{conn.orig_h}",
            score=round(score, 4),
        )


def describe(stats: WindowStats) -> str:
    """The window's aggregates in an analyst's words, for the alert title."""
    parts = [
        f"{stats.conns} conns to {stats.hosts} hosts on {stats.ports} ports",
        f"{stats.failed * 100 // max(stats.conns, 1)}% failed",
    ]
    if stats.dns:
        parts.append(
            f"{stats.dns} DNS queries ({stats.dns_names} names, "
            f"{stats.dns_failed * 100 // stats.dns}% failed)"
        )
    return ", ".join(parts)


@dataclass
class TenantModels:
    """One model per tenant, at most ``max_tenants`` in memory (least recently used evicted).

    A model is ~0.5 MB of trees plus its source windows (bounded by ``max_sources`` x
    ``max_entries``); an evicted tenant's model warms up again.
    """

    settings: AnomalySettings = field(default_factory=AnomalySettings)
    max_tenants: int = 1_000
    evictions: int = 0
    _models: OrderedDict[str, SourceAnomalyModel] = field(default_factory=OrderedDict)

    def model(self, tenant: str) -> SourceAnomalyModel:
        """The tenant's model, created on first use."""
        model = self._models.get(tenant)
        if model is None:
            model = self._models[tenant] = SourceAnomalyModel(self.settings)
            if len(self._models) > self.max_tenants:
                self._models.popitem(last=False)
                self.evictions += 1
        else:
            self._models.move_to_end(tenant)
        return model

    def __len__(self) -> int:
        return len(self._models)

    def observe(
        self, tenant: str, records: Iterable[Record], threshold: float | None = None
    ) -> list[tuple[Conn, float]]:
        """Feed ``tenant``'s records to its model; the scored connections with their score."""
        model = self.model(tenant)
        scored = []
        for record in records:
            score = model.observe(record, threshold)
            if score is not None:
                assert isinstance(record, Conn)  # only connections are scored
                scored.append((record, score))
        return scored
