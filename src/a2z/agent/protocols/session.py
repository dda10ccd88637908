"""One flow's application layer: TCP reassembly, service detection by content, the analyzer.

The pipeline hands every payload-carrying segment or datagram of a flow to its
:class:`AppSession`; the first payload bytes decide the protocol (never the port alone), and
from then on the chosen analyzer gets the in-order bytes. Once ``done`` is set the pipeline
stops inspecting the flow's payload altogether (the cheap path for the rest of the flow).
"""

from __future__ import annotations

from typing import Literal

from a2z.agent.protocols.analyzer import Analyzer, FlowIdent, ProtocolConfig
from a2z.agent.protocols.dns import STANDARD_PORTS, DnsAnalyzer, looks_like_dns
from a2z.agent.protocols.errors import ProtocolError
from a2z.agent.protocols.ftp import FtpAnalyzer, starts_like_client, starts_like_greeting
from a2z.agent.protocols.http import HttpAnalyzer, starts_like_request
from a2z.agent.protocols.stream import Chunk, StreamReassembler
from a2z.agent.protocols.tls import TlsAnalyzer, starts_like_tls
from a2z.records import Record

_StreamAnalyzer = DnsAnalyzer | HttpAnalyzer | TlsAnalyzer | FtpAnalyzer


def detect_tcp(
    data: bytes, is_orig: bool, ports: tuple[int, int], other: bytes = b""
) -> str | bool | None:
    """Which analyzer the first bytes of a TCP direction call for.

    Returns ``"http"``, ``"ssl"``, ``"dns"`` or ``"ftp"``; ``None`` when more bytes are needed
    to tell; ``False`` when the content is none of them. ``other`` is what the other direction
    has sent so far: FTP is told by the server's greeting and the client's first command.
    """
    undecided = False
    if not is_orig and starts_like_greeting(data):
        return None  # FTP or SMTP: the client's first command tells
    if is_orig and starts_like_greeting(other):
        client = starts_like_client(data)
        if client:
            return "ftp"
        undecided = client is None
    if is_orig:
        request = starts_like_request(data)
        if request:
            return "http"
        undecided = undecided or request is None
    elif data.startswith(b"HTTP/"):
        return "http"
    elif len(data) < 5 and b"HTTP/".startswith(data):
        undecided = True
    tls = starts_like_tls(data, is_orig)
    if tls:
        return "ssl"
    undecided = undecided or tls is None
    # DNS over TCP: a 2-byte length, then a DNS message.
    if len(data) < 2:
        return None
    size = (data[0] << 8) | data[1]
    if size >= 12:
        message = data[2 : 2 + size]
        standard = ports[0] in STANDARD_PORTS or ports[1] in STANDARD_PORTS
        if len(message) == size:
            if looks_like_dns(message, standard_port=standard):
                return "dns"
        elif len(message) < 12:
            return None
        elif looks_like_dns_header(message):
            # On DNS's ports the header is enough; elsewhere wait for the whole message.
            return "dns" if standard else None
    return None if undecided else False


def looks_like_dns_header(header: bytes) -> bool:
    """A plausible DNS header at the start of a TCP message still being received."""
    if len(header) < 12:
        return False
    opcode = (header[2] >> 3) & 0xF
    qdcount = (header[4] << 8) | header[5]
    return opcode <= 6 and qdcount <= 25


