"""Network log records with Zeek's schemas and field names (conn, dns, http, ssl, ftp, weird).

Field names follow Zeek's ``base/protocols/*/main.zeek`` so that anyone can compare our
output with Zeek's on the same capture and so that Sigma's ``zeek`` rules apply unchanged.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from a2z.records.alert import Alert
from a2z.records.base import RecordBase

Proto = Literal["tcp", "udp", "icmp", "unknown_transport"]


class Conn(RecordBase, tag="conn", frozen=True, kw_only=True):
    """One connection (Zeek conn.log): emitted when the flow ends or times out."""

    proto: Proto  # transport protocol
    service: str | None = None  # application protocol(s) found by content, comma-separated
    duration: float | None = None  # seconds from first to last packet
    orig_bytes: int | None = None  # originator payload bytes (TCP: by sequence numbers)
    resp_bytes: int | None = None  # responder payload bytes
    conn_state: str = "OTH"  # S0, S1, SF, REJ, S2, S3, RSTO, RSTR, RSTOS0, RSTRH, SH, SHR, OTH
    local_orig: bool | None = None  # originator is in a configured local network
    local_resp: bool | None = None  # responder is in a configured local network
    missed_bytes: int = 0  # bytes missed in content gaps
    history: str = ""  # Zeek state history letters (S h A D a d F f R r ...), upper = orig
    orig_pkts: int = 0  # packets sent by the originator
    orig_ip_bytes: int = 0  # IP-level bytes sent by the originator
    resp_pkts: int = 0  # packets sent by the responder
    resp_ip_bytes: int = 0  # IP-level bytes sent by the responder


class Dns(RecordBase, tag="dns", frozen=True, kw_only=True):
    """One DNS request/response pair (Zeek dns.log)."""

    proto: Proto  # udp or tcp
    trans_id: int  # 16-bit DNS transaction id
    rtt: float | None = None  # seconds between query and response
    query: str | None = None  # queried domain name
    qclass: int | None = None  # query class number
    qclass_name: str | None = None  # query class name, e.g. C_INTERNET
    qtype: int | None = None  # query type number
    qtype_name: str | None = None  # query type name, e.g. A, AAAA, TXT
    rcode: int | None = None  # response code number
    rcode_name: str | None = None  # response code name, e.g. NOERROR, NXDOMAIN
    AA: bool = False  # authoritative answer
    TC: bool = False  # truncated
    RD: bool = False  # recursion desired
    RA: bool = False  # recursion available
    Z: int = 0  # reserved bits
    answers: list[str] | None = None  # answer RDATA rendered as text
    TTLs: list[float] | None = None  # TTL of each answer, seconds
    rejected: bool = False  # the server rejected the query


class Http(RecordBase, tag="http", frozen=True, kw_only=True):
    """One HTTP request and its response (Zeek http.log)."""

    trans_depth: int = 1  # position of this request in the connection's pipeline
    method: str | None = None  # request method, e.g. GET
    host: str | None = None  # Host header
    uri: str | None = None  # request target
    referrer: str | None = None  # Referer header
    version: str | None = None  # HTTP version of the request, e.g. 1.1
    user_agent: str | None = None  # User-Agent header
    request_body_len: int = 0  # uncompressed request body bytes
    response_body_len: int = 0  # uncompressed response body bytes
    status_code: int | None = None  # response status code
    status_msg: str | None = None  # response reason phrase
    username: str | None = None  # user from Basic authorization
    password: str | None = None  # password from Basic authorization (captured by policy only)


class Ssl(RecordBase, tag="ssl", frozen=True, kw_only=True):
    """One TLS handshake (Zeek ssl.log plus JA3/JA4 client fingerprints)."""

    version: str | None = None  # negotiated version, e.g. TLSv12, TLSv13
    cipher: str | None = None  # negotiated cipher suite name
    curve: str | None = None  # key-exchange group
    server_name: str | None = None  # SNI from the ClientHello
    resumed: bool = False  # session was resumed
    next_protocol: str | None = None  # ALPN protocol chosen by the server
    established: bool = False  # handshake completed
    ja3: str | None = None  # JA3 client fingerprint (MD5 hex)
    ja3s: str | None = None  # JA3S server fingerprint (MD5 hex)
    ja4: str | None = None  # JA4 client fingerprint


class Ftp(RecordBase, tag="ftp", frozen=True, kw_only=True):
    """One FTP command and its reply (Zeek ftp.log); a password is never logged."""

    user: str | None = None  # the session's user, from its last USER command
    command: str  # command verb, upper case, e.g. USER, PASS, RETR
    arg: str | None = None  # the command's argument ("<hidden>" for PASS)
    reply_code: int | None = None  # the final reply's code, e.g. 230
    reply_msg: str | None = None  # the final reply's text


class Weird(RecordBase, tag="weird", frozen=True, kw_only=True):
    """Something unexpected in the traffic or our decoding of it (Zeek weird.log)."""

    name: str  # short identifier of the condition, e.g. truncated_header
    addl: str | None = None  # additional detail
    notice: bool = False  # also raised as a notice
    peer: str = "a2z"  # the sensor that saw it
    source: str | None = None  # the decoder that raised it, e.g. TCP, DNS


Record = Conn | Dns | Http | Ssl | Ftp | Weird | Alert
"""Every record type the agent can emit; ``_path`` tells them apart on the wire."""

RECORD_TYPES: dict[str, type[msgspec.Struct]] = {
    "conn": Conn,
    "dns": Dns,
    "http": Http,
    "ssl": Ssl,
    "ftp": Ftp,
    "weird": Weird,
    "alert": Alert,
}
