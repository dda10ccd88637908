"""Credentials sent in cleartext (ATT&CK T1552): HTTP Basic auth, passwords in URLs, FTP, Telnet.

Anyone on the path can read them. The alerts name the user where the record has one, never
the password (the http analyzer does not even keep it unless configured to).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from a2z.records import Alert, Conn, Ftp, Http, Record, Severity
from a2z.rules.detections.base import DetectionInfo, DetectionStats, make_alert

# Query parameters named for a password (``?password=``, ``?login_pass=``, ``?pwd=``) with a
# value. Tokens and API keys are left out: web APIs put short-lived ones in URLs by design.
_QUERY_SECRET = re.compile(
    r"(?:^|[?&;])(?:[a-z_]*pass(?:word|wd|phrase)?|pwd)=[^&;]",
    re.IGNORECASE,
)
# An absolute URL with user information: ``http://user:secret@host/`` (proxy requests).
_URL_USERINFO = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@?#\s]+:[^/@?#\s]*@", re.IGNORECASE)
# A Telnet session is established with payload both ways: the login prompt and its answer.
_ESTABLISHED = frozenset({"SF", "S1", "S2", "S3", "RSTO", "RSTR"})
# FTP's guest logins: the "password" is by convention an e-mail address, not a secret.
ANONYMOUS_USERS = frozenset({"anonymous", "ftp", "guest", "ftp_guest"})


@dataclass(frozen=True, slots=True)
class CleartextSettings:
    """Tunables of the cleartext credentials detection (docs/detections.md)."""

    telnet_ports: tuple[int, ...] = (23, 2323)  # TCP ports of Telnet (no content analyzer yet)
    query_secrets: bool = True  # also flag password-like query parameters in URLs


class CleartextCredentials:
    """A login or secret that crossed the network unencrypted."""

    info: ClassVar[DetectionInfo] = DetectionInfo(
        "a2z.cred.cleartext", "Cleartext credentials", Severity.MEDIUM, ("T1552", "T1040")
    )
    consumes: ClassVar[tuple[type[Record], ...]] = (Http, Ftp, Conn)

    def __init__(self, settings: CleartextSettings | None = None) -> None:
        self.settings = settings or CleartextSettings()
        self.stats = DetectionStats()

    def observe(self, record: Record) -> list[Alert]:
        """Alert on Basic auth or a secret in an http record, an FTP login, a Telnet session."""
        self.stats.records += 1
        if isinstance(record, Http):
            what = self._http(record)
        elif isinstance(record, Ftp):
            what = self._ftp(record)
        elif isinstance(record, Conn):
            what = self._telnet(record)
        else:
            return []
        if what is None:
            return []
        self.stats.alerts += 1
        kind, msg = what
        return [make_alert(self.info, record, msg=msg, key=(record.orig_h, record.resp_h, kind))]

    def _http(self, http: Http) -> tuple[str, str] | None:
        host = http.host or http.resp_h
        if http.username is not None:
            return "http-basic", f"HTTP Basic authentication as {http.username!r} to {host}"
        uri = http.uri or ""
        if _URL_USERINFO.match(uri):
            return "http-url", f"user and password in the URL of a request to {host}"
        if self.settings.query_secrets and "?" in uri and _QUERY_SECRET.search(uri):
            return "http-query", f"password-like query parameter in a request to {host}"
        return None

    def _ftp(self, ftp: Ftp) -> tuple[str, str] | None:
        if ftp.command != "PASS" or (ftp.user or "").lower() in ANONYMOUS_USERS:
            return None
        outcome = {230: "accepted", 530: "refused"}.get(ftp.reply_code or 0, "sent")
        return "ftp", (
            f"FTP password for {ftp.user!r} {outcome} in cleartext by {ftp.resp_h}:{ftp.resp_p}"
        )

    def _telnet(self, conn: Conn) -> tuple[str, str] | None:
        if (
            conn.proto != "tcp"
            or conn.resp_p not in self.settings.telnet_ports
            or conn.conn_state not in _ESTABLISHED
            or not conn.orig_bytes
            or not conn.resp_bytes
        ):
            return None
        return "telnet", (
            f"Telnet session to {conn.resp_h}:{conn.resp_p} "
            f"({conn.orig_bytes} bytes typed, login in cleartext)"
        )