class AppSession:
    """Per-flow application state; ``records``/``weirds`` are drained by the pipeline."""

    __slots__ = (
        "_probes",
        "_streams",
        "analyzer",
        "config",
        "done",
        "ident",
        "ports",
        "proto",
        "records",
        "services",
        "weirds",
    )

    def __init__(
        self,
        ident: FlowIdent,
        proto: Literal["tcp", "udp"],
        config: ProtocolConfig,
    ) -> None:
        self.ident = ident
        self.proto: Literal["tcp", "udp"] = proto
        self.config = config
        self.ports = (ident.orig_p, ident.resp_p)
        self.analyzer: _StreamAnalyzer | None = None
        self.records: list[Record] = []
        self.weirds: list[ProtocolError] = []
        self.services: list[str] = []  # confirmed services, in order (Zeek's conn service)
        self.done = False  # nothing more to learn from this flow's payload
        # Made on first use (a UDP flow never needs them): streams and undecided first
        # bytes per direction, indexed by is_orig.
        self._streams: list[StreamReassembler | None] | None = None
        self._probes: tuple[bytearray, bytearray] | None = None

    @property
    def service(self) -> str | None:
        """The conn record's ``service``: confirmed protocols, comma-separated."""
        return ",".join(self.services) if self.services else None

    # -- input ----------------------------------------------------------------------------------

    def udp_datagram(self, ts: float, is_orig: bool, data: bytes) -> None:
        """One UDP payload (only DNS is analysed over UDP)."""
        analyzer = self.analyzer
        if analyzer is None:
            switch = self.config.analyzers
            if "dns" not in switch.enabled:  # off: not even the content test runs
                switch.passed_over("dns")
                self.done = True
                return
            standard = self.ports[0] in STANDARD_PORTS or self.ports[1] in STANDARD_PORTS
            if not looks_like_dns(data, standard_port=standard):
                self.done = True
                return
            analyzer = self.analyzer = DnsAnalyzer(
                self.ident, self.config, "udp", self.records, self.weirds
            )
        elif self._switched_off(analyzer):
            return
        if isinstance(analyzer, DnsAnalyzer):
            analyzer.datagram(ts, is_orig, data)
        self._collect(analyzer)

    def tcp_ack(self, ts: float, is_orig: bool, ack: int) -> None:
        """An acknowledgement from one side: holes it covers in the other side's stream are lost."""
        stream = self._streams[not is_orig] if self._streams is not None else None
        if stream is None or not stream.pending:
            return
        for chunk in stream.acked(ack):
            self._deliver(ts, not is_orig, chunk)
            if self.done:
                return

    def tcp_segment(
        self,
        ts: float,
        is_orig: bool,
        seq: int,
        data: bytes,
        wire_len: int,
        first_seq: int,
        ack: int | None = None,
    ) -> None:
        """One TCP segment's payload; ``first_seq`` starts this direction's stream if new."""
        if ack is not None:
            self.tcp_ack(ts, is_orig, ack)
            if self.done:
                return
        streams = self._streams
        if streams is None:
            streams = self._streams = [None, None]
        stream = streams[is_orig]
        if stream is None:
            stream = StreamReassembler(first_seq, max_pending=self.config.max_reorder_bytes)
            streams[is_orig] = stream
        for chunk in stream.add(seq, data, wire_len):
            self._deliver(ts, is_orig, chunk)
            if self.done:
                return

    def finish(self, ts: float) -> None:
        """Flow end: release held segments, let the analyzer log what is pending."""
        for is_orig in (True, False):
            stream = self._streams[is_orig] if self._streams is not None else None
            if stream is not None and stream.pending and not self.done:
                for chunk in stream.flush():
                    self._deliver(ts, is_orig, chunk)
        analyzer = self.analyzer
        if analyzer is not None and not analyzer.done:
            analyzer.finish(ts)
            self._collect(analyzer)
        self.done = True

    # -- internals ------------------------------------------------------------------------------

    def _deliver(self, ts: float, is_orig: bool, chunk: Chunk) -> None:
        analyzer = self.analyzer
        if analyzer is None:
            if isinstance(chunk, int):
                self.done = True  # a hole before we could tell the protocol: give up
                return
            analyzer = self._detect(is_orig, chunk)
            if analyzer is None:
                return
            probes, self._probes = self._probes, None
            for side in (is_orig, not is_orig):
                if probes is not None and probes[side]:
                    analyzer.data(ts, side, bytes(probes[side]))
        elif self._switched_off(analyzer):
            return
        elif isinstance(chunk, int):
            analyzer.gap(ts, is_orig, chunk)
        else:
            analyzer.data(ts, is_orig, chunk)
        self._collect(analyzer)
        if isinstance(analyzer, HttpAnalyzer) and analyzer.tunnel:
            # CONNECT succeeded: the tunnelled bytes are a new protocol to detect (often TLS).
            analyzer.finish(ts)
            self._collect(analyzer)
            self.analyzer = None
            self.done = False

    def _detect(self, is_orig: bool, chunk: bytes) -> _StreamAnalyzer | None:
        if self._probes is None:
            self._probes = (bytearray(), bytearray())
        probe = self._probes[is_orig]
        probe += chunk
        verdict = detect_tcp(bytes(probe), is_orig, self.ports, bytes(self._probes[not is_orig]))
        if verdict is None and len(probe) < self.config.max_probe_bytes:
            return None
        if not verdict:
            self.done = True
            return None
        switch = self.config.analyzers
        if verdict not in switch.enabled:  # turned off (or shed): no parsing from here on
            switch.passed_over(str(verdict))
            self._probes = None
            self.done = True
            return None
        analyzer: _StreamAnalyzer
        if verdict == "http":
            analyzer = HttpAnalyzer(self.ident, self.config, self.records, self.weirds)
        elif verdict == "ssl":
            analyzer = TlsAnalyzer(self.ident, self.config, self.records, self.weirds)
        elif verdict == "ftp":
            analyzer = FtpAnalyzer(self.ident, self.config, self.records, self.weirds)
        else:
            analyzer = DnsAnalyzer(self.ident, self.config, "tcp", self.records, self.weirds)
        self.analyzer = analyzer
        return analyzer

    def _switched_off(self, analyzer: Analyzer) -> bool:
        """Drop a running analyzer whose protocol was turned off since the flow began."""
        switch = self.config.analyzers
        if analyzer.service in switch.enabled:
            return False
        switch.passed_over(analyzer.service)
        self.analyzer = None
        self._streams = None  # the reassembly buffers go too: that is what shedding frees
        self.done = True
        return True

    def _collect(self, analyzer: Analyzer) -> None:
        if analyzer.confirmed and (not self.services or analyzer.service not in self.services):
            self.services.append(analyzer.service)
        if analyzer.done:
            self.done = True


__all__ = ["AppSession", "detect_tcp", "looks_like_dns_header"]
