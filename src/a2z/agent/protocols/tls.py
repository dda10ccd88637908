"""TLS handshakes: ClientHello/ServerHello parsed from the record stream into Zeek ssl records.

:func:`parse_client_hello` and :func:`parse_server_hello` are pure parsers of one handshake
message body; :func:`ja3`, :func:`ja3s` and :func:`ja4` fingerprint them (JA3/JA3S exactly as
tshark's ``tls.handshake.ja3``/``ja3s``; JA4 per FoxIO's BSD-3-Clause specification, client
part only). :class:`TlsAnalyzer` follows records and handshake messages across TCP segments
until both sides encrypt. Hand-written on purpose: the ClientHello is on the measured hot path.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from a2z.agent.protocols.analyzer import Analyzer, FlowIdent, ProtocolConfig
from a2z.agent.protocols.dns import escape_bytes
from a2z.agent.protocols.errors import MalformedMessage, NeedMoreData, ProtocolError
from a2z.agent.protocols.tls_names import GREASE, cipher_name, group_name, version_name
from a2z.records import Record, Ssl

CHANGE_CIPHER_SPEC = 20
ALERT = 21
HANDSHAKE = 22
APPLICATION_DATA = 23
CLIENT_HELLO = 1
SERVER_HELLO = 2
SERVER_KEY_EXCHANGE = 12

EXT_SERVER_NAME = 0
EXT_SUPPORTED_GROUPS = 10
EXT_EC_POINT_FORMATS = 11
EXT_SIGNATURE_ALGORITHMS = 13
EXT_ALPN = 16
EXT_PRE_SHARED_KEY = 41
EXT_SUPPORTED_VERSIONS = 43
EXT_KEY_SHARE = 51

MAX_RECORD = 16384 + 2048  # TLSCiphertext length limit (RFC 8446 5.2)
HELLO_RETRY_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)  # a ServerHello with this random is a HelloRetryRequest (RFC 8446 4.1.3)

_U16 = struct.Struct("!H")
_JA4_VERSIONS = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0002: "s2",
    0xFEFF: "d1",
    0xFEFD: "d2",
    0xFEFC: "d3",
}
_ALNUM = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True, slots=True)
class ClientHello:
    """The fields of a ClientHello that logs and fingerprints use."""

    version: int  # legacy_version, e.g. 0x0303
    session_id: bytes  # legacy_session_id
    ciphers: tuple[int, ...]  # cipher suites in order, GREASE included
    extensions: tuple[int, ...]  # extension types in order, GREASE included
    server_name: str | None  # first host_name of the server_name extension
    groups: tuple[int, ...]  # supported_groups in order, GREASE included
    point_formats: tuple[int, ...]  # ec_point_formats
    signature_algorithms: tuple[int, ...]  # signature_algorithms in order
    alpn: tuple[bytes, ...]  # ALPN protocol names offered
    supported_versions: tuple[int, ...]  # supported_versions list, GREASE included


@dataclass(frozen=True, slots=True)
class ServerHello:
    """The fields of a ServerHello that logs and fingerprints use."""

    version: int  # legacy_version
    session_id: bytes  # legacy_session_id_echo
    cipher: int  # chosen cipher suite
    extensions: tuple[int, ...]  # extension types in order
    selected_version: int | None  # supported_versions as chosen by the server (TLS 1.3)
    alpn: bytes | None  # ALPN protocol chosen (TLS 1.2; 1.3 sends it encrypted)
    key_share_group: int | None  # key_share group (TLS 1.3)
    psk: bool  # pre_shared_key accepted (TLS 1.3 resumption)
    retry: bool  # this is a HelloRetryRequest

    @property
    def negotiated(self) -> int:
        """The protocol version actually negotiated."""
        return self.selected_version if self.selected_version is not None else self.version


class _Reader:
    """Bounds-checked big-endian reads over one handshake message."""

    __slots__ = ("buf", "end", "pos", "what")

    def __init__(self, buf: bytes, what: str, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end
        self.what = what

    def need(self, size: int) -> None:
        if self.pos + size > self.end:
            raise NeedMoreData("SSL", f"SSL_truncated_{self.what}", f"{size} at {self.pos}")

    def u8(self) -> int:
        self.need(1)
        value = self.buf[self.pos]
        self.pos += 1
        return value

    def u16(self) -> int:
        self.need(2)
        value: int = _U16.unpack_from(self.buf, self.pos)[0]
        self.pos += 2
        return value

    def take(self, size: int) -> bytes:
        self.need(size)
        value = self.buf[self.pos : self.pos + size]
        self.pos += size
        return value

    def block(self, length_bytes: int) -> _Reader:
        """A reader over the next length-prefixed block; this reader skips past it."""
        size = self.u8() if length_bytes == 1 else self.u16()
        self.need(size)
        sub = _Reader(self.buf, self.what, self.pos, self.pos + size)
        self.pos += size
        return sub

    def u16_list(self) -> tuple[int, ...]:
        size = self.end - self.pos
        if size % 2:
            raise MalformedMessage("SSL", f"SSL_odd_length_{self.what}", f"{size} bytes")
        values = struct.unpack_from(f"!{size // 2}H", self.buf, self.pos)
        self.pos = self.end
        return values

    def left(self) -> int:
        return self.end - self.pos


def parse_client_hello(body: bytes) -> ClientHello:
    """Parse a ClientHello handshake body (after the 4-byte handshake header)."""
    r = _Reader(body, "client_hello")
    version = r.u16()
    r.take(32)  # random
    session_id = r.take(r.u8())
    ciphers = r.block(2).u16_list()
    r.take(r.u8())  # compression methods
    extensions: list[int] = []
    server_name: str | None = None
    groups: tuple[int, ...] = ()
    point_formats: tuple[int, ...] = ()
    sig_algs: tuple[int, ...] = ()
    alpn: tuple[bytes, ...] = ()
    versions: tuple[int, ...] = ()
    if r.left():
        exts = r.block(2)
        while exts.left():
            ext_type = exts.u16()
            data = exts.block(2)
            extensions.append(ext_type)
            if ext_type == EXT_SERVER_NAME and server_name is None:
                server_name = _server_name(data)
            elif ext_type == EXT_SUPPORTED_GROUPS:
                groups = data.block(2).u16_list()
            elif ext_type == EXT_EC_POINT_FORMATS:
                point_formats = tuple(data.take(data.u8()))
            elif ext_type == EXT_SIGNATURE_ALGORITHMS:
                sig_algs = data.block(2).u16_list()
            elif ext_type == EXT_ALPN:
                alpn = _alpn_list(data)
            elif ext_type == EXT_SUPPORTED_VERSIONS:
                versions = data.block(1).u16_list()
    return ClientHello(
        version=version,
        session_id=session_id,
        ciphers=ciphers,
        extensions=tuple(extensions),
        server_name=server_name,
        groups=groups,
        point_formats=point_formats,
        signature_algorithms=sig_algs,
        alpn=alpn,
        supported_versions=versions,
    )


def parse_server_hello(body: bytes) -> ServerHello:
    """Parse a ServerHello handshake body (after the 4-byte handshake header)."""
    r = _Reader(body, "server_hello")
    version = r.u16()
    random = r.take(32)
    if _is_tls13(version):
        # TLS 1.3 drafts before 22 put the real version here and had no session id or
        # compression method (the RFC's ServerHello always says 0x0303).
        session_id = b""
        cipher = r.u16()
    else:
        session_id = r.take(r.u8())
        cipher = r.u16()
        r.u8()  # compression method
    extensions: list[int] = []
    selected: int | None = None
    alpn: bytes | None = None
    group: int | None = None
    psk = False
    if r.left():
        exts = r.block(2)
        while exts.left():
            ext_type = exts.u16()
            data = exts.block(2)
            extensions.append(ext_type)
            if ext_type == EXT_SUPPORTED_VERSIONS and data.left() >= 2:
                selected = data.u16()
            elif ext_type == EXT_ALPN:
                names = _alpn_list(data)
                alpn = names[0] if names else None
            elif ext_type == EXT_KEY_SHARE and data.left() >= 2:
                group = data.u16()
            elif ext_type == EXT_PRE_SHARED_KEY:
                psk = True
    return ServerHello(
        version=version,
        session_id=session_id,
        cipher=cipher,
        extensions=tuple(extensions),
        selected_version=selected,
        alpn=alpn,
        key_share_group=group,
        psk=psk,
        retry=random == HELLO_RETRY_RANDOM,
    )


def _server_name(data: _Reader) -> str | None:
    names = data.block(2)
    while names.left():
        kind = names.u8()
        name = names.take(names.u16())
        if kind == 0:
            return escape_bytes(name)
    return None


def _alpn_list(data: _Reader) -> tuple[bytes, ...]:
    names = data.block(2)
    out: list[bytes] = []
    while names.left():
        out.append(names.take(names.u8()))
    return tuple(out)


# -- fingerprints ---------------------------------------------------------------------------------


def ja3_string(hello: ClientHello) -> str:
    """The JA3 text: version,ciphers,extensions,groups,point formats (GREASE removed)."""
    return ",".join(
        (
            str(hello.version),
            "-".join(str(c) for c in hello.ciphers if c not in GREASE),
            "-".join(str(e) for e in hello.extensions if e not in GREASE),
            "-".join(str(g) for g in hello.groups if g not in GREASE),
            "-".join(str(p) for p in hello.point_formats),
        )
    )


def ja3(hello: ClientHello) -> str:
    """JA3 client fingerprint: MD5 of :func:`ja3_string`, as tshark's tls.handshake.ja3."""
    return hashlib.md5(ja3_string(hello).encode(), usedforsecurity=False).hexdigest()


