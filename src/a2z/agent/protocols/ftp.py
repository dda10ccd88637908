"""FTP control channel: command lines and replies paired into Zeek-style ftp records.

Only what the cleartext-credential detection and an analyst need: the login (USER, PASS with
its argument hidden) and the commands Zeek logs by default (transfers, deletions, data
channel set-up), each with its final reply. Passwords never leave the analyzer.
"""

from __future__ import annotations

from collections import deque

from a2z.agent.protocols.analyzer import Analyzer, FlowIdent, ProtocolConfig
from a2z.agent.protocols.dns import escape_bytes
from a2z.agent.protocols.errors import ProtocolError
from a2z.records import Ftp, Record

LOGGED = frozenset(
    {"USER", "PASS", "ACCT", "APPE", "DELE", "RETR", "STOR", "STOU", "PORT", "PASV", "EPRT",
     "EPSV"}
)  # fmt: skip
"""Commands that become records: the login, plus Zeek's ``FTP::logged_commands``."""

FIRST_COMMANDS = (b"USER ", b"AUTH ", b"FEAT", b"SYST", b"OPTS ", b"CLNT ", b"HOST ")
"""What an FTP client sends first after the greeting (case-insensitive)."""

MAX_LINE = 2048  # a control line longer than this is not FTP (RFC 959 lines are short)
MAX_ARG = 256  # characters of an argument kept in the record
HIDDEN = "<hidden>"


def starts_like_greeting(data: bytes) -> bool:
    """A server's first bytes that could open an FTP session (SMTP greets the same way)."""
    return data[:3] == b"220" and data[3:4] in (b" ", b"-", b"")


def starts_like_client(data: bytes) -> bool | None:
    """A client's first command: True, False, or None when more bytes are needed."""
    head = data[:5].upper()
    if len(head) < 5 and any(c.startswith(head) for c in FIRST_COMMANDS):
        return None  # could still become one
    return any(head.startswith(c) for c in FIRST_COMMANDS)


class FtpAnalyzer(Analyzer):
    """One FTP control connection: commands queued, paired with final replies in order."""

    __slots__ = ("_buf", "_greeted", "_multi", "_pending", "_user")

    service = "ftp"

    def __init__(
        self,
        ident: FlowIdent,
        config: ProtocolConfig,
        records: list[Record] | None = None,
        weirds: list[ProtocolError] | None = None,
    ) -> None:
        super().__init__(ident, config, records, weirds)
        self._buf = (bytearray(), bytearray())  # partial line per direction (index: is_orig)
        self._pending: deque[tuple[float, str, str | None]] = deque()  # (ts, command, arg)
        self._user: str | None = None
        self._greeted = False
        self._multi: bytes | None = None  # code of a multi-line reply in progress

    def data(self, ts: float, is_orig: bool, chunk: bytes) -> None:
        """In-order bytes of one direction, split into lines."""
        buf = self._buf[is_orig]
        buf += chunk
        while (end := buf.find(b"\n")) >= 0:
            line = bytes(buf[:end]).rstrip(b"\r")
            del buf[: end + 1]
            if is_orig:
                self._command(ts, line)
            else:
                self._reply(line)
            if self.done:
                return
        if len(buf) > MAX_LINE:
            self.weird("ftp_line_too_long", f"{len(buf)} bytes without a line end")
            self._stop(ts)

    def gap(self, ts: float, is_orig: bool, size: int) -> None:
        """Missing bytes: the line framing is lost, so stop here."""
        self.weird("content_gap", f"{size} bytes")
        self._stop(ts)

    def finish(self, ts: float) -> None:
        """Flow end: commands still awaiting a reply are logged without one."""
        self._stop(ts)

    def _stop(self, ts: float) -> None:
        while self._pending:
            self._log(*self._pending.popleft(), None, None)
        self.done = True

    def _command(self, ts: float, line: bytes) -> None:
        verb, _, raw_arg = line.strip().partition(b" ")
        command = verb.decode("ascii", "replace").upper()
        if not command.isalpha() or len(command) > 4:
            self.weird("ftp_bad_command", escape_bytes(line[:40]))
            return
        arg: str | None = escape_bytes(raw_arg)[:MAX_ARG] if raw_arg else None
        if command == "USER":
            self._user = arg
        elif command == "PASS":
            arg = HIDDEN  # the one thing an FTP record must never carry
        if len(self._pending) >= self.config.max_pending_requests:
            self.weird("ftp_too_many_pending_commands")
            self._log(*self._pending.popleft(), None, None)
        self._pending.append((ts, command, arg))

    def _reply(self, line: bytes) -> None:
        code = line[:3]
        if self._multi is not None:  # inside "123-..." until "123 ..."
            if code == self._multi and line[3:4] != b"-":
                self._multi = None
                self._final(int(code), line[4:])
            return
        if len(code) < 3 or not code.isdigit():
            self.weird("ftp_bad_reply", escape_bytes(line[:40]))
            return
        if line[3:4] == b"-":
            self._multi = code
            return
        self._final(int(code), line[4:])

    def _final(self, code: int, text: bytes) -> None:
        self.confirmed = True
        if not self._greeted:
            self._greeted = True
            if code in (120, 220, 421):  # the greeting answers no command
                return
        if code < 200 or not self._pending:  # preliminary (1xx), or unsolicited
            return
        ts, command, arg = self._pending.popleft()
        self._log(ts, command, arg, code, escape_bytes(text)[:MAX_ARG])

    def _log(
        self, ts: float, command: str, arg: str | None, code: int | None, msg: str | None
    ) -> None:
        if command not in LOGGED:
            return
        ident = self.ident
        self.records.append(
            Ftp(
                ts=ts,
                uid=ident.uid,
                orig_h=ident.orig_h,
                orig_p=ident.orig_p,
                resp_h=ident.resp_h,
                resp_p=ident.resp_p,
                user=arg if command == "USER" else self._user,
                command=command,
                arg=arg,
                reply_code=code,
                reply_msg=msg,
            )
        )
