"""FTP control channel: content detection, command/reply pairing, passwords never logged."""

from __future__ import annotations

import pytest

from a2z.agent.protocols import FlowIdent, ProtocolConfig, detect_tcp
from a2z.agent.protocols.ftp import FtpAnalyzer
from a2z.records import Ftp

IDENT = FlowIdent("CftpTest001", "10.0.0.1", 40000, "10.0.0.2", 2121)


def analyzer() -> FtpAnalyzer:
    return FtpAnalyzer(IDENT, ProtocolConfig())


def ftp_records(a: FtpAnalyzer) -> list[Ftp]:
    return [r for r in a.records if isinstance(r, Ftp)]


def test_login_and_transfer_become_records_with_the_password_hidden() -> None:
    a = analyzer()
    a.data(1.0, False, b"220-Welcome\r\n220 lab ready\r\n")
    a.data(1.1, True, b"USER alice\r\n")
    a.data(1.2, False, b"331 Password required\r\n")
    a.data(1.3, True, b"PASS correct-horse\r\nSYST\r\nRETR /etc/motd\r\n")
    a.data(1.4, False, b"230 Logged in\r\n215 UNIX\r\n150 Opening\r\n226 Done\r\n")
    a.finish(2.0)
    recs = ftp_records(a)
    assert [(r.command, r.arg, r.reply_code, r.user) for r in recs] == [
        ("USER", "alice", 331, "alice"),
        ("PASS", "<hidden>", 230, "alice"),
        ("RETR", "/etc/motd", 226, "alice"),  # SYST is not logged; 150 is preliminary
    ]
    assert "correct-horse" not in repr(a.records)
    assert a.confirmed
    assert not a.weirds


def test_command_fed_before_the_greeting_still_pairs_with_its_reply() -> None:
    """The session replays the probes client side first: the greeting must not answer USER."""
    a = analyzer()
    a.data(1.0, True, b"USER bob\r\n")
    a.data(1.0, False, b"220 ready\r\n331 Password required\r\n")
    a.finish(2.0)
    assert [(r.command, r.reply_code) for r in ftp_records(a)] == [("USER", 331)]


def test_unanswered_commands_are_logged_at_flow_end() -> None:
    a = analyzer()
    a.data(1.0, False, b"220 ready\r\n")
    a.data(1.1, True, b"USER carol\r\nPASS x\r\n")
    a.finish(3.0)
    assert [(r.command, r.reply_code) for r in ftp_records(a)] == [("USER", None), ("PASS", None)]


def test_overlong_line_stops_the_analyzer_with_a_weird() -> None:
    a = analyzer()
    a.data(1.0, False, b"220 ready\r\n")
    a.data(1.1, True, b"USER " + b"x" * 5000)
    assert a.done
    assert [w.name for w in a.weirds] == ["ftp_line_too_long"]


@pytest.mark.parametrize(
    ("client", "server", "verdict"),
    [
        (b"USER alice\r\n", b"220 FTP ready\r\n", "ftp"),
        (b"AUTH TLS\r\n", b"220-Welcome\r\n", "ftp"),
        (b"US", b"220 FTP ready\r\n", None),  # too few bytes yet
        (b"EHLO mail.example\r\n", b"220 mx ESMTP\r\n", False),  # SMTP, not FTP
        # POP3-like, without an FTP greeting: not FTP (undecided only as DNS over TCP)
        (b"USER alice\r\n", b"", None),
    ],
)
def test_detect_tcp_tells_ftp_by_greeting_and_first_command(
    client: bytes, server: bytes, verdict: str | bool | None
) -> None:
    assert detect_tcp(client, True, (40000, 2121), server) == verdict


def test_detect_tcp_waits_on_a_greeting() -> None:
    assert detect_tcp(b"220 FTP ready\r\n", False, (40000, 21)) is None
