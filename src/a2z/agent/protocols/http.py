"""HTTP/1.x: request and response heads parsed from in-order stream bytes into Zeek http records.

:func:`parse_request_head` and :func:`parse_response_head` (compiled, in
:mod:`a2z.agent.protocols.http_head`) parse one header block; :class:`HttpAnalyzer` frames
messages (Content-Length, chunked, until close), pairs pipelined requests with responses in
order and counts body bytes.
"""

from __future__ import annotations

from collections import deque

from a2z.agent.protocols.analyzer import Analyzer, FlowIdent, ProtocolConfig
from a2z.agent.protocols.dns_message import escape_bytes
from a2z.agent.protocols.errors import ProtocolError
from a2z.agent.protocols.http_head import (
    METHODS,
    HttpHead,
    basic_credentials,
    parse_request_head,
    parse_response_head,
    starts_like_request,
)
from a2z.records import Http, Record

_MAX_CHUNK_LINE = 1024  # a chunk-size line longer than this is not HTTP

# Per-direction parser states.
_HEAD = 0  # collecting a header block
_LENGTH = 1  # body of known length
_CHUNK_SIZE = 2  # chunk-size line
_CHUNK_DATA = 3  # chunk data
_CHUNK_END = 4  # CRLF after chunk data
_TRAILER = 5  # trailer lines after the last chunk
_CLOSE = 6  # body delimited by the end of the connection
_TUNNEL = 7  # after CONNECT 2xx: no more HTTP
_FAILED = 8  # lost sync: ignore this direction


class _Transaction:
    """One request and its response being assembled (Zeek's HTTP::Info before it is logged)."""

    __slots__ = (
        "depth",
        "host",
        "method",
        "password",
        "referrer",
        "request_body_len",
        "response_body_len",
        "status_code",
        "status_msg",
        "ts",
        "uri",
        "user_agent",
        "username",
        "version",
    )

    def __init__(self, ts: float, depth: int) -> None:
        self.ts = ts
        self.depth = depth
        self.method: str | None = None
        self.host: str | None = None
        self.uri: str | None = None
        self.referrer: str | None = None
        self.version: str | None = None
        self.user_agent: str | None = None
        self.username: str | None = None
        self.password: str | None = None
        self.status_code: int | None = None
        self.status_msg: str | None = None
        self.request_body_len = 0
        self.response_body_len = 0


class _Side:
    """The message framer of one direction."""

    __slots__ = ("body", "buf", "remaining", "state", "tx")

    def __init__(self) -> None:
        self.state = _HEAD
        self.buf = bytearray()  # header block or chunk-size line being collected
        self.remaining = 0  # body or chunk bytes still expected
        self.body = 0  # body bytes of the current message
        self.tx: _Transaction | None = None  # the transaction this message belongs to


