"""Query parameters checked as a FastAPI route declares them, without FastAPI (hot_reads.py).

The rules are read from the declaring function's own signature (``Annotated[str | None,
Query(max_length=..., pattern=...)]``), so that declaration stays the one place a parameter's
constraints are written and the OpenAPI document shows. A checker may only be stricter than
the route: it passes the plainest spelling of a valid value and refuses everything else, which
then goes to the route to be answered (or refused with its 422). A constraint kind or a type
this module does not know fails at import, so the route cannot grow a rule the hot path ignores.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from annotated_types import Ge, Le, MaxLen, MinLen
from fastapi import params

# Decimal digits without sign, blank or leading zero: the one spelling both read alike.
_INTEGER = re.compile(r"0|[1-9][0-9]{0,17}")


@dataclass(frozen=True, slots=True)
class QueryRule:
    """One optional query parameter: a string or an integer, with its declared bounds."""

    integer: bool
    min_length: int = 0
    max_length: int | None = None
    pattern: re.Pattern[str] | None = None
    ge: int | None = None
    le: int | None = None

    def value(self, text: str) -> str | int | None:
        """``text`` as the route would take it, or None where the route must decide."""
        if self.integer:
            if not _INTEGER.fullmatch(text):
                return None
            number = int(text)
            if (self.ge is not None and number < self.ge) or (
                self.le is not None and number > self.le
            ):
                return None
            return number
        if len(text) < self.min_length or (
            self.max_length is not None and len(text) > self.max_length
        ):
            return None
        # fullmatch, not search: it cannot accept what the validator's anchored search refuses
        # (Python's ``$`` also matches before a final newline; fullmatch still needs the end).
        if self.pattern is not None and not self.pattern.fullmatch(text):
            return None
        return text


def rules_of(function: Callable[..., Any]) -> dict[str, QueryRule]:
    """The query rules ``function`` declares, by parameter name (which clients send)."""
    rules = {}
    for name, parameter in inspect.signature(function, eval_str=True).parameters.items():
        base, *extras = typing.get_args(parameter.annotation) or (None,)
        if len(extras) != 1 or not isinstance(extras[0], params.Query):
            raise TypeError(f"{function.__name__}({name}): not an Annotated Query parameter")
        info = extras[0]
        if parameter.default is not None:
            raise TypeError(f"{function.__name__}({name}): only optional parameters are known")
        if base == str | None:
            integer = False
        elif base == int | None:
            integer = True
        else:
            raise TypeError(f"{function.__name__}({name}): type {base} is not known")
        bounds: dict[str, Any] = {}
        for item in info.metadata:
            if isinstance(item, MaxLen):
                bounds["max_length"] = item.max_length
            elif isinstance(item, MinLen):
                bounds["min_length"] = item.min_length
            elif isinstance(item, Ge):
                bounds["ge"] = item.ge
            elif isinstance(item, Le):
                bounds["le"] = item.le
            elif set(vars(item)) == {"pattern"} and isinstance(item.pattern, str):
                bounds["pattern"] = re.compile(item.pattern)
            else:
                raise TypeError(f"{function.__name__}({name}): constraint {item!r} is not known")
        if info.alias not in (None, name):  # the rule's name is also the function's keyword
            raise TypeError(f"{function.__name__}({name}): an alias is not known")
        rules[name] = QueryRule(integer, **bounds)
    return rules
