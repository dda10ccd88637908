"""Errors of the application-layer parsers (DNS, HTTP, TLS): each raises only these.

They extend the decoders' DecodeError tree, so the pipeline turns them into weird records the
same way: ``source`` is the protocol (``DNS``, ``HTTP``, ``SSL``), ``name`` the condition.
"""

from __future__ import annotations

from a2z.agent.decode.errors import DecodeError, Malformed, Truncated


class ProtocolError(DecodeError):
    """Root: application bytes that do not parse as the protocol expects."""


class NeedMoreData(ProtocolError, Truncated):
    """The message continues past the bytes given (a stream parser waits; a datagram is cut)."""


class MalformedMessage(ProtocolError, Malformed):
    """Enough bytes, but values that cannot be right (bad lengths, pointer loops...)."""


__all__ = ["MalformedMessage", "NeedMoreData", "ProtocolError"]
