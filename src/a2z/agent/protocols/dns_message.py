"""DNS messages on the wire: :func:`parse_dns` (bytes in, :class:`DnsMessage` out, typed errors),
content detection, name decompression and the rendering of answers as Zeek logs them.

Compiled by mypyc (ADR 0006, update 3): parsing was most of the DNS analyzer's cost on the
attack mix. Hand-written with ``struct`` rather than a library (dnspython) for the same reason.
:mod:`a2z.agent.protocols.dns` pairs the parsed messages into records.
"""

from __future__ import annotations

import socket
import struct
from typing import Final, NamedTuple

from a2z.agent.protocols.errors import MalformedMessage, NeedMoreData, ProtocolError

STANDARD_PORTS = frozenset({53, 137, 5353, 5355})
"""Ports where Zeek expects DNS (DNS, NetBIOS-NS, mDNS, LLMNR): any DNS-shaped payload counts."""

MAX_QUESTIONS: Final = 25  # Zeek's dns_max_queries: more means this is not DNS
MAX_NAME: Final = 255  # octets of a domain name on the wire
MAX_POINTERS: Final = 64  # compression jumps followed in one name (loops end here at the latest)

QTYPE_NAMES: dict[int, str] = {
    1: "A", 2: "NS", 3: "MD", 4: "MF", 5: "CNAME", 6: "SOA", 7: "MB", 8: "MG", 9: "MR",
    10: "NULL", 11: "WKS", 12: "PTR", 13: "HINFO", 14: "MINFO", 15: "MX", 16: "TXT", 17: "RP",
    18: "AFSDB", 19: "X25", 20: "ISDN", 21: "RT", 22: "NSAP", 23: "NSAP-PTR", 24: "SIG",
    25: "KEY", 26: "PX", 27: "GPOS", 28: "AAAA", 29: "LOC", 30: "NXT", 31: "EID", 32: "NIMLOC",
    33: "SRV", 34: "ATMA", 35: "NAPTR", 36: "KX", 37: "CERT", 38: "A6", 39: "DNAME", 40: "SINK",
    41: "OPT", 42: "APL", 43: "DS", 44: "SSHFP", 45: "IPSECKEY", 46: "RRSIG", 47: "NSEC",
    48: "DNSKEY", 49: "DHCID", 50: "NSEC3", 51: "NSEC3PARAM", 52: "TLSA", 53: "SMIMEA",
    55: "HIP", 56: "NINFO", 57: "RKEY", 58: "TALINK", 59: "CDS", 60: "CDNSKEY",
    61: "OPENPGPKEY", 62: "CSYNC", 63: "ZONEMD", 64: "SVCB", 65: "HTTPS", 99: "SPF",
    100: "UINFO", 101: "UID", 102: "GID", 103: "UNSPEC", 104: "NID", 105: "L32", 106: "L64",
    107: "LP", 108: "EUI48", 109: "EUI64", 249: "TKEY", 250: "TSIG", 251: "IXFR", 252: "AXFR",
    253: "MAILB", 254: "MAILA", 255: "*", 256: "URI", 257: "CAA", 32768: "TA", 32769: "DLV",
    65281: "WINS", 65282: "WINS-R", 65422: "XPF", 65521: "INTEGRITY",
}  # fmt: skip
"""Zeek's DNS::query_types (base/protocols/dns/consts.zeek)."""

QCLASS_NAMES: dict[int, str] = {
    1: "C_INTERNET", 2: "C_CSNET", 3: "C_CHAOS", 4: "C_HESIOD", 254: "C_NONE", 255: "C_ANY",
}  # fmt: skip
"""Zeek's DNS::classes."""

RCODE_NAMES: dict[int, str] = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSet", 9: "NOTAUTH", 10: "NOTZONE",
    11: "unassigned-11", 12: "unassigned-12", 13: "unassigned-13", 14: "unassigned-14",
    15: "unassigned-15", 16: "BADVERS", 17: "BADKEY", 18: "BADTIME", 19: "BADMODE",
    20: "BADNAME", 21: "BADALG", 22: "BADTRUNC", 23: "BADCOOKIE",
}  # fmt: skip
"""Zeek's DNS::base_errors (the 4-bit header rcode)."""

_HEADER: Final = struct.Struct("!HHHHHH")
_QFIXED: Final = struct.Struct("!HH")
_RRFIXED: Final = struct.Struct("!HHIH")
_U16: Final = struct.Struct("!H")

# Answer types whose rdata Zeek parses but logs nothing for (WKS, HINFO, NetBIOS NB, OPT, TSIG).
_SILENT: Final = frozenset({11, 13, 32, 41, 250})
_NAME_TYPES: Final = frozenset({2, 5, 12})  # NS, CNAME, PTR: rdata is one domain name


