"""Edge detection: built-in detections and Sigma rules run on every record the agent makes."""

from a2z.agent.detect.stage import (
    DetectConfigError,
    DetectStats,
    EdgeDetector,
    load_rules,
)

__all__ = ["DetectConfigError", "DetectStats", "EdgeDetector", "load_rules"]
