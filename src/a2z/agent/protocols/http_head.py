"""HTTP/1.x message heads: content detection of a request line, and the request or status
line with its headers parsed into an :class:`HttpHead` (pure functions of one header block).

Compiled by mypyc (ADR 0006, update 3): on the attack mix the head parsing was most of the
HTTP analyzer's cost. Hand-written rather than h11/httptools for the same reason;
:mod:`a2z.agent.protocols.http` frames the messages and writes the records.
"""

from __future__ import annotations

import binascii
from typing import Final, NamedTuple

from a2z.agent.protocols.dns_message import escape_bytes
from a2z.agent.protocols.errors import MalformedMessage

METHODS = frozenset(
    {
        b"GET", b"POST", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE", b"CONNECT", b"PATCH",
        b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"POLL",
        b"REPORT", b"SUBSCRIBE", b"BMOVE", b"SEARCH",
    }
)  # fmt: skip
"""Request methods that make a flow HTTP by content (Zeek's HTTP::http_methods plus PATCH)."""

_MAX_METHOD: Final = max(len(m) for m in METHODS)
_TOKEN: Final = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


class HttpHead(NamedTuple):
    """A parsed request or status line with its headers.

    A NamedTuple built with tuple.__new__ (immutable, as the frozen dataclass it was): the
    dataclass's interpreted __init__ was a visible share of the HTTP analyzer (ADR 0006,
    update 4).
    """

    method: str | None  # request method (requests)
    uri: str | None  # request target as sent (requests)
    version: str | None  # "1.1" (from HTTP/1.1); None for an HTTP/0.9 request
    status_code: int | None  # status code (responses)
    status_msg: str | None  # reason phrase (responses)
    headers: tuple[tuple[str, str], ...]  # (upper-case name, value) in order


def starts_like_request(data: bytes) -> bool | None:
    """Content detection of a request line: True, False, or None when more bytes are needed."""
    space = data.find(b" ", 0, _MAX_METHOD + 1)
    if space > 0:
        return data[:space] in METHODS
    if len(data) > _MAX_METHOD:
        return False
    head = data.upper() if data.isalpha() else b""
    return None if head and any(m.startswith(head) for m in METHODS) else False


def parse_request_head(block: bytes) -> HttpHead:
    """Parse a request line and headers (``block`` ends before the empty line)."""
    line, headers = _split_head(block)
    space = line.find(b" ")
    method = line[:space] if space > 0 else b""
    if not method or not all(c in _TOKEN for c in method):
        raise MalformedMessage("HTTP", "bad_HTTP_request", escape_bytes(line[:40]))
    rest = line[space + 1 :].strip(b" ")
    version: str | None = None
    at = rest.rfind(b" HTTP/")
    if at >= 0:
        version = _text(rest[at + 6 :].strip())
        uri = rest[:at].rstrip(b" ")
    elif rest.startswith(b"HTTP/"):
        raise MalformedMessage("HTTP", "bad_HTTP_request", "missing URI")
    else:
        uri = rest  # HTTP/0.9 simple request
    return tuple.__new__(HttpHead, (_text(method), _text(uri), version, None, None, headers))


def parse_response_head(block: bytes) -> HttpHead:
    """Parse a status line and headers (``block`` ends before the empty line)."""
    line, headers = _split_head(block)
    if not line.startswith(b"HTTP/"):
        raise MalformedMessage("HTTP", "bad_HTTP_reply", escape_bytes(line[:40]))
    parts = line.split(b" ", 2)
    version = _text(parts[0][5:])
    try:
        code = int(parts[1]) if len(parts) > 1 else -1
    except ValueError:
        code = -1
    if not 0 <= code <= 999:
        raise MalformedMessage("HTTP", "bad_HTTP_reply", escape_bytes(line[:40]))
    reason = _text(parts[2].strip()) if len(parts) > 2 else ""
    return tuple.__new__(HttpHead, (None, None, version, code, reason, headers))


def basic_credentials(value: str) -> tuple[str, str | None] | None:
    """User and password of a Basic ``Authorization`` value, as Zeek decodes them."""
    if len(value) < 6 or value[:6].lower() != "basic ":
        return None
    encoded = value[6:].strip(" \t")
    try:
        decoded = binascii.a2b_base64(encoded.encode("ascii"), strict_mode=False)
    except (binascii.Error, UnicodeEncodeError):
        return f"<problem-decoding> ({value})", None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return f"<problem-decoding> ({value})", escape_bytes(decoded)
    return escape_bytes(user), escape_bytes(password)


def _split_head(block: bytes) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    lines = block.split(b"\n")
    first = lines[0].rstrip(b"\r")
    headers: list[tuple[str, str]] = []
    for raw in lines[1:]:
        line = raw.rstrip(b"\r")
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and headers:  # obsolete line folding: continue the value
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {_text(line.strip())}")
            continue
        colon = line.find(b":")
        if colon <= 0:
            continue  # Zeek raises a weird and skips such lines too
        headers.append((_text(line[:colon].strip()).upper(), _text(line[colon + 1 :].strip())))
    return first, tuple(headers)


def _text(raw: bytes) -> str:
    if raw.isascii():
        text = raw.decode("ascii")
        if text.isprintable():
            return text
    return escape_bytes(raw)


__all__ = [
    "METHODS",
    "HttpHead",
    "basic_credentials",
    "parse_request_head",
    "parse_response_head",
    "starts_like_request",
]
