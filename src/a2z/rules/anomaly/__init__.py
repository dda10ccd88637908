"""The backend's per-tenant anomaly model: per-source windows (``window``) scored by river's
Half-Space Trees (``model``). Imported by the server only: river is far too heavy for the agent.
"""

from a2z.rules.anomaly.model import (
    FEATURES,
    RULE_ID,
    AnomalySettings,
    SourceAnomalyModel,
    TenantModels,
    load_library,
    window_features,
)
from a2z.rules.anomaly.window import SourceWindow, SourceWindows, WindowStats

__all__ = [
    "FEATURES",
    "RULE_ID",
    "AnomalySettings",
    "SourceAnomalyModel",
    "SourceWindow",
    "SourceWindows",
    "TenantModels",
    "WindowStats",
    "load_library",
    "window_features",
]
