"""Errors of the decoders: every malformed or short packet raises one of these, nothing else."""

from __future__ import annotations


class DecodeError(Exception):
    """Root: the bytes do not decode as the layer expects.

    ``source`` names the layer (``IP``, ``TCP``...) and ``name`` the condition, in the form the
    pipeline turns into a Zeek-style weird record.
    """

    def __init__(self, source: str, name: str, detail: str = "") -> None:
        super().__init__(f"{source}: {name}" + (f" ({detail})" if detail else ""))
        self.source = source
        self.name = name
        self.detail = detail


class Truncated(DecodeError):
    """Fewer bytes than the header needs (snapped capture or a cut packet)."""


class Malformed(DecodeError):
    """Enough bytes, but field values that cannot be right (bad version, bad lengths)."""


class Unsupported(DecodeError):
    """A well-formed frame of a kind we do not decode (unknown link type)."""
