"""The agent's packet pipeline: raw frames -> decoders -> flow table -> records.

Bad input never escapes as an exception: a frame that does not decode becomes a Zeek-style
``weird`` record (sampled like Zeek's, so a flood of junk cannot flood the output) and a counter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, ParamSpec

from a2z.agent.capture.packet import RawPacket
from a2z.agent.capture.pcap_records import RecordSink
from a2z.agent.decode.errors import DecodeError, Malformed, Truncated
from a2z.agent.decode.icmp import decode_icmp, decode_icmp6, icmp_counterpart
from a2z.agent.decode.ipv4 import IPv4Header, decode_ipv4
from a2z.agent.decode.ipv6 import IPv6Header, decode_ipv6
from a2z.agent.decode.link import (
    ETH_ARP,
    ETH_IPV4,
    ETH_IPV6,
    LINKTYPE_ETHERNET,
    decode_arp,
    decode_link,
)
from a2z.agent.decode.reassembly import DefragConfig, Reassembler
from a2z.agent.decode.tcp import ACK, RST, SYN, TCPHeader, decode_tcp
from a2z.agent.decode.udp import decode_udp
from a2z.agent.flows.table import (
    PROTO_ICMP,
    PROTO_ICMP6,
    PROTO_TCP,
    PROTO_UDP,
    Flow,
    FlowConfig,
    FlowTable,
)
from a2z.agent.flows.to_record import flow_to_conn, format_addr
from a2z.agent.protocols.analyzer import FlowIdent, ProtocolConfig
from a2z.agent.protocols.errors import MalformedMessage
from a2z.agent.protocols.session import AppSession
from a2z.agent.protocols.stream import seq_diff
from a2z.records import Record, Weird

_P = ParamSpec("_P")

WEIRD_SAMPLE_THRESHOLD: Final = (
    1000  # Zeek's weird_sampling_threshold: every instance up to here...
)
WEIRD_SAMPLE_RATE: Final = 1000  # ...then one in this many (weird_sampling_rate); all are counted


@dataclass(slots=True)
class PipelineStats:
    """Running counters of one pipeline; read them at any time."""

    packets: int = 0  # frames fed
    bytes: int = 0  # wire bytes of the frames fed
    records: dict[str, int] = field(default_factory=dict)  # records emitted by _path
    weirds: dict[str, int] = field(default_factory=dict)  # weird conditions by name (all seen)
    ignored: dict[str, int] = field(default_factory=dict)  # frames we skip by kind (arp, ...)
    evictions: int = 0  # flows emitted early because the flow table was full


class Pipeline(RecordSink):
    """Decode frames and track flows; ``feed`` and ``flush`` return the records that are done.

    A replay hands it the records of a capture window where they lie instead (it is the
    reader's ``RecordSink``: ``packet``, then ``take_records``), same results.
    """

    def __init__(
        self,
        config: FlowConfig | None = None,
        *,
        weird_sample_threshold: int = WEIRD_SAMPLE_THRESHOLD,
        weird_sample_rate: int = WEIRD_SAMPLE_RATE,
        defrag: DefragConfig | None = None,
        protocols: ProtocolConfig | None = None,
        fast_path: bool = True,
    ) -> None:
        self.table = FlowTable(config)
        # Ethernet/IPv4/TCP|UDP frames are decoded inline (_fast_ipv4); False sends every frame
        # through the general decoders, which the differential tests compare it against.
        self.fast_path = fast_path
        self.protocols = protocols or ProtocolConfig()  # DNS/HTTP/TLS analyzer settings
        self.defrag = Reassembler(defrag)  # IP fragments wait here; its .stats count them
        self.stats = PipelineStats()
        self._weird_threshold = weird_sample_threshold
        self._weird_rate = max(weird_sample_rate, 1)
        self._out: list[Record] = []

    def feed(self, pkt: RawPacket) -> list[Record]:
        """Process one frame; return the records it completed (often none)."""
        stats = self.stats
        stats.packets += 1
        stats.bytes += pkt.wirelen
        self._process(pkt)
        if self.table.has_ended():
            self._collect()
        elif not self._out:
            return []  # the common case: nothing finished with this packet
        out, self._out = self._out, []
        return out

    def feed_batch(self, packets: list[RawPacket]) -> list[Record]:
        """``feed`` for a list of frames (a capture reader's window): their records, in order.

        One call per batch from the interpreted replay loop instead of one per packet.
        """
        out: list[Record] = []
        for pkt in packets:
            records = self.feed(pkt)
            if records:
                out.extend(records)
        return out

    def packet(
        self, chunk: bytes, start: int, end: int, ts: float, linktype: int, wirelen: int
    ) -> None:
        """``feed`` for the frame ``chunk[start:end]`` of a capture window, its records kept
        for ``take_records``. Frames the inline fast path takes cost no ``RawPacket`` (a tuple,
        a copy of the frame and a float); the others get one and go the general way."""
        stats = self.stats
        stats.packets += 1
        stats.bytes += wirelen
        table = self.table
        table.expire(ts)
        if not (
            linktype == LINKTYPE_ETHERNET
            and self.fast_path
            and self._fast_ipv4_at(chunk, start, end - start, wirelen, ts)
        ):
            self._decode(tuple.__new__(RawPacket, (ts, linktype, chunk[start:end], wirelen)))
        if table.has_ended():
            self._collect()

    def take_records(self) -> list[Record]:
        """The records completed since the last call (frames given to ``packet``)."""
        out, self._out = self._out, []
        return out

    def advance(self, now: float) -> list[Record]:
        """Let time pass without a packet (live capture): return the flows that timed out."""
        self.table.expire(now)
        self.defrag.expire(now)
        self._collect()
        out, self._out = self._out, []
        return out

    def flush(self) -> list[Record]:
        """End every open flow (end of input) and return their records."""
        self.defrag.clear()  # datagrams still missing pieces are counted, not guessed at
        for flow in self.table.flush():
            self._end_flow(flow)
        self.stats.evictions = self.table.evictions
        out, self._out = self._out, []
        return out

    # -- stages ---------------------------------------------------------------------------------

    def _process(self, pkt: RawPacket) -> None:
        self.table.expire(pkt.ts)
        if pkt.linktype == LINKTYPE_ETHERNET and self.fast_path and self._fast_ipv4(pkt):
            return
        self._decode(pkt)

    def _decode(self, pkt: RawPacket) -> None:
        """The general path: every link type, IP version, option and fragment, with weirds."""
        ts = pkt.ts
        table = self.table
        frame_buf = memoryview(pkt.data)
        try:
            frame = decode_link(pkt.linktype, frame_buf)
        except DecodeError as exc:
            self._weird(ts, exc)
            return
        net = frame_buf[frame.offset :]
        ethertype = frame.ethertype
        if ethertype == ETH_IPV4:
            try:
                ip4 = decode_ipv4(net)
            except DecodeError as exc:
                self._weird(ts, exc)
                return
            v6 = False
            src, dst, proto, header_len = ip4.src, ip4.dst, ip4.proto, ip4.header_len
            total_len = ip4.total_len
            if not total_len:
                # Segmentation offload leaves the length zero: like Zeek, note it and go on.
                self._weird(ts, Malformed("IP", "ip_hdr_len_zero"), ip4.src, ip4.dst)
                total_len = len(net)
            fragment = ip4.more_fragments or ip4.frag_offset
            hdr: IPv4Header | IPv6Header = ip4
        elif ethertype == ETH_IPV6:
            try:
                ip6 = decode_ipv6(net)
            except DecodeError as exc:
                self._weird(ts, exc)
                return
            v6 = True
            src, dst, proto, header_len = ip6.src, ip6.dst, ip6.proto, ip6.header_len
            total_len = ip6.total_len if ip6.payload_len else len(net)  # jumbogram or TSO
            fragment = ip6.more_fragments or ip6.frag_offset
            hdr = ip6
        else:
            self._ignore_non_ip(ethertype, net)
            return

        # The IP length may exceed what was captured (snaplen) but never what was on the wire.
        wire_avail = max(pkt.wirelen, len(pkt.data)) - frame.offset
        if total_len > wire_avail:
            self._weird(
                ts, Truncated("IP", "truncated_ip_packet", f"{total_len} > {wire_avail}"), src, dst
            )
            return
        if header_len > total_len:
            self._weird(
                ts, Malformed("IP", "ip_bad_header_len", f"{header_len} > {total_len}"), src, dst
            )
            return
        if fragment:
            whole = self._defragment(ts, hdr, net, src, dst)
            if whole is None:
                return  # more pieces to come (or a bad piece, reported)
            net, header_len, total_len, proto = whole
        seg = net[header_len : min(total_len, len(net))]
        payload_len = total_len - header_len  # from the length fields, as Zeek counts

        try:
            if proto == PROTO_TCP:
                tcp = decode_tcp(seg)
                data_len = payload_len - tcp.header_len
                flow = table.add_tcp(ts, src, dst, tcp, data_len, total_len)
                if not flow.app_done:
                    self._app_tcp_packet(ts, flow, src, tcp, seg, data_len)
            elif proto == PROTO_UDP:
                udp = decode_udp(seg)
                flow = table.add_udp(
                    ts, src, udp.sport, dst, udp.dport, max(udp.length - 8, 0), total_len
                )
                if udp.length > 8 and not flow.app_done:
                    self._app_udp(ts, flow, src, udp.sport, seg[8 : udp.length])
            elif (proto == PROTO_ICMP and not v6) or (proto == PROTO_ICMP6 and v6):
                icmp = decode_icmp6(seg) if v6 else decode_icmp(seg)
                counterpart, one_way = icmp_counterpart(icmp)
                table.add_icmp(
                    ts, proto, src, dst, icmp.type, counterpart, one_way, payload_len - 8, total_len
                )
            else:
                self._count(self.stats.ignored, f"ip_proto_{proto}")
        except DecodeError as exc:
            self._weird(ts, exc, src, dst)

    def _fast_ipv4(self, pkt: RawPacket) -> bool:
        """The common case, decoded inline: Ethernet II, IPv4 without options or fragments, TCP
        or UDP, all lengths sane. Returns False, having changed nothing, for anything else (a
        VLAN tag, a fragment, ICMP, a bad length...): ``_process`` then decodes the frame with
        the general decoders, which also report what is wrong with it.

        Same results as the general path (tests/agent/test_fast_path.py feeds both the same
        frames), without a memoryview, LinkFrame, IPv4Header or TCPHeader per packet: once a
        flow's analyzers are done, a segment costs a few byte reads and the flow-table update.
        """
        data = pkt.data
        return self._fast_ipv4_at(data, 0, len(data), pkt.wirelen, pkt.ts)

    def _fast_ipv4_at(self, data: bytes, o: int, size: int, wirelen: int, ts: float) -> bool:
        """``_fast_ipv4`` for the frame ``data[o:o + size]`` (a whole frame, or a record of a
        capture window: ``packet``)."""
        # Ethernet type 0x0800, then version 4 with a 20-byte header; no MF flag, no offset.
        if (
            size < 34
            or data[o + 12] != 0x08
            or data[o + 13] != 0x00
            or data[o + 14] != 0x45
            or data[o + 20] & 0x3F
            or data[o + 21]
        ):
            return False
        total_len = data[o + 16] << 8 | data[o + 17]
        if total_len < 20 or total_len > max(wirelen, size) - 14:
            return False  # zero (TSO), shorter than its header, or longer than the frame
        proto = data[o + 23]
        seg_end = o + 14 + min(total_len, size - 14)  # the segment: data[o + 34:seg_end]
        t = o + 34  # the transport header
        if proto == PROTO_TCP:
            if seg_end - t < 20:
                return False
            header_len = (data[t + 12] >> 4) * 4
            if header_len < 20 or header_len > seg_end - t:
                return False
            src = data[o + 26 : o + 30]
            sport = data[t] << 8 | data[t + 1]
            seq = data[t + 4] << 24 | data[t + 5] << 16 | data[t + 6] << 8 | data[t + 7]
            ack = data[t + 8] << 24 | data[t + 9] << 16 | data[t + 10] << 8 | data[t + 11]
            flags = data[t + 13] | (data[t + 12] & 1) << 8
            data_len = total_len - 20 - header_len
            flow = self.table.add_segment(
                ts, src, data[o + 30 : o + 34], sport, data[t + 2] << 8 | data[t + 3], seq, ack,
                flags, data[t + 14] << 8 | data[t + 15], data_len, total_len,
            )  # fmt: skip
            # As _app_tcp_packet decides, without building its arguments when it would not use
            # them: payload, or an ACK for analyzers that exist.
            if not flow.app_done and (
                (data_len > 0 and not flags & RST) or (flow.app is not None and flags & ACK)
            ):
                seg = memoryview(data)[t:seg_end]
                self._app_tcp_packet(ts, flow, src, decode_tcp(seg), seg, data_len)
            return True
        if proto == PROTO_UDP:
            if seg_end - t < 8:
                return False
            src = data[o + 26 : o + 30]
            sport = data[t] << 8 | data[t + 1]
            length = data[t + 4] << 8 | data[t + 5]
            flow = self.table.add_udp(
                ts, src, sport, data[o + 30 : o + 34], data[t + 2] << 8 | data[t + 3],
                max(length - 8, 0), total_len,
            )  # fmt: skip
            if length > 8 and not flow.app_done:
                self._app_udp(
                    ts, flow, src, sport, memoryview(data)[t + 8 : min(t + length, seg_end)]
                )
            return True
        return False

    def _defragment(
        self, ts: float, hdr: IPv4Header | IPv6Header, net: memoryview, src: bytes, dst: bytes
    ) -> tuple[memoryview, int, int, int] | None:
        """Hand a fragment to the reassembler; once whole: (packet, header_len, total_len, proto).

        Rare on real networks, so the cost (a copy per datagram) stays off the common path.
        """
        if isinstance(hdr, IPv4Header):
            packet, weirds = self.defrag.add_ipv4(ts, hdr, net)
        else:
            packet, weirds = self.defrag.add_ipv6(ts, hdr, net)
        for exc in weirds:
            self._weird(ts, exc, src, dst)
        if packet is None:
            return None
        buf = memoryview(packet)
        try:
            whole = decode_ipv4(buf) if isinstance(hdr, IPv4Header) else decode_ipv6(buf)
        except DecodeError as exc:  # e.g. extension headers cut by a bad fragment boundary
            self._weird(ts, exc, src, dst)
            return None
        if whole.more_fragments or whole.frag_offset:
            self._weird(ts, Malformed("IP", "fragment_nested"), src, dst)
            return None
        return buf, whole.header_len, whole.total_len, whole.proto

    def _ignore_non_ip(self, ethertype: int, net: memoryview) -> None:
        if ethertype == ETH_ARP:
            try:
                decode_arp(net)
            except DecodeError:
                self._count(self.stats.ignored, "arp_malformed")
                return
            self._count(self.stats.ignored, "arp")
        elif ethertype == 0:
            self._count(self.stats.ignored, "non_ip")  # 802.3/LLC, unknown loopback family...
        else:
            self._count(self.stats.ignored, f"ethertype_0x{ethertype:04x}")

    def _collect(self) -> None:
        for flow in self.table.pop_ended():
            self._end_flow(flow)
        self.stats.evictions = self.table.evictions

    def _end_flow(self, flow: Flow) -> None:
        app = flow.app
        if app is not None:  # the analyzers log what is pending before the conn record
            self._guarded(flow, app, flow.last, app.finish, flow.last)
        self._emit(flow_to_conn(flow))

    # -- application layer (protocols/): payload -> analyzers -> dns/http/ssl records ------------

    def _app_tcp_packet(
        self, ts: float, flow: Flow, src: bytes, tcp: TCPHeader, seg: memoryview, data_len: int
    ) -> None:
        """A segment of a flow whose analyzers still look at it: payload, or an ACK they await."""
        if data_len > 0 and not tcp.flags & RST:
            self._app_tcp(ts, flow, src, tcp, seg, data_len)
        elif flow.app is not None and tcp.flags & ACK:
            app = flow.app
            is_orig = src == flow.orig_h and tcp.sport == flow.orig_p
            self._guarded(flow, app, ts, app.tcp_ack, ts, is_orig, tcp.ack)

    def _app_tcp(
        self, ts: float, flow: Flow, src: bytes, tcp: TCPHeader, seg: memoryview, data_len: int
    ) -> None:
        app = flow.app
        if app is None:
            app = flow.app = AppSession(_ident(flow), "tcp", self.protocols)
        is_orig = src == flow.orig_h and tcp.sport == flow.orig_p
        seq = (tcp.seq + 1) & 0xFFFFFFFF if tcp.flags & SYN else tcp.seq
        # Where this direction's stream starts: after the SYN, or at the first packet seen.
        first = seq
        if flow.proto == PROTO_TCP:
            start = (flow.stream_start(is_orig) + 1) & 0xFFFFFFFF
            if 0 <= seq_diff(seq, start) <= self.protocols.max_reorder_bytes:
                first = start
        data = bytes(seg[tcp.header_len : tcp.header_len + data_len])
        ack = tcp.ack if tcp.flags & ACK else None
        self._guarded(flow, app, ts, app.tcp_segment, ts, is_orig, seq, data, data_len, first, ack)

    def _app_udp(self, ts: float, flow: Flow, src: bytes, sport: int, data: memoryview) -> None:
        app = flow.app
        if app is None:
            app = flow.app = AppSession(_ident(flow), "udp", self.protocols)
        is_orig = src == flow.orig_h and sport == flow.orig_p
        self._guarded(flow, app, ts, app.udp_datagram, ts, is_orig, bytes(data))

    def _guarded(
        self,
        flow: Flow,
        app: AppSession,
        ts: float,
        step: Callable[_P, None],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> None:
        """Run one analyzer step, then move its records, weirds and service to the output.

        The analyzers raise nothing by design (property tests hold them to it); should one
        still fail, the flow's payload is dropped with a weird, never the stream.
        """
        try:
            step(*args, **kwargs)
        except Exception as exc:  # the boundary of third-party-shaped input: contain it
            app.done = True
            app.weirds.append(
                MalformedMessage("PROTOCOL", "protocol_analyzer_error", type(exc).__name__)
            )
        if app.records:
            for record in app.records:
                self._emit(record)
            app.records.clear()
        if app.weirds:
            for error in app.weirds:
                self._flow_weird(ts, app.ident, error)
            app.weirds.clear()
        if (app.services and flow.service is None) or len(app.services) > 1:
            flow.service = app.service
        if app.done:
            flow.app = None
            flow.app_done = True

    def _flow_weird(self, ts: float, ident: FlowIdent, exc: DecodeError) -> None:
        n = self._count(self.stats.weirds, exc.name)
        if n > self._weird_threshold and n % self._weird_rate:
            return
        self._emit(
            Weird(
                ts=ts,
                uid=ident.uid,
                orig_h=ident.orig_h,
                orig_p=ident.orig_p,
                resp_h=ident.resp_h,
                resp_p=ident.resp_p,
                name=exc.name,
                addl=exc.detail or None,
                source=exc.source,
            )
        )

    def _emit(self, record: Record) -> None:
        self._out.append(record)
        paths = self.stats.records
        tag = str(record.__struct_config__.tag)  # the record's _path, e.g. "conn"
        paths[tag] = paths.get(tag, 0) + 1

    def _weird(
        self, ts: float, exc: DecodeError, src: bytes | None = None, dst: bytes | None = None
    ) -> None:
        n = self._count(self.stats.weirds, exc.name)
        if n > self._weird_threshold and n % self._weird_rate:
            return
        self._emit(
            Weird(
                ts=ts,
                uid="",
                orig_h=format_addr(src) if src else "",
                orig_p=0,
                resp_h=format_addr(dst) if dst else "",
                resp_p=0,
                name=exc.name,
                addl=exc.detail or None,
                source=exc.source,
            )
        )

    @staticmethod
    def _count(counter: dict[str, int], name: str) -> int:
        n = counter.get(name, 0) + 1
        counter[name] = n
        return n


def _ident(flow: Flow) -> FlowIdent:
    return FlowIdent(
        flow.uid, format_addr(flow.orig_h), flow.orig_p, format_addr(flow.resp_h), flow.resp_p
    )


__all__ = ["Pipeline", "PipelineStats"]
