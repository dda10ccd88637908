"""The agent's packet pipeline: raw frames -> decoders -> flow table -> records.

Bad input never escapes as an exception: a frame that does not decode becomes a Zeek-style
``weird`` record (sampled like Zeek's, so a flood of junk cannot flood the output) and a counter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from a2z.agent.capture.packet import RawPacket
from a2z.agent.decode.errors import DecodeError, Malformed, Truncated
from a2z.agent.decode.icmp import decode_icmp, decode_icmp6, icmp_counterpart
from a2z.agent.decode.ipv4 import decode_ipv4
from a2z.agent.decode.ipv6 import decode_ipv6
from a2z.agent.decode.link import ETH_ARP, ETH_IPV4, ETH_IPV6, decode_arp, decode_link
from a2z.agent.decode.tcp import decode_tcp
from a2z.agent.decode.udp import decode_udp
from a2z.agent.flows.table import (
    PROTO_ICMP,
    PROTO_ICMP6,
    PROTO_TCP,
    PROTO_UDP,
    FlowConfig,
    FlowTable,
)
from a2z.agent.flows.to_record import flow_to_conn, format_addr
from a2z.records import Record, Weird

WEIRD_SAMPLE_THRESHOLD = 1000  # Zeek's weird_sampling_threshold: every instance up to here...
WEIRD_SAMPLE_RATE = 1000  # ...then one in this many (weird_sampling_rate); all are counted


@dataclass(slots=True)
class PipelineStats:
    """Running counters of one pipeline; read them at any time."""

    packets: int = 0  # frames fed
    bytes: int = 0  # wire bytes of the frames fed
    records: dict[str, int] = field(default_factory=dict)  # records emitted by _path
    weirds: dict[str, int] = field(default_factory=dict)  # weird conditions by name (all seen)
    ignored: dict[str, int] = field(default_factory=dict)  # frames we skip by kind (arp, ...)
    evictions: int = 0  # flows emitted early because the flow table was full


class Pipeline:
    """Decode frames and track flows; ``feed`` and ``flush`` return the records that are done."""

    def __init__(
        self,
        config: FlowConfig | None = None,
        *,
        weird_sample_threshold: int = WEIRD_SAMPLE_THRESHOLD,
        weird_sample_rate: int = WEIRD_SAMPLE_RATE,
    ) -> None:
        self.table = FlowTable(config)
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
        self._collect()
        out, self._out = self._out, []
        return out

    def flush(self) -> list[Record]:
        """End every open flow (end of input) and return their records."""
        for flow in self.table.flush():
            self._emit(flow_to_conn(flow))
        self.stats.evictions = self.table.evictions
        out, self._out = self._out, []
        return out

    # -- stages ---------------------------------------------------------------------------------

    def _process(self, pkt: RawPacket) -> None:
        ts = pkt.ts
        table = self.table
        table.expire(ts)
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
            frag_offset = ip4.frag_offset
        elif ethertype == ETH_IPV6:
            try:
                ip6 = decode_ipv6(net)
            except DecodeError as exc:
                self._weird(ts, exc)
                return
            v6 = True
            src, dst, proto, header_len = ip6.src, ip6.dst, ip6.proto, ip6.header_len
            total_len = ip6.total_len if ip6.payload_len else len(net)  # jumbogram or TSO
            frag_offset = ip6.frag_offset
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
        if frag_offset:
            self._weird(
                ts, DecodeError("IP", "fragment_not_reassembled", f"offset {frag_offset}"), src, dst
            )
            return
        seg = net[header_len : min(total_len, len(net))]
        payload_len = total_len - header_len  # from the length fields, as Zeek counts

        try:
            if proto == PROTO_TCP:
                tcp = decode_tcp(seg)
                table.add_tcp(ts, src, dst, tcp, payload_len - tcp.header_len, total_len)
            elif proto == PROTO_UDP:
                udp = decode_udp(seg)
                table.add_udp(ts, src, udp.sport, dst, udp.dport, max(udp.length - 8, 0), total_len)
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
            self._emit(flow_to_conn(flow))
        self.stats.evictions = self.table.evictions

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


__all__ = ["Pipeline", "PipelineStats"]
