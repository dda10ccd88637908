"""Per-tenant online anomaly model over connection features (river's Half-Space Trees).

Each tenant gets its own model that learns from that tenant's ``conn`` records as they arrive
and scores each one before learning from it. Half-Space Trees (Tan, Ting & Liu, 2011) suit a
stream: constant memory per model, O(trees x height) per record, and a model that follows drift
because the mass profile it scores against is the previous window's. Until ``warm_up`` records
have been learned a model scores nothing: a fresh model has seen no "normal" to compare with.

Features are fixed transforms into [0, 1] (log-scaled sizes and durations, ratios, flags), so
the trees can use known limits instead of an online scaler whose range drifts with outliers.

Imported only by the backend (``a2z.server.detect``): river pulls in numpy and scipy (~140 MiB
resident), far beyond the agent's memory budget, so ``a2z.rules`` does not re-export it. Even
there river is imported on first use (``load_library``), not with this module: its import takes
2-3 CPU seconds, which a server should not spend before it answers its health check.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from a2z.records import Alert, Conn, Severity

if TYPE_CHECKING:
    from river.anomaly import HalfSpaceTrees

RULE_ID = "a2z-anomaly-conn"
RULE_TITLE = "Unusual connection for this tenant"

# Zeek states where the connection never completed a normal exchange.
_FAILED_STATES = frozenset({"S0", "REJ", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH"})
_PROTO_VALUE = {"tcp": 0.0, "udp": 0.5, "icmp": 1.0}

# Scale of each log-scaled feature: log1p(x) / log1p(limit) maps [0, limit] onto [0, 1].
_LOG_DAY = math.log1p(86_400.0)
_LOG_BYTES = math.log1p(10e9)
_LOG_PKTS = math.log1p(10e6)

FEATURES = (
    "duration",
    "orig_bytes",
    "resp_bytes",
    "orig_pkts",
    "resp_pkts",
    "orig_share",
    "failed",
    "proto",
    "no_service",
    "ephemeral_port",
)


def conn_features(conn: Conn) -> dict[str, float]:
    """The model's view of one connection: every value in [0, 1]."""
    orig_bytes = conn.orig_bytes or 0
    resp_bytes = conn.resp_bytes or 0
    return {
        "duration": min(math.log1p(max(conn.duration or 0.0, 0.0)) / _LOG_DAY, 1.0),
        "orig_bytes": min(math.log1p(orig_bytes) / _LOG_BYTES, 1.0),
        "resp_bytes": min(math.log1p(resp_bytes) / _LOG_BYTES, 1.0),
        "orig_pkts": min(math.log1p(conn.orig_pkts) / _LOG_PKTS, 1.0),
        "resp_pkts": min(math.log1p(conn.resp_pkts) / _LOG_PKTS, 1.0),
        "orig_share": (orig_bytes + 1) / (orig_bytes + resp_bytes + 2),
        "failed": 1.0 if conn.conn_state in _FAILED_STATES else 0.0,
        "proto": _PROTO_VALUE.get(conn.proto, 1.0),
        "no_service": 0.0 if conn.service else 1.0,
        "ephemeral_port": 1.0 if (conn.resp_p or 0) >= 49_152 else 0.0,
    }


def load_library() -> None:
    """Import river now (slow: it pulls in scipy) instead of when the first model is built."""
    import river.anomaly  # noqa: F401


@dataclass(frozen=True, slots=True)
class AnomalySettings:
    """Tunables (docs/detections.md): defaults measured with ``make eval-detection``."""

    threshold: float = 0.9  # alert when a connection's score is at or above this
    warm_up: int = 1_000  # connections learned before any score counts
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


class ConnAnomalyModel:
    """One tenant's model: ``observe`` scores a connection, then learns from it."""

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
        self.learned = 0

    @property
    def warm(self) -> bool:
        """True once the model has learned enough to score."""
        return self.learned >= self.settings.warm_up

    def observe(self, conn: Conn) -> float | None:
        """The connection's anomaly score in [0, 1] (None while warming up); then learn it."""
        features = conn_features(conn)
        # river's HalfSpaceTrees methods carry no annotations (hence the ignores).
        score = float(self._trees.score_one(features)) if self.warm else None  # type: ignore[no-untyped-call]
        self._trees.learn_one(features)  # type: ignore[no-untyped-call]
        self.learned += 1
        return score

    def alert(self, conn: Conn, score: float) -> Alert | None:
        """The alert for a scored connection, if the score reaches the threshold."""
        if score < self.settings.threshold:
            return None
        return Alert(
            ts=conn.ts,
            uid=conn.uid,
            orig_h=conn.orig_h,
            orig_p=conn.orig_p,
            resp_h=conn.resp_h,
            resp_p=conn.resp_p,
            rule_id=RULE_ID,
            title=f"{RULE_TITLE} ({conn.proto}/{conn.resp_p} {conn.conn_state})",
            severity=self.settings.severity,
            uids=[conn.uid],
            dedup_key=f"{RULE_ID}|{conn.orig_h}|{conn.resp_h}|{conn.resp_p}",
            score=round(score, 4),
        )


@dataclass
class TenantModels:
    """One model per tenant, at most ``max_tenants`` in memory (least recently used evicted).

    A model is ~0.5 MB (10 trees of height 8); an evicted tenant's model warms up again.
    """

    settings: AnomalySettings = field(default_factory=AnomalySettings)
    max_tenants: int = 1_000
    evictions: int = 0
    _models: OrderedDict[str, ConnAnomalyModel] = field(default_factory=OrderedDict)

    def model(self, tenant: str) -> ConnAnomalyModel:
        """The tenant's model, created on first use."""
        model = self._models.get(tenant)
        if model is None:
            model = self._models[tenant] = ConnAnomalyModel(self.settings)
            if len(self._models) > self.max_tenants:
                self._models.popitem(last=False)
                self.evictions += 1
        else:
            self._models.move_to_end(tenant)
        return model

    def __len__(self) -> int:
        return len(self._models)

    def observe(self, tenant: str, conns: Iterable[Conn]) -> list[tuple[Conn, float]]:
        """Score then learn each connection of ``tenant``; the scored ones with their score."""
        model = self.model(tenant)
        scored = []
        for conn in conns:
            score = model.observe(conn)
            if score is not None:
                scored.append((conn, score))
        return scored
