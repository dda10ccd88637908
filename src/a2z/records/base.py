"""Fields every record carries: Zeek's ``ts``, ``uid`` and ``id.*`` connection tuple."""

from __future__ import annotations

import msgspec


class RecordBase(
    msgspec.Struct,
    kw_only=True,
    frozen=True,
    tag_field="_path",
):
    """Common header of every log record; subclasses set ``tag`` to their Zeek log name."""

    ts: float  # epoch seconds of the first packet the record describes
    uid: str  # the flow's id, shared by every record about the same connection
    orig_h: str = msgspec.field(name="id.orig_h")  # originator address
    orig_p: int = msgspec.field(name="id.orig_p")  # originator port (ICMP: type)
    resp_h: str = msgspec.field(name="id.resp_h")  # responder address
    resp_p: int = msgspec.field(name="id.resp_p")  # responder port (ICMP: code)
