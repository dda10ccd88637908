"""The shipped rule catalog: the Sigma rules the product ships, identified by their Sigma id.

The files live in ``a2z/rules/shipped/`` (see its README for their source). Loading parses
only the header (id, title) and hashes the text; compiling is left to whoever runs the rules.
"""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import yaml

from a2z.rules.errors import RuleError, RuleSyntaxError
from a2z.rules.merge import load_document


def digest_of(text: str) -> str:
    """SHA-256 of a rule's text: what identifies one version of it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sigma_id(value: object) -> str:
    """A Sigma id in canonical form (lower-case UUID text); RuleSyntaxError if it is not one."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError as exc:
        raise RuleSyntaxError(f"the rule id {value!r} is not a UUID") from exc


def ruleset_digest(rules: Iterable[tuple[str, str]]) -> str:
    """SHA-256 over ``(Sigma id, text)`` pairs in id order: one rule set's identity, which the
    server and the agent compute alike (the agent checks a pushed set against it)."""
    lines = sorted(f"{rule_id}:{digest_of(text)}\n" for rule_id, text in rules)
    return digest_of("".join(lines))


def version_of(digest: str) -> int:
    """A rule set's digest as a number (its first 60 bits), for people and heartbeats."""
    return int(digest[:15], 16)


# A top-level ``correlation:`` key: block-style YAML puts it at the start of a line, and a
# block scalar's lines are always indented, so no rule text can fake it (``check`` refuses a
# correlation written in flow style, which this would miss).
_CORRELATION_KEY = re.compile(r"^correlation\s*:", re.MULTILINE)


def is_correlation(text: str) -> bool:
    """True for a Sigma correlation rule's text (it runs in the backend, never at the edge)."""
    return _CORRELATION_KEY.search(text) is not None


def header_of(text: str) -> dict[str, Any]:
    """The document that names a rule text: the rule itself, or for a correlation bundled with
    its base rules and inner correlations (several YAML documents), the last correlation
    document: the one the others feed."""
    if not is_correlation(text):
        return load_document(text)
    try:
        docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise RuleSyntaxError(f"invalid YAML: {exc}") from exc
    found = [doc for doc in docs if isinstance(doc, dict) and "correlation" in doc]
    if not found:
        raise RuleSyntaxError("write the correlation section in block style (correlation: ...)")
    return found[-1]


@dataclass(frozen=True, slots=True)
class ShippedRule:
    """One shipped rule as the product ships it."""

    rule_id: str  # the Sigma id, canonical UUID text
    title: str  # the Sigma title
    yaml: str  # the rule's text, as shipped
    digest: str  # digest_of(yaml): changes whenever the shipped text does
    source: str  # the file it came from, within the package


@dataclass(frozen=True, slots=True)
class Catalog:
    """The shipped rules by Sigma id, in id order, with one digest over all of them."""

    rules: Mapping[str, ShippedRule]
    digest: str

    def get(self, rule_id: str) -> ShippedRule | None:
        """The shipped rule with this Sigma id, if any."""
        return self.rules.get(rule_id)

    def __iter__(self) -> Iterator[ShippedRule]:
        return iter(self.rules.values())

    def __len__(self) -> int:
        return len(self.rules)


def catalog_of(sources: Iterable[tuple[str, str]]) -> Catalog:
    """A catalog from ``(source name, YAML text)`` pairs; RuleError on a bad or repeated id."""
    found: dict[str, ShippedRule] = {}
    for source, text in sources:
        try:
            header = header_of(text)
            rule_id = sigma_id(header.get("id"))
            title = header.get("title")
            if not isinstance(title, str) or not title:
                raise RuleSyntaxError("a shipped rule needs a title")
        except RuleError as exc:
            raise exc.located(path=source, rule_id=None) from None
        if rule_id in found:
            raise RuleError(
                f"id also used by {found[rule_id].source}", path=source, rule_id=rule_id
            )
        found[rule_id] = ShippedRule(rule_id, title, text, digest_of(text), source)
    ordered = {k: found[k] for k in sorted(found)}
    overall = hashlib.sha256()
    for rule in ordered.values():
        overall.update(f"{rule.rule_id}:{rule.digest}\n".encode())
    return Catalog(ordered, overall.hexdigest())


@functools.cache
def shipped_catalog() -> Catalog:
    """The rules packaged with this version of the product (read once per process): SigmaHQ's
    in ``shipped/``, our correlation rules (with their base rules) in ``shipped/correlation/``."""
    folder = files("a2z.rules").joinpath("shipped")
    sources: list[tuple[str, str]] = []
    for prefix, where in (("", folder), ("correlation/", folder.joinpath("correlation"))):
        entries = sorted(
            (entry for entry in where.iterdir() if entry.name.endswith(".yml")),
            key=lambda entry: entry.name,
        )
        sources.extend(
            (prefix + entry.name, entry.read_text(encoding="utf-8")) for entry in entries
        )
    return catalog_of(sources)
