"""Application protocols (DNS, HTTP, TLS, FTP): flow payload in, Zeek dns/http/ssl/ftp records.

Pure parsers raise only :class:`ProtocolError` subclasses; per-flow analyzers never raise,
they report anomalies as weird conditions. :class:`AppSession` picks the analyzer by content.
"""

from __future__ import annotations

from a2z.agent.protocols.analyzer import Analyzer, FlowIdent, ProtocolConfig
from a2z.agent.protocols.dns import (
    DnsAnalyzer,
    DnsAnswer,
    DnsMessage,
    DnsQuestion,
    looks_like_dns,
    parse_dns,
)
from a2z.agent.protocols.errors import MalformedMessage, NeedMoreData, ProtocolError
from a2z.agent.protocols.ftp import FtpAnalyzer
from a2z.agent.protocols.http import (
    HttpAnalyzer,
    HttpHead,
    basic_credentials,
    parse_request_head,
    parse_response_head,
)
from a2z.agent.protocols.session import AppSession, detect_tcp
from a2z.agent.protocols.stream import StreamReassembler
from a2z.agent.protocols.tls import (
    ClientHello,
    ServerHello,
    TlsAnalyzer,
    ja3,
    ja3s,
    ja4,
    ja4_raw,
    parse_client_hello,
    parse_server_hello,
)

__all__ = [
    "Analyzer",
    "AppSession",
    "ClientHello",
    "DnsAnalyzer",
    "DnsAnswer",
    "DnsMessage",
    "DnsQuestion",
    "FlowIdent",
    "FtpAnalyzer",
    "HttpAnalyzer",
    "HttpHead",
    "MalformedMessage",
    "NeedMoreData",
    "ProtocolConfig",
    "ProtocolError",
    "ServerHello",
    "StreamReassembler",
    "TlsAnalyzer",
    "basic_credentials",
    "detect_tcp",
    "ja3",
    "ja3s",
    "ja4",
    "ja4_raw",
    "looks_like_dns",
    "parse_client_hello",
    "parse_dns",
    "parse_request_head",
    "parse_response_head",
    "parse_server_hello",
]
