"""Errors raised while loading and compiling Sigma rules; each names the file and the rule id.

``RuleError`` is the root. ``RuleSyntaxError``: the file is not a valid Sigma rule.
``UnsupportedRuleError``: valid Sigma that our records cannot express; ``feature`` says what.
"""

from __future__ import annotations


class RuleError(Exception):
    """A rule that could not be loaded or compiled."""

    def __init__(self, message: str, *, path: str | None = None, rule_id: str | None = None):
        self.message = message  # what went wrong, without the location
        self.path = path  # the rule file, when the rule came from one
        self.rule_id = rule_id  # the Sigma rule id, when the rule got far enough to have one
        where = ": ".join(p for p in (path, f"rule {rule_id}" if rule_id else None) if p)
        super().__init__(f"{where}: {message}" if where else message)

    def located(self, *, path: str | None, rule_id: str | None) -> RuleError:
        """Fill in the location an inner layer did not know; returns self for ``raise``."""
        self.path = self.path or path
        self.rule_id = self.rule_id or rule_id
        where = ": ".join(
            p for p in (self.path, f"rule {self.rule_id}" if self.rule_id else None) if p
        )
        self.args = (f"{where}: {self.message}" if where else self.message,)
        return self


class RuleSyntaxError(RuleError):
    """Not valid Sigma: bad YAML, unknown modifier, broken condition, invalid regex or CIDR."""


class UnsupportedRuleError(RuleError):
    """Valid Sigma that we cannot run: a log source, field or value type with no equivalent."""

    def __init__(
        self,
        feature: str,
        *,
        path: str | None = None,
        rule_id: str | None = None,
    ):
        self.feature = feature  # the unsupported feature, e.g. "logsource product=cisco"
        super().__init__(f"unsupported: {feature}", path=path, rule_id=rule_id)