def ja3s_string(hello: ServerHello) -> str:
    """The JA3S text: version,cipher,extensions (GREASE removed)."""
    exts = "-".join(str(e) for e in hello.extensions if e not in GREASE)
    return f"{hello.version},{hello.cipher},{exts}"


def ja3s(hello: ServerHello) -> str:
    """JA3S server fingerprint: MD5 of :func:`ja3s_string`, as tshark's tls.handshake.ja3s."""
    return hashlib.md5(ja3s_string(hello).encode(), usedforsecurity=False).hexdigest()


def ja4_parts(hello: ClientHello, transport: str = "t") -> tuple[str, list[str], list[str]]:
    """JA4's readable prefix and its sorted cipher and extension lists (the ``_r`` form)."""
    versions = [v for v in hello.supported_versions if v not in GREASE]
    version = _JA4_VERSIONS.get(max(versions) if versions else hello.version, "00")
    sni = "d" if EXT_SERVER_NAME in hello.extensions else "i"
    ciphers = [c for c in hello.ciphers if c not in GREASE]
    extensions = [e for e in hello.extensions if e not in GREASE]
    prefix = (
        f"{transport}{version}{sni}{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}"
        f"{_ja4_alpn(hello.alpn[0] if hello.alpn else b'')}"
    )
    cipher_list = sorted(f"{c:04x}" for c in ciphers)
    ext_list = sorted(f"{e:04x}" for e in extensions if e not in (EXT_SERVER_NAME, EXT_ALPN))
    return prefix, cipher_list, ext_list


