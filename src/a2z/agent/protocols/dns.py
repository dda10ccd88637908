"""DNS over UDP and TCP: parsed messages paired into Zeek dns records.

The wire format (parsing, detection, rendering of answers) is in
:mod:`a2z.agent.protocols.dns_message`, compiled; the :class:`DnsAnalyzer` here holds one
flow's pending queries and replies, frames DNS over TCP and writes the records.
"""

from __future__ import annotations

from typing import Literal

from a2z.agent.protocols.analyzer import Analyzer, FlowIdent, ProtocolConfig
from a2z.agent.protocols.dns_message import (
    QCLASS_NAMES,
    QTYPE_NAMES,
    RCODE_NAMES,
    STANDARD_PORTS,
    DnsAnswer,
    DnsMessage,
    DnsQuestion,
    escape_bytes,
    looks_like_dns,
    parse_dns,
    qclass_name,
    qtype_name,
    rcode_name,
    read_name,
    render_name,
)
from a2z.agent.protocols.errors import ProtocolError
from a2z.records import Dns, Record


class _Transaction:
    """One query/reply pair being assembled (Zeek's DNS::Info before it is logged)."""

    __slots__ = (
        "aa",
        "answers",
        "qclass",
        "qtype",
        "query",
        "ra",
        "rcode",
        "rd",
        "rejected",
        "rtt",
        "saw_query",
        "tc",
        "trans_id",
        "ts",
        "ttls",
        "z",
    )

    def __init__(self, ts: float, trans_id: int) -> None:
        self.ts = ts
        self.trans_id = trans_id
        self.query: str | None = None
        self.qclass: int | None = None
        self.qtype: int | None = None
        self.rcode: int | None = None
        self.aa = self.tc = self.rd = self.ra = self.rejected = self.saw_query = False
        self.z = 0
        self.rtt: float | None = None
        self.answers: list[str] | None = None
        self.ttls: list[float] | None = None


_Key = tuple[int, str | None]  # (transaction id, lower-case first question name)


