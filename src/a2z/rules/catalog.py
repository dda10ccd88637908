"""The shipped rule catalog: the Sigma rules the product ships, identified by their Sigma id.

The files live in ``a2z/rules/shipped/`` (see its README for their source). Loading parses
only the header (id, title) and hashes the text; compiling is left to whoever runs the rules.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib.resources import files

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
            header = load_document(text)
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
    """The rules packaged with this version of the product (read once per process)."""
    folder = files("a2z.rules").joinpath("shipped")
    entries = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".yml")),
        key=lambda entry: entry.name,
    )
    return catalog_of((entry.name, entry.read_text(encoding="utf-8")) for entry in entries)