def ja4_raw(hello: ClientHello, transport: str = "t") -> str:
    """JA4_r: the fingerprint before hashing (sorted lists, signature algorithms in order)."""
    prefix, ciphers, extensions = ja4_parts(hello, transport)
    return f"{prefix}_{','.join(ciphers)}_{_ja4_ext_text(hello, extensions)}"


def ja4(hello: ClientHello, transport: str = "t") -> str:
    """JA4 client fingerprint (``t13d1516h2_8daaf6152771_e5627efa2ab1``)."""
    prefix, ciphers, extensions = ja4_parts(hello, transport)
    cipher_hash = _sha12(",".join(ciphers)) if ciphers else "000000000000"
    ext_hash = _sha12(_ja4_ext_text(hello, extensions)) if extensions else "000000000000"
    return f"{prefix}_{cipher_hash}_{ext_hash}"


def _ja4_ext_text(hello: ClientHello, extensions: list[str]) -> str:
    sig_algs = [f"{s:04x}" for s in hello.signature_algorithms if s not in GREASE]
    text = ",".join(extensions)
    return f"{text}_{','.join(sig_algs)}" if sig_algs else text


def _ja4_alpn(first: bytes) -> str:
    """First and last character of the first ALPN value; "00" if none; "99" if not alphanumeric.

    "99" is what FoxIO's reference implementations print (and what their published vectors,
    e.g. tls-non-ascii-alpn.pcapng, expect); a later revision of JA4.md prints the first and
    last hex digits instead. We follow the vectors, so our fingerprints match theirs.
    """
    if not first:
        return "00"
    if first[0] in _ALNUM and first[-1] in _ALNUM:
        return chr(first[0]) + chr(first[-1])
    return "99"


def _sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# -- the per-flow analyzer ---------------------------------------------------------------------