def qtype_name(qtype: int) -> str:
    """Zeek's name of a query type (``query-N`` when unknown)."""
    return QTYPE_NAMES.get(qtype) or f"query-{qtype}"


def qclass_name(qclass: int) -> str:
    """Zeek's name of a query class (``qclass-N`` when unknown)."""
    return QCLASS_NAMES.get(qclass) or f"qclass-{qclass}"


def rcode_name(rcode: int) -> str:
    """Zeek's name of a response code (``rcode-N`` when unknown)."""
    return RCODE_NAMES.get(rcode) or f"rcode-{rcode}"


# The parsed parts are NamedTuples (immutable, as the frozen dataclasses they were), built with
# tuple.__new__: a frozen dataclass's __init__ (object.__setattr__ per field) and a NamedTuple's
# own __new__ are interpreted code, about 3 % of an attack-mix replay (ADR 0006, update 4).


class DnsQuestion(NamedTuple):
    """One entry of the question section."""

    name: str  # queried name, lower-cased like Zeek, without the trailing dot
    qtype: int  # query type number
    qclass: int  # query class number


class DnsAnswer(NamedTuple):
    """One resource record of the answer section."""

    name: str  # owner name, lower-cased
    rtype: int  # RR type number
    rclass: int  # RR class number
    ttl: int  # time to live, seconds (unsigned 32-bit)
    text: str | None  # rdata as Zeek logs it; None or "" when Zeek logs nothing for it


class DnsMessage(NamedTuple):
    """A parsed DNS message: header, questions and answers (authority/additional skipped)."""

    trans_id: int  # transaction id
    qr: bool  # this is a response
    opcode: int  # 0 = standard query
    aa: bool  # authoritative answer
    tc: bool  # truncated
    rd: bool  # recursion desired
    ra: bool  # recursion available
    z: int  # the three bits after RA (Z, AD, CD), as Zeek reports them
    rcode: int  # response code (header bits only)
    qdcount: int  # entries in the question section
    ancount: int  # entries in the answer section
    nscount: int  # entries in the authority section
    arcount: int  # entries in the additional section
    questions: tuple[DnsQuestion, ...]  # parsed questions
    answers: tuple[DnsAnswer, ...]  # parsed answers
    error: ProtocolError | None = None  # set when ``partial`` parsing stopped early


def parse_dns(buf: bytes, *, partial: bool = False) -> DnsMessage:
    """Parse one DNS message (no TCP length prefix).

    With ``partial`` an error inside the question or answer section ends parsing there and is
    returned in ``error`` together with what parsed before it, as Zeek logs what it got.
    """
    if len(buf) < 12:
        raise NeedMoreData("DNS", "DNS_truncated_len_lt_hdr_len", f"{len(buf)} bytes")
    trans_id, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(buf)
    if qdcount > MAX_QUESTIONS:
        raise MalformedMessage("DNS", "DNS_Conn_count_too_large", f"{qdcount} questions")
    questions: list[DnsQuestion] = []
    answers: list[DnsAnswer] = []
    error: ProtocolError | None = None
    pos = 12
    try:
        for _ in range(qdcount):
            name, pos = read_name(buf, pos)
            if pos + 4 > len(buf):
                raise NeedMoreData("DNS", "DNS_truncated_quest_too_short")
            qtype, qclass = _QFIXED.unpack_from(buf, pos)
            pos += 4
            questions.append(tuple.__new__(DnsQuestion, (name, qtype, qclass)))
        for _ in range(ancount):
            answer, pos = _read_answer(buf, pos)
            answers.append(answer)
    except ProtocolError as exc:
        if not partial:
            raise
        error = exc
    # In field order: trans_id, qr, opcode, aa, tc, rd, ra, z, rcode, the four counts,
    # questions, answers, error.
    return tuple.__new__(
        DnsMessage,
        (
            trans_id,
            bool(flags & 0x8000),
            (flags >> 11) & 0xF,
            bool(flags & 0x0400),
            bool(flags & 0x0200),
            bool(flags & 0x0100),
            bool(flags & 0x0080),
            (flags >> 4) & 0x7,
            flags & 0xF,
            qdcount,
            ancount,
            nscount,
            arcount,
            tuple(questions),
            tuple(answers),
            error,
        ),
    )


