"""Character 3-grams of the free-text columns and the Bloom filters that hold them (ADR 0023).

Pure functions: ``textblocks`` builds one filter per block of stored rows and asks, for a term,
which blocks may hold it. A filter only says "maybe" or "no": a block it lets through is read
and rechecked with the same ILIKE as without it, so a false positive costs time, never a row.

What makes "no" safe is the folding. PostgreSQL's ILIKE compares ``lower()`` of both sides
under the column's collation; ``fold`` maps every character so that ``fold(c) ==
fold(lower(c))`` for any lowering a collation may apply (see ``_fold_char``). A term whose
lowered form is inside a value's lowered form then has all its folded 3-grams among the
value's. Terms with a non-ASCII character are not looked up at all (``term_grams`` returns
None: read the raw rows): full Unicode case mappings may change their length.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

GRAM = 3
HASHES = 4
"""Bits set per gram. With ``BITS_PER_GRAM`` bits per gram a gram not in the block still finds
all its bits set with probability ~(1 - e^(-4/12))^4 = 0.6 %; a term of a dozen grams almost
never passes a block that lacks it."""
BITS_PER_GRAM = 12
MIN_BITS = 1024
MAX_BITS = 1 << 15
"""A filter is a power of two of bits between these: the position of a gram's bit is then
``(h1 + i * h2) mod m`` for any block's ``m``, computed alike in Python and in SQL."""

_OTHER = "\x00"
"""What every non-ASCII character without an ASCII lowercase folds to."""
# Non-ASCII characters some collation lowers to, or from, an ASCII letter: U+0130 (I with
# dot) lowers to "i" (and to "i" + U+0307 under full mappings), the Kelvin sign to "k", and
# a Turkish collation lowers "I" to U+0131 (dotless i). They fold to the ASCII letter so both
# sides of an ILIKE fold alike whichever lowering the collation applies.
_SPECIAL = {"\u0130": "i", "\u0131": "i", "\u212a": "k"}


def _fold_char(c: str) -> str:
    if c.isascii():
        return c.lower()
    special = _SPECIAL.get(c)
    if special is not None:
        return special
    # A letter whose decomposition starts with an ASCII letter (é, Ì) folds to that letter:
    # some full mappings (Lithuanian Ì -> i + marks) lower it to text that starts with it.
    base = unicodedata.normalize("NFD", c)[0]
    return base.lower() if base.isascii() and base.isalpha() else _OTHER


@lru_cache(maxsize=4096)
def _fold_non_ascii(value: str) -> tuple[str, ...]:
    folded = "".join(_fold_char(c) for c in value)
    # Also without combining marks: a collation may drop one while lowering (Turkish
    # "I" + U+0307 -> "i"). Extra grams only widen the filter; they never hide a row.
    bare = "".join(_fold_char(c) for c in value if not unicodedata.combining(c))
    return (folded,) if bare == folded else (folded, bare)


def fold(value: str) -> tuple[str, ...]:
    """``value`` as the filter indexes it: ASCII lowercased, other characters folded."""
    if value.isascii():
        return (value.lower(),)
    return _fold_non_ascii(value)


def value_grams(value: str) -> frozenset[str]:
    """The folded 3-grams of one stored value (what a block's filter holds for it)."""
    return _cached_grams(value)


@lru_cache(maxsize=1 << 16)
def _cached_grams(value: str) -> frozenset[str]:
    # Values repeat a lot between blocks (host names, user agents): cached by value.
    out: set[str] = set()
    for folded in fold(value):
        out.update(folded[i : i + GRAM] for i in range(len(folded) - GRAM + 1))
    return frozenset(out)


def term_grams(term: str) -> frozenset[str] | None:
    """The grams every value containing ``term`` (case-insensitively) holds; None when the
    filters cannot answer for ``term`` (shorter than a gram, or not ASCII)."""
    if len(term) < GRAM or not term.isascii():
        return None
    low = term.lower()
    return frozenset(low[i : i + GRAM] for i in range(len(low) - GRAM + 1))


@lru_cache(maxsize=1 << 16)
def gram_hash(gram: str) -> tuple[int, int]:
    """Two 31-bit hashes of ``gram``; bit ``i`` of a filter of ``m`` bits is ``(h1 + i * h2)
    mod m`` (double hashing).

    Hand-written because the same positions must come out of Python (building) and SQL (the
    lookup tests them with ``get_bit``), and no dependency exposes such a hash to both;
    blake2b is in the standard library, fast, and stable across versions and platforms.
    """
    digest = hashlib.blake2b(gram.encode(), digest_size=8).digest()
    h1 = int.from_bytes(digest[:4], "little") >> 1
    h2 = int.from_bytes(digest[4:], "little") >> 1 | 1  # odd: cycles through all of m
    return h1, h2


def filter_bits(n_grams: int) -> int:
    """The size in bits of a block's filter for ``n_grams`` distinct grams."""
    want = max(MIN_BITS, n_grams * BITS_PER_GRAM)
    return min(MAX_BITS, 1 << (want - 1).bit_length())


def positions(gram: str, bits: int) -> list[int]:
    """The bits ``gram`` sets in a filter of ``bits`` bits."""
    h1, h2 = gram_hash(gram)
    return [(h1 + i * h2) % bits for i in range(HASHES)]


def build_filter(grams: Iterable[str]) -> bytes:
    """A Bloom filter of ``grams``; bit ``p`` is bit ``p % 8`` (least significant first) of byte
    ``p // 8``, as PostgreSQL's ``get_bit`` numbers them."""
    grams = list(grams)
    bits = filter_bits(len(grams))
    out = bytearray(bits // 8)
    for gram in grams:
        h1, h2 = gram_hash(gram)
        for i in range(HASHES):
            p = (h1 + i * h2) % bits
            out[p >> 3] |= 1 << (p & 7)
    return bytes(out)


def may_hold(bloom: bytes, grams: Iterable[str]) -> bool:
    """Whether a block with filter ``bloom`` may hold every gram (False: it holds none of the
    term's rows)."""
    bits = len(bloom) * 8
    return all(bloom[p >> 3] >> (p & 7) & 1 for g in grams for p in positions(g, bits))
