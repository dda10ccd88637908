"""Sigma rules compiled to Python predicates over our records (used by agent and server).

Imports nothing of ours but ``a2z.records``.
"""

from a2z.rules.compile import CompiledRule, compile_rule, compile_yaml, parse_rule
from a2z.rules.engine import LoadResult, RuleSet, alert_for, load_directory, match_naive
from a2z.rules.errors import RuleError, RuleSyntaxError, UnsupportedRuleError

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