class _Side:
    """Record and handshake-message framing of one direction."""

    __slots__ = (
        "encrypted",
        "hdr",
        "hs_buf",
        "hs_hdr",
        "hs_keep",
        "hs_left",
        "hs_type",
        "rec_left",
        "rec_type",
    )

    def __init__(self) -> None:
        self.hdr = bytearray()  # record header being collected
        self.rec_type = 0  # content type of the current record
        self.rec_left = 0  # body bytes of the current record still to come
        self.hs_hdr = bytearray()  # handshake header being collected
        self.hs_type = 0  # type of the current handshake message
        self.hs_left = -1  # its body bytes still to come; -1 = between messages
        self.hs_keep = 0  # how many of its bytes we keep for parsing
        self.hs_buf = bytearray()  # the kept bytes
        self.encrypted = False  # this side sent ChangeCipherSpec (or TLS 1.3 encrypted data)


class TlsAnalyzer(Analyzer):
    """One flow's TLS handshake: emits an ssl record once established (or at flow end)."""

    __slots__ = (
        "_client",
        "_curve",
        "_orig",
        "_resp",
        "_server",
        "_ts",
        "established",
    )

    service = "ssl"

    def __init__(
        self,
        ident: FlowIdent,
        config: ProtocolConfig,
        records: list[Record] | None = None,
        weirds: list[ProtocolError] | None = None,
    ) -> None:
        super().__init__(ident, config, records, weirds)
        self._orig = _Side()
        self._resp = _Side()
        self._client: ClientHello | None = None  # the first ClientHello
        self._server: ServerHello | None = None  # the last ServerHello
        self._curve: int | None = None  # group from a TLS 1.2 ECDHE ServerKeyExchange
        self._ts: float | None = None  # time of the first TLS record
        self.established = False

    def data(self, ts: float, is_orig: bool, chunk: bytes) -> None:
        """In-order bytes of one direction: records, and handshake messages inside them."""
        if self._ts is None:
            self._ts = ts
        side = self._orig if is_orig else self._resp
        pos = 0
        end = len(chunk)
        while pos < end and not self.done:
            if not side.rec_left:
                need = 5 - len(side.hdr)
                side.hdr += chunk[pos : pos + need]
                pos += need
                if len(side.hdr) < 5:
                    return
                header = bytes(side.hdr)
                side.hdr.clear()
                self._record(ts, is_orig, side, header)
                continue
            take = min(side.rec_left, end - pos)
            if side.rec_type == HANDSHAKE and not side.encrypted:
                self._handshake_bytes(ts, is_orig, side, chunk[pos : pos + take])
            side.rec_left -= take
            pos += take

    def gap(self, ts: float, is_orig: bool, size: int) -> None:
        """Bytes missing: record framing is lost, so stop (and log what we have)."""
        self.weird("content_gap", f"{size} bytes")
        self.finish(ts)

    def finish(self, ts: float) -> None:
        """Flow end (or nothing more to learn): log the handshake seen so far."""
        if self.done:
            return
        self.done = True
        if self._client is not None or self._server is not None:
            self._log()

    # -- records and handshake messages ---------------------------------------------------------

    def _record(self, ts: float, is_orig: bool, side: _Side, header: bytes) -> None:
        ctype, major, length = header[0], header[1], _U16.unpack_from(header, 3)[0]
        if not 20 <= ctype <= 26 or major != 3 or length > MAX_RECORD:
            self.report(MalformedMessage("SSL", "SSL_bad_record", header.hex()))
            self.finish(ts)
            return
        side.rec_type, side.rec_left = ctype, length
        if ctype == CHANGE_CIPHER_SPEC and not side.encrypted:
            # In TLS 1.3 ChangeCipherSpec is a no-op for middleboxes (it may even follow a
            # HelloRetryRequest); encryption starts after the ServerHello and, for the
            # client, with its first encrypted record.
            if not self._tls13():
                side.encrypted = True
            return
        if ctype == APPLICATION_DATA and not side.encrypted and self._tls13():
            side.encrypted = True
        if side.encrypted and self._orig.encrypted and self._resp.encrypted:
            # Zeek's ssl_established: a ciphertext record once both sides encrypt.
            self.established = True
            self.finish(ts)

    def _tls13(self) -> bool:
        server = self._server  # a HelloRetryRequest counts: it already fixes TLS 1.3
        return server is not None and _is_tls13(server.negotiated)

    def _handshake_bytes(self, ts: float, is_orig: bool, side: _Side, piece: bytes) -> None:
        pos = 0
        end = len(piece)
        while pos < end:
            if side.hs_left < 0:
                need = 4 - len(side.hs_hdr)
                side.hs_hdr += piece[pos : pos + need]
                pos += need
                if len(side.hs_hdr) < 4:
                    return
                hs_type = side.hs_hdr[0]
                length = int.from_bytes(side.hs_hdr[1:4], "big")
                side.hs_hdr.clear()
                side.hs_type, side.hs_left = hs_type, length
                side.hs_buf.clear()
                if hs_type in (CLIENT_HELLO, SERVER_HELLO):
                    side.hs_keep = length
                    if length > self.config.max_handshake_bytes:
                        self.weird("SSL_handshake_too_long", f"{length} bytes")
                        side.hs_keep = 0
                elif hs_type == SERVER_KEY_EXCHANGE:
                    side.hs_keep = min(length, 4)  # curve type and named curve
                else:
                    side.hs_keep = 0
                if not length:
                    self._message(ts, is_orig, side)
                continue
            take = min(side.hs_left, end - pos)
            room = side.hs_keep - len(side.hs_buf)
            if room > 0:
                side.hs_buf += piece[pos : pos + min(room, take)]
            side.hs_left -= take
            pos += take
            if not side.hs_left:
                self._message(ts, is_orig, side)

    def _message(self, ts: float, is_orig: bool, side: _Side) -> None:
        hs_type = side.hs_type
        body = bytes(side.hs_buf)
        side.hs_buf.clear()
        side.hs_left = -1
        if len(body) < side.hs_keep:
            return
        try:
            if hs_type == CLIENT_HELLO and is_orig and side.hs_keep:
                hello = parse_client_hello(body)
                self.confirmed = True
                if self._client is None:
                    self._client = hello
            elif hs_type == SERVER_HELLO and not is_orig and side.hs_keep:
                server = parse_server_hello(body)
                self.confirmed = True
                self._server = server
                if not server.retry and _is_tls13(server.negotiated):
                    side.encrypted = True  # everything after a TLS 1.3 ServerHello is encrypted
            elif hs_type == SERVER_KEY_EXCHANGE and not is_orig and len(body) >= 3:
                chosen = self._server
                if body[0] == 3 and chosen is not None and "ECDH" in cipher_name(chosen.cipher):
                    self._curve = _U16.unpack_from(body, 1)[0]
        except ProtocolError as exc:
            self.report(exc)
            if not self.confirmed:
                self.finish(ts)

    def _log(self) -> None:
        ident = self.ident
        client, server = self._client, self._server
        version = cipher = curve = alpn = None
        resumed = False
        if server is not None:
            version = version_name(server.negotiated)
            cipher = cipher_name(server.cipher)
            group = server.key_share_group if _is_tls13(server.negotiated) else self._curve
            curve = group_name(group) if group is not None else None
            alpn = escape_bytes(server.alpn) if server.alpn is not None else None
            if _is_tls13(server.negotiated):
                resumed = server.psk
            elif client is not None and client.session_id:
                resumed = server.session_id == client.session_id
        self.records.append(
            Ssl(
                ts=self._ts if self._ts is not None else 0.0,
                uid=ident.uid,
                orig_h=ident.orig_h,
                orig_p=ident.orig_p,
                resp_h=ident.resp_h,
                resp_p=ident.resp_p,
                version=version,
                cipher=cipher,
                curve=curve,
                server_name=client.server_name if client is not None else None,
                resumed=resumed,
                next_protocol=alpn,
                established=self.established,
                ja3=ja3(client) if client is not None else None,
                ja3s=ja3s(server) if server is not None else None,
                ja4=ja4(client) if client is not None else None,
            )
        )


def _is_tls13(version: int) -> bool:
    return version == 0x0304 or version >> 8 == 0x7F


def starts_like_tls(data: bytes, is_orig: bool) -> bool | None:
    """Content detection: a handshake record carrying a ClientHello (or a ServerHello)."""
    if len(data) < 6:
        if data[:1] != b"\x16" or (len(data) > 1 and data[1] != 3):
            return False
        return None
    if data[0] != HANDSHAKE or data[1] != 3 or data[2] > 4:
        return False
    return data[5] == (CLIENT_HELLO if is_orig else SERVER_HELLO)


__all__ = [
    "ClientHello",
    "ServerHello",
    "TlsAnalyzer",
    "ja3",
    "ja3_string",
    "ja3s",
    "ja3s_string",
    "ja4",
    "ja4_parts",
    "ja4_raw",
    "parse_client_hello",
    "parse_server_hello",
    "starts_like_tls",
]