class DnsAnalyzer(Analyzer):
    """One flow's DNS: pairs queries with replies by transaction id and query name."""

    __slots__ = ("_buffers", "_lost", "_queries", "_replies", "proto")

    service = "dns"

    def __init__(
        self,
        ident: FlowIdent,
        config: ProtocolConfig,
        proto: Literal["udp", "tcp"],
        records: list[Record] | None = None,
        weirds: list[ProtocolError] | None = None,
    ) -> None:
        super().__init__(ident, config, records, weirds)
        self.proto: Literal["udp", "tcp"] = proto
        # Pending transactions by key, oldest first. Plain lists: the queues hold one entry
        # or two, and a flow table full of DNS flows keeps one of these per flow.
        self._queries: dict[_Key, list[_Transaction]] = {}
        self._replies: dict[_Key, list[_Transaction]] = {}
        # TCP framing per direction (index: is_orig), made on the first TCP bytes.
        self._buffers: tuple[bytearray, bytearray] | None = None
        self._lost = 0  # bit (1 << is_orig) set: that TCP direction lost its framing in a gap

    # -- input ----------------------------------------------------------------------------------

    def datagram(self, ts: float, is_orig: bool, data: bytes) -> None:
        """One UDP payload: one DNS message."""
        self._message(ts, data)

    def data(self, ts: float, is_orig: bool, chunk: bytes) -> None:
        """In-order TCP bytes: messages framed by a 2-byte length."""
        if self._lost >> is_orig & 1:
            return
        if self._buffers is None:
            self._buffers = (bytearray(), bytearray())
        buf = self._buffers[is_orig]
        buf += chunk
        while len(buf) >= 2:
            size = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + size:
                break
            message = bytes(buf[2 : 2 + size])
            del buf[: 2 + size]
            self._message(ts, message)

    def gap(self, ts: float, is_orig: bool, size: int) -> None:
        """Bytes missing from a TCP direction: its framing cannot be trusted any more."""
        self.weird("content_gap", f"{size} bytes")
        self._lost |= 1 << is_orig
        if self._buffers is not None:
            self._buffers[is_orig].clear()

    def finish(self, ts: float) -> None:
        """Flow end: log every query and reply still waiting for its partner (as Zeek does)."""
        if self._buffers is not None and any(self._buffers):
            self.weird("DNS_truncated_tcp_message", "flow ended inside a message")
        for pending in (self._queries, self._replies):
            for queue in pending.values():
                for tx in queue:
                    self._log(tx)
            pending.clear()
        self.done = True

    # -- pairing --------------------------------------------------------------------------------

    def _message(self, ts: float, data: bytes) -> None:
        try:
            msg = parse_dns(data, partial=True)
        except ProtocolError as exc:
            self.report(exc)
            if not self.confirmed:
                self.done = True  # the first message did not parse: this is not DNS
            return
        if msg.error is not None:
            self.report(msg.error)
            if not self.confirmed and not msg.questions and msg.qdcount:
                self.done = True
                return
        self.confirmed = True
        if msg.opcode != 0:
            return  # like Zeek, only standard queries are logged
        first = msg.questions[0] if msg.questions else None
        key: _Key = (msg.trans_id, first.name if first else None)
        if msg.qr:
            tx = self._pop(self._queries, key, allow_any_name=first is None)
            if tx is None:
                tx = _Transaction(ts, msg.trans_id)
                self._enqueue(self._replies, key, tx)
                self._fill_reply(tx, msg, ts)
                if first is not None:  # not Zeek: it leaves qtype unset without the query
                    tx.query, tx.qtype, tx.qclass = first.name, first.qtype, first.qclass
                return
            self._fill_reply(tx, msg, ts)
        else:
            tx = self._pop(self._replies, key, allow_any_name=False)
            if tx is None:
                tx = _Transaction(ts, msg.trans_id)
                self._fill_query(tx, msg)
                self._enqueue(self._queries, key, tx)
                return
            self._fill_query(tx, msg)
        self._log(tx)

    def _pop(
        self, pending: dict[_Key, list[_Transaction]], key: _Key, *, allow_any_name: bool
    ) -> _Transaction | None:
        queue = pending.get(key)
        if queue is None and allow_any_name:
            for other, candidates in pending.items():
                if other[0] == key[0]:
                    key, queue = other, candidates
                    break
        if queue is None:
            return None
        tx = queue.pop(0)
        if not queue:
            del pending[key]
        return tx

    def _enqueue(
        self, pending: dict[_Key, list[_Transaction]], key: _Key, tx: _Transaction
    ) -> None:
        limit = self.config.max_pending_dns
        queue = pending.get(key)
        if queue is None:
            if len(pending) > limit:  # Zeek: give up on ever matching these
                for stale in pending.values():
                    for old in stale:
                        self._log(old)
                pending.clear()
            queue = pending[key] = []
        elif len(queue) > limit:
            for old in queue:
                self._log(old)
            queue.clear()
        queue.append(tx)

    @staticmethod
    def _fill_query(tx: _Transaction, msg: DnsMessage) -> None:
        tx.saw_query = True
        tx.rd = msg.rd
        tx.tc = msg.tc
        tx.z = msg.z
        if msg.questions:
            first = msg.questions[0]
            tx.query, tx.qtype, tx.qclass = first.name, first.qtype, first.qclass

    @staticmethod
    def _fill_reply(tx: _Transaction, msg: DnsMessage, ts: float) -> None:
        tx.rcode = msg.rcode
        if (msg.rcode and not msg.qdcount) or not (msg.ancount or msg.nscount or msg.arcount):
            tx.rejected = True  # Zeek's dns_rejected: a reply carrying no records at all
        if msg.answers:
            tx.aa = msg.aa
            tx.ra = msg.ra
            if tx.query is None:
                tx.query = msg.answers[0].name
        rtt = ts - tx.ts
        if rtt > 0 and tx.rtt is None:
            tx.rtt = rtt
        for answer in msg.answers:
            if answer.text:
                if tx.answers is None or tx.ttls is None:
                    tx.answers, tx.ttls = [], []
                tx.answers.append(answer.text)
                tx.ttls.append(float(answer.ttl))

    def _log(self, tx: _Transaction) -> None:
        ident = self.ident
        self.records.append(
            Dns(
                ts=tx.ts,
                uid=ident.uid,
                orig_h=ident.orig_h,
                orig_p=ident.orig_p,
                resp_h=ident.resp_h,
                resp_p=ident.resp_p,
                proto=self.proto,
                trans_id=tx.trans_id,
                rtt=tx.rtt,
                query=tx.query,
                qclass=tx.qclass,
                qclass_name=qclass_name(tx.qclass) if tx.qclass is not None else None,
                qtype=tx.qtype,
                qtype_name=qtype_name(tx.qtype) if tx.qtype is not None else None,
                rcode=tx.rcode,
                rcode_name=rcode_name(tx.rcode) if tx.rcode is not None else None,
                AA=tx.aa,
                TC=tx.tc,
                RD=tx.rd,
                RA=tx.ra,
                Z=tx.z,
                answers=tx.answers,
                TTLs=tx.ttls,
                rejected=tx.rejected,
            )
        )


__all__ = [
    "QCLASS_NAMES",
    "QTYPE_NAMES",
    "RCODE_NAMES",
    "STANDARD_PORTS",
    "DnsAnalyzer",
    "DnsAnswer",
    "DnsMessage",
    "DnsQuestion",
    "escape_bytes",
    "looks_like_dns",
    "parse_dns",
    "qclass_name",
    "qtype_name",
    "rcode_name",
    "read_name",
    "render_name",
]
