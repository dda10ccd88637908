"""Measures of DNS names used by the DNS detections: labels, registered domain, randomness.

The registered domain (``example.co.uk`` of ``a.b.example.co.uk``) comes from the Public
Suffix List as the ``publicsuffixlist`` package ships it (no network access at run time).
"""

from __future__ import annotations

import functools
import math
from collections import Counter

from publicsuffixlist import PublicSuffixList

VOWELS = frozenset("aeiouy")

# The most frequent letter pairs of English text (Norvig's counts of the Google books corpus,
# about the 80 most frequent): names people choose are made of them; random strings rarely are.
_BIGRAMS = (
    "th he in er an re on at en nd ti es or te of ed is it al ar st to nt ng se ha as ou io le "
    "ve co me de hi ri ro ic ne ea ra ce li ch ll be ma si om ur ca el ta la ns di fo ho pe ec "
    "pr no ct us ac ot il tr ly nc et ut ss so rs un lo wa ge ie wh ee"
)
COMMON_BIGRAMS = frozenset(_BIGRAMS.split())


@functools.cache
def _psl() -> PublicSuffixList:
    """The list, parsed once per process on first use (0.05-0.2 s, only if DNS is seen)."""
    return PublicSuffixList()


def normalize(name: str) -> str:
    """Lower case without the root dot."""
    return name.rstrip(".").lower()


@functools.lru_cache(maxsize=8192)  # bounded: clients ask the same few names over and over
def registered_domain(name: str) -> str:
    """The name's registered domain (one label below its public suffix), or the name itself."""
    return _psl().privatesuffix(name) or name


def registered_label(name: str) -> str:
    """The label an owner registered: ``example`` of ``www.example.co.uk``."""
    return registered_domain(name).partition(".")[0]


def subdomain(name: str) -> str:
    """What stands left of the registered domain (``a.b`` of ``a.b.example.com``)."""
    parent = registered_domain(name)
    if name == parent or not name.endswith("." + parent):
        return ""
    return name[: -len(parent) - 1]


def entropy(text: str) -> float:
    """Shannon entropy of the characters, bits per character."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def consonant_ratio(text: str) -> float:
    """Share of letters that are consonants (random letters: about 0.8; English: about 0.6)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum(c not in VOWELS for c in letters) / len(letters)


def longest_consonant_run(text: str) -> int:
    """The longest stretch of consecutive consonant letters."""
    best = run = 0
    for c in text:
        run = run + 1 if c.isalpha() and c not in VOWELS else 0
        best = max(best, run)
    return best


def common_bigram_ratio(text: str) -> float:
    """Share of adjacent letter pairs that are among English's most common ones."""
    pairs = [text[i : i + 2] for i in range(len(text) - 1)]
    pairs = [p for p in pairs if p.isalpha()]
    if not pairs:
        return 0.0
    return sum(p in COMMON_BIGRAMS for p in pairs) / len(pairs)