def looks_like_dns(buf: bytes, *, standard_port: bool) -> bool:
    """Content-based detection: could this payload be a DNS message?

    On DNS's own ports a plausible header is enough (the analyzer then reports what does
    not parse, as Zeek does). Elsewhere the whole message must parse exactly: one question,
    every section, no trailing bytes.
    """
    if len(buf) < 12:
        return False
    _, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(buf)
    opcode = (flags >> 11) & 0xF
    if standard_port:
        return bool(opcode <= 6 and qdcount <= MAX_QUESTIONS)
    try:
        if opcode != 0 or qdcount != 1 or max(ancount, nscount, arcount) > 64:
            return False
        pos = 12
        _, pos = read_name(buf, pos)
        pos += 4
        for _ in range(ancount + nscount + arcount):
            pos = _skip_rr(buf, pos)
        return pos == len(buf)
    except ProtocolError:
        return False


def read_name(buf: bytes, pos: int) -> tuple[str, int]:
    """Read a (possibly compressed) domain name at ``pos``; return it and the offset after it.

    Compression pointers must point backwards (as Zeek requires); together with the name
    length limit and a cap on jumps this ends every pointer loop.
    """
    labels: list[bytes] = []
    end = -1
    size = 0
    jumps = 0
    n = len(buf)
    while True:
        if pos >= n:
            raise NeedMoreData("DNS", "DNS_label_len_gt_pkt", f"name runs past {n} bytes")
        length = buf[pos]
        if length == 0:
            pos += 1
            break
        kind = length & 0xC0
        if kind == 0xC0:
            if pos + 1 >= n:
                raise NeedMoreData("DNS", "DNS_label_len_gt_pkt", "cut compression pointer")
            target = ((length & 0x3F) << 8) | buf[pos + 1]
            if end < 0:
                end = pos + 2
            if target >= pos:
                raise MalformedMessage("DNS", "DNS_label_forward_compress_offset", f"{target}")
            jumps += 1
            if jumps > MAX_POINTERS:
                raise MalformedMessage("DNS", "DNS_name_pointer_loop", f"{jumps} jumps")
            pos = target
            continue
        if kind:
            raise MalformedMessage("DNS", "DNS_label_bad_type", f"0x{length:02x}")
        pos += 1
        if pos + length > n:
            raise NeedMoreData("DNS", "DNS_label_len_gt_pkt", f"label of {length}")
        labels.append(buf[pos : pos + length])
        size += length + 1
        if size > MAX_NAME:
            raise MalformedMessage("DNS", "DNS_NAME_too_long", f"{size} octets")
        pos += length
    return render_name(labels), (end if end >= 0 else pos)


def render_name(labels: list[bytes]) -> str:
    """Labels to text as Zeek logs them: lower case, dot-joined, odd bytes escaped as \\xNN."""
    raw = b".".join(labels).lower()
    if raw.isascii():
        text = raw.decode("ascii")
        if text.isprintable():
            return text
    return escape_bytes(raw)


def escape_bytes(raw: bytes) -> str:
    """Text with every non-printable byte written as ``\\xNN`` (Zeek's log escaping)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if text.isprintable():
            return text
    return "".join(chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}" for b in raw)


def _skip_rr(buf: bytes, pos: int) -> int:
    _, pos = read_name(buf, pos)
    if pos + 10 > len(buf):
        raise NeedMoreData("DNS", "DNS_truncated_ans_too_short")
    rdlength = _U16.unpack_from(buf, pos + 8)[0]
    pos += 10 + rdlength
    if pos > len(buf):
        raise NeedMoreData("DNS", "DNS_truncated_RR_rdlength_lt_len")
    return pos


def _read_answer(buf: bytes, pos: int) -> tuple[DnsAnswer, int]:
    name, pos = read_name(buf, pos)
    if pos + 10 > len(buf):
        raise NeedMoreData("DNS", "DNS_truncated_ans_too_short")
    rtype, rclass, ttl, rdlength = _RRFIXED.unpack_from(buf, pos)
    pos += 10
    end = pos + rdlength
    if end > len(buf):
        detail = f"{rdlength} > {len(buf) - pos}"
        raise NeedMoreData("DNS", "DNS_truncated_RR_rdlength_lt_len", detail)
    if rdlength == 0 and end < len(buf):
        raise MalformedMessage("DNS", "DNS_zero_rdlength", qtype_name(rtype))
    text = _render_rdata(buf, pos, end, rtype, name)
    return tuple.__new__(DnsAnswer, (name, rtype, rclass, ttl, text)), end


def _render_rdata(buf: bytes, pos: int, end: int, rtype: int, owner: str) -> str | None:
    """The answer text of Zeek's dns_*_reply handlers for one RR."""
    size = end - pos
    if rtype == 1:
        if size != 4:
            raise MalformedMessage("DNS", "DNS_RR_bad_length", f"A of {size} bytes")
        return socket.inet_ntop(socket.AF_INET, buf[pos:end])
    if rtype in (28, 38):
        if size != 16:
            raise MalformedMessage("DNS", "DNS_RR_bad_length", f"AAAA of {size} bytes")
        return socket.inet_ntop(socket.AF_INET6, buf[pos:end])
    if rtype in _NAME_TYPES:
        return _rdata_name(buf, pos, end)
    if rtype == 15:  # MX: preference, exchange
        _need(size, 3, "MX")
        return _rdata_name(buf, pos + 2, end)
    if rtype == 6:  # SOA: mname first
        return _rdata_name(buf, pos, end)
    if rtype == 33:  # SRV: priority, weight, port, target
        _need(size, 7, "SRV")
        return _rdata_name(buf, pos + 6, end)
    if rtype in (16, 99):  # TXT, SPF: character strings
        return _render_strings(buf, pos, end, "TXT" if rtype == 16 else "SPF")
    if rtype in _SILENT or size == 0:
        return None
    return _render_other(buf, pos, end, rtype, owner)