class HttpAnalyzer(Analyzer):
    """One flow's HTTP/1.x: heads parsed, bodies framed and counted, responses paired in order."""

    __slots__ = ("_depth", "_orig", "_pending", "_resp", "tunnel")

    service = "http"

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
        self._pending: deque[_Transaction] = deque()  # requests awaiting their final response
        self._depth = 0
        self.tunnel = False  # a CONNECT succeeded: what follows is another protocol

    # -- input ----------------------------------------------------------------------------------

    def data(self, ts: float, is_orig: bool, chunk: bytes) -> None:
        """In-order bytes of one direction."""
        side = self._orig if is_orig else self._resp
        pos = 0
        end = len(chunk)
        while pos < end:
            state = side.state
            if state == _HEAD:
                pos = self._head(ts, is_orig, side, chunk, pos)
            elif state == _LENGTH:
                take = min(side.remaining, end - pos)
                side.remaining -= take
                side.body += take
                pos += take
                if not side.remaining:
                    self._message_done(ts, is_orig, side)
            elif state == _CLOSE:
                side.body += end - pos
                pos = end
            elif state == _CHUNK_DATA:
                take = min(side.remaining, end - pos)
                side.remaining -= take
                side.body += take
                pos += take
                if not side.remaining:
                    side.state = _CHUNK_END
            elif state in (_CHUNK_SIZE, _CHUNK_END, _TRAILER):
                pos = self._chunk_line(ts, is_orig, side, chunk, pos)
            else:
                return  # tunnel or failed

    def gap(self, ts: float, is_orig: bool, size: int) -> None:
        """Bytes missing from one direction: skip them in a body, else stop parsing it."""
        side = self._orig if is_orig else self._resp
        self.weird("content_gap", f"{size} bytes")
        if side.state == _CLOSE:
            return
        if side.state in (_LENGTH, _CHUNK_DATA) and size <= side.remaining:
            side.remaining -= size  # the body loses bytes; the framing holds
            if not side.remaining:
                if side.state == _LENGTH:
                    self._message_done(ts, is_orig, side)
                else:
                    side.state = _CHUNK_END
            return
        if side.state == _HEAD and not side.buf:
            return  # between messages: resynchronise on the next head
        self._fail(ts, is_orig, side)

    def finish(self, ts: float) -> None:
        """Flow end: a body delimited by the close ends now; log everything still pending."""
        for is_orig, side in ((True, self._orig), (False, self._resp)):
            if side.state in (_CLOSE, _LENGTH, _CHUNK_DATA, _CHUNK_SIZE, _CHUNK_END, _TRAILER):
                self._message_done(ts, is_orig, side)
        if self._resp.tx is not None:
            self._log(self._resp.tx)
            self._resp.tx = None
        while self._pending:
            self._log(self._pending.popleft())
        self.done = True

    # -- heads ----------------------------------------------------------------------------------

    def _head(self, ts: float, is_orig: bool, side: _Side, chunk: bytes, pos: int) -> int:
        buf = side.buf
        if not buf:
            while pos < len(chunk) and chunk[pos] in b"\r\n":
                pos += 1  # stray line ends between messages (after a body, by some clients)
            if pos == len(chunk):
                return pos
        start = max(len(buf) - 3, 0)
        buf += chunk[pos:] if pos else chunk
        at = buf.find(b"\r\n\r\n", start)
        sep = 4
        alt = buf.find(b"\n\n", start)
        if alt >= 0 and (at < 0 or alt < at):
            at, sep = alt, 2
        if at < 0:
            if len(buf) > self.config.max_header_bytes:
                self.weird("HTTP_header_too_long", f"{len(buf)} bytes")
                self._fail(ts, is_orig, side)
            return len(chunk)
        consumed = len(chunk) - (len(buf) - (at + sep))  # where the head ends within ``chunk``
        block = bytes(buf[:at])
        buf.clear()
        try:
            if is_orig:
                self._request(ts, side, parse_request_head(block))
            else:
                self._response(ts, side, parse_response_head(block))
        except ProtocolError as exc:
            self.report(exc)
            self._fail(ts, is_orig, side)
            return len(chunk)
        return consumed

    def _request(self, ts: float, side: _Side, head: HttpHead) -> None:
        self.confirmed = True
        if len(self._pending) > self.config.max_pending_requests:
            self.weird("HTTP_excessive_pipelining", f"{len(self._pending)} requests")
            while self._pending:
                self._log(self._pending.popleft())
        self._depth += 1
        tx = _Transaction(ts, self._depth)
        tx.method, tx.uri, tx.version = head.method, head.uri, head.version
        for name, value in head.headers:
            if name == "HOST":
                tx.host = value
            elif name == "USER-AGENT":
                tx.user_agent = value
            elif name == "REFERER":
                tx.referrer = value
            elif name in ("AUTHORIZATION", "PROXY-AUTHORIZATION"):
                creds = basic_credentials(value)
                if creds is not None:
                    tx.username = creds[0]
                    if self.config.capture_password:
                        tx.password = creds[1]
        self._pending.append(tx)
        side.tx = tx
        side.body = 0
        length, chunked = _framing(head.headers)
        if chunked:
            side.state = _CHUNK_SIZE
        elif length:
            side.state, side.remaining = _LENGTH, length
        else:
            self._message_done(ts, True, side)

    def _response(self, ts: float, side: _Side, head: HttpHead) -> None:
        self.confirmed = True
        code = head.status_code if head.status_code is not None else 0
        tx = self._pending[0] if self._pending else None
        if tx is None:
            self.weird("HTTP_response_before_request")
            self._depth += 1
            tx = _Transaction(ts, self._depth)
            self._pending.append(tx)
        if tx.version is None:
            tx.version = head.version
        tx.status_code, tx.status_msg = code, head.status_msg
        side.tx = tx
        side.body = 0
        length, chunked = _framing(head.headers)
        if tx.method == "HEAD" or 100 <= code < 200 or code in (204, 304):
            self._message_done(ts, False, side)
        elif tx.method == "CONNECT" and 200 <= code < 300:
            self._message_done(ts, False, side)
            self.tunnel = True
            self._orig.state = self._resp.state = _TUNNEL
        elif chunked:
            side.state = _CHUNK_SIZE
        elif length is not None:
            side.state, side.remaining = _LENGTH, length
            if not length:
                self._message_done(ts, False, side)
        else:
            side.state = _CLOSE

    # -- bodies ---------------------------------------------------------------------------------

    def _chunk_line(self, ts: float, is_orig: bool, side: _Side, chunk: bytes, pos: int) -> int:
        newline = chunk.find(b"\n", pos)
        if newline < 0:
            side.buf += chunk[pos:]
            if len(side.buf) > _MAX_CHUNK_LINE:
                self.weird("HTTP_chunk_line_too_long", f"{len(side.buf)} bytes")
                self._fail(ts, is_orig, side)
            return len(chunk)
        side.buf += chunk[pos:newline]
        line = bytes(side.buf).rstrip(b"\r")
        side.buf.clear()
        state = side.state
        if state == _CHUNK_END:
            if not line:
                side.state = _CHUNK_SIZE
                return newline + 1
            self.weird("HTTP_chunk_missing_CRLF")  # read the line as the next chunk size
            state = _CHUNK_SIZE
        if state == _CHUNK_SIZE:
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                size = -1
            if size < 0:
                self.weird("HTTP_bad_chunk_size", escape_bytes(line[:20]))
                self._fail(ts, is_orig, side)
                return len(chunk)
            if size:
                side.state, side.remaining = _CHUNK_DATA, size
            else:
                side.state = _TRAILER
        elif not line:  # _TRAILER: the empty line ends the message
            self._message_done(ts, is_orig, side)
        return newline + 1

    def _message_done(self, ts: float, is_orig: bool, side: _Side) -> None:
        tx = side.tx
        side.state = _HEAD if side.state not in (_TUNNEL, _FAILED) else side.state
        side.remaining = 0
        if tx is None:
            return
        if is_orig:
            tx.request_body_len = side.body
            side.tx = None
            return
        tx.response_body_len = side.body
        side.tx = None
        if tx.status_code is not None and 100 <= tx.status_code < 200:
            return  # informational: the final response is still to come for this request
        if self._pending and self._pending[0] is tx:
            self._pending.popleft()
        if self._orig.tx is tx:
            tx.request_body_len = self._orig.body  # the request body is still running
        self._log(tx)

    def _fail(self, ts: float, is_orig: bool, side: _Side) -> None:
        side.buf.clear()
        side.state = _FAILED
        if not is_orig and side.tx is not None:
            tx = side.tx
            side.tx = None
            if self._pending and self._pending[0] is tx:
                self._pending.popleft()
            self._log(tx)
        if self._orig.state == _FAILED and self._resp.state == _FAILED:
            self.finish(ts)

    def _log(self, tx: _Transaction) -> None:
        ident = self.ident
        self.records.append(
            Http(
                ts=tx.ts,
                uid=ident.uid,
                orig_h=ident.orig_h,
                orig_p=ident.orig_p,
                resp_h=ident.resp_h,
                resp_p=ident.resp_p,
                trans_depth=tx.depth,
                method=tx.method,
                host=tx.host,
                uri=tx.uri,
                referrer=tx.referrer,
                version=tx.version,
                user_agent=tx.user_agent,
                request_body_len=tx.request_body_len,
                response_body_len=tx.response_body_len,
                status_code=tx.status_code,
                status_msg=tx.status_msg,
                username=tx.username,
                password=tx.password,
            )
        )


def _framing(headers: tuple[tuple[str, str], ...]) -> tuple[int | None, bool]:
    """(Content-Length or None, chunked) of a message; chunked wins, as RFC 9112 says."""
    length: int | None = None
    chunked = False
    for name, value in headers:
        if name == "TRANSFER-ENCODING":
            chunked = "chunked" in value.lower()
        elif name == "CONTENT-LENGTH":
            try:
                length = max(int(value.split(",")[0].strip()), 0)
            except ValueError:
                length = None
    return length, chunked


__all__ = [
    "METHODS",
    "HttpAnalyzer",
    "HttpHead",
    "basic_credentials",
    "parse_request_head",
    "parse_response_head",
    "starts_like_request",
]
