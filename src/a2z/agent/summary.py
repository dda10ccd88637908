"""Pieces of the one-screen summaries `a2z agent replay` and `a2z agent run` print on stderr."""

from __future__ import annotations

import resource
import sys


def pairs(counts: dict[str, int]) -> str:
    """``a=1 b=2`` in name order, or ``none``."""
    if not counts:
        return "none"
    return " ".join(f"{name}={n}" for name, n in sorted(counts.items()))


def peak_rss_mib(*, children: bool = False) -> float:
    """Peak resident memory of this process (or its largest child process), MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if children:
        peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