def _render_other(buf: bytes, pos: int, end: int, rtype: int, owner: str) -> str:
    size = end - pos
    if rtype == 46:  # RRSIG
        _need(size, 19, "RRSIG")
        signer = _rdata_name(buf, pos + 18, end)
        return f"RRSIG {_U16.unpack_from(buf, pos)[0]} {signer or '<Root>'}"
    if rtype == 48:  # DNSKEY: flags, protocol, algorithm
        _need(size, 4, "DNSKEY")
        return f"DNSKEY {buf[pos + 3]}"
    if rtype == 47:  # NSEC: next domain name
        return f"NSEC {owner} {_rdata_name(buf, pos, end)}"
    if rtype == 50:
        return "NSEC3"
    if rtype == 51:
        return "NSEC3PARAM"
    if rtype == 43:  # DS: key tag, algorithm, digest type
        _need(size, 4, "DS")
        return f"DS {buf[pos + 2]} {buf[pos + 3]}"
    if rtype == 65534:
        return "BIND9 signing signal"
    if rtype == 44:  # SSHFP: algorithm, type, fingerprint
        _need(size, 2, "SSHFP")
        return f"SSHFP: {buf[pos + 2 : end].hex()}"
    if rtype == 29:  # LOC: version, size, horizontal and vertical precision
        _need(size, 16, "LOC")
        return f"LOC:  {buf[pos + 1]} {buf[pos + 2]} {buf[pos + 3]}"
    if rtype == 257:  # CAA: flags, tag length, tag, value (Zeek parses it but logs nothing)
        _need(size, 2, "CAA")
        tag_end = pos + 2 + buf[pos + 1]
        if tag_end > end:
            raise MalformedMessage("DNS", "DNS_CAA_char_str_past_rdlen")
        tag = escape_bytes(buf[pos + 2 : tag_end])
        return f"CAA {buf[pos]} {tag} {escape_bytes(buf[tag_end:end])}"
    if rtype in (64, 65):  # SVCB, HTTPS: priority and target (Zeek logs nothing for these)
        _need(size, 3, "SVCB")
        target = _rdata_name(buf, pos + 2, end) or "."
        return f"{'HTTPS' if rtype == 65 else 'SVCB'} {_U16.unpack_from(buf, pos)[0]} {target}"
    return f"<unknown type={rtype}>"


def _need(size: int, minimum: int, what: str) -> None:
    if size < minimum:
        raise MalformedMessage("DNS", "DNS_RR_bad_length", f"{what} of {size} bytes")


def _rdata_name(buf: bytes, pos: int, end: int) -> str:
    # The name may point back into the message but must start inside this RR's rdata.
    name, after = read_name(buf, pos)
    if after > end:
        raise MalformedMessage("DNS", "DNS_RR_length_mismatch", "name runs past rdata")
    return name


def _render_strings(buf: bytes, pos: int, end: int, tag: str) -> str:
    parts: list[str] = []
    while pos < end:
        size = buf[pos]
        pos += 1
        if pos + size > end:
            raise MalformedMessage("DNS", "DNS_TXT_char_str_past_rdlen", f"{size} > {end - pos}")
        parts.append(f"{tag} {size} {escape_bytes(buf[pos : pos + size])}")
        pos += size
    return " ".join(parts)


__all__ = [
    "MAX_NAME",
    "MAX_POINTERS",
    "MAX_QUESTIONS",
    "QCLASS_NAMES",
    "QTYPE_NAMES",
    "RCODE_NAMES",
    "STANDARD_PORTS",
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
