"""Errors raised while opening or reading a capture file."""

from __future__ import annotations


class CaptureError(Exception):
    """Root of capture errors: the source cannot deliver packets."""


class CaptureFormatError(CaptureError):
    """The file is not a pcap or pcapng capture, or its header is unusable."""


class CaptureOpenError(CaptureError):
    """The capture file could not be opened or mapped (missing, unreadable, a directory)."""
