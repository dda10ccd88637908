"""Sigma rules compiled to Python predicates over our records (used by agent and server).

Imports nothing of ours but ``a2z.records``. The Sigma names load on first use (PEP 562):
pySigma takes about a second to import on a busy machine, and an agent that runs only the
built-in detections (``a2z.rules.detections``) should not pay for it at start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from a2z.rules.errors import RuleError, RuleSyntaxError, UnsupportedRuleError

if TYPE_CHECKING:
    from a2z.rules.compile import CompiledRule, compile_rule, compile_yaml, parse_rule
    from a2z.rules.engine import LoadResult, RuleSet, alert_for, load_directory, match_naive

_LAZY = {
    "CompiledRule": "a2z.rules.compile",
    "compile_rule": "a2z.rules.compile",
    "compile_yaml": "a2z.rules.compile",
    "parse_rule": "a2z.rules.compile",
    "LoadResult": "a2z.rules.engine",
    "RuleSet": "a2z.rules.engine",
    "alert_for": "a2z.rules.engine",
    "load_directory": "a2z.rules.engine",
    "match_naive": "a2z.rules.engine",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'a2z.rules' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "CompiledRule",
    "LoadResult",
    "RuleError",
    "RuleSet",
    "RuleSyntaxError",
    "UnsupportedRuleError",
    "alert_for",
    "compile_rule",
    "compile_yaml",
    "load_directory",
    "match_naive",
    "parse_rule",
]
