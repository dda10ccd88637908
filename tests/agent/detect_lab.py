"""Tiny servers and clients for the detection lab (stdlib only), run in a test's namespaces.

``dns ADDR``: answers every DNS query NXDOMAIN (the DGA and tunnel lookups need an answer, not
a real zone). ``telnet ADDR``: a Telnet-like login dialogue on tcp/23. ``telnet-login ADDR``:
a client that logs in to it. ``ftp ADDR``: an FTP control channel on tcp/21 that accepts any
login (``ftp-login ADDR`` logs in with Python's ftplib). ``beacon ADDR PORT COUNT INTERVAL``: a client that makes COUNT
HTTP requests, each on a new connection, INTERVAL seconds apart (an implant's check-ins).
"""

from __future__ import annotations

import ftplib
import socket
import sys
import threading
import time


def serve_dns(addr: str) -> None:
    """Reply NXDOMAIN to every query, echoing its id and question."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, 53))
    while True:
        query, peer = sock.recvfrom(4096)
        if len(query) < 12:
            continue
        end = 12
        while end < len(query) and query[end] != 0:
            end += query[end] + 1
        question = query[12 : end + 5]
        # QR, opcode 0, RD copied, RA, rcode 3 (NXDOMAIN); one question, no answers.
        flags = bytes([0x80 | (query[2] & 0x01), 0x83])
        sock.sendto(query[:2] + flags + b"\x00\x01\x00\x00\x00\x00\x00\x00" + question, peer)


def _telnet_session(conn: socket.socket) -> None:
    with conn:
        conn.settimeout(5)
        conn.sendall(b"lab login: ")
        conn.recv(256)
        conn.sendall(b"Password: ")
        conn.recv(256)
        conn.sendall(b"\r\nLogin incorrect\r\n")


def serve_telnet(addr: str) -> None:
    """Accept Telnet clients on port 23 and walk each through a login dialogue."""
    server = socket.create_server((addr, 23))
    while True:
        conn, _peer = server.accept()
        threading.Thread(target=_telnet_session, args=(conn,), daemon=True).start()


def _ftp_session(conn: socket.socket) -> None:
    replies = {b"USER": b"331 Password required", b"PASS": b"230 Logged in", b"SYST": b"215 UNIX"}
    with conn, conn.makefile("rb") as lines:
        conn.settimeout(5)
        conn.sendall(b"220 lab FTP server ready\r\n")
        for line in lines:
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb == b"QUIT":
                conn.sendall(b"221 Goodbye\r\n")
                return
            conn.sendall(replies.get(verb, b"502 Not implemented") + b"\r\n")


def serve_ftp(addr: str) -> None:
    """Accept FTP clients on port 21: any user and password log in, nothing else works."""
    server = socket.create_server((addr, 21))
    while True:
        conn, _peer = server.accept()
        threading.Thread(target=_ftp_session, args=(conn,), daemon=True).start()


def ftp_login(addr: str) -> None:
    """Log in with ftplib (USER, PASS in cleartext), then QUIT."""
    with ftplib.FTP(addr, timeout=5) as ftp:
        ftp.login("alice", "correct-horse")


def telnet_login(addr: str) -> None:
    """Log in to the Telnet server with a user and password (sent in cleartext)."""
    with socket.create_connection((addr, 23), timeout=5) as conn:
        conn.recv(256)
        conn.sendall(b"root\r\n")
        conn.recv(256)
        conn.sendall(b"toor\r\n")
        conn.recv(256)


def beacon(addr: str, port: str, count: str, interval: str) -> None:
    """Check in ``count`` times, ``interval`` seconds apart, each on a new connection."""
    start = time.monotonic()
    for i in range(int(count)):
        time.sleep(max(0.0, start + i * float(interval) - time.monotonic()))
        with socket.create_connection((addr, int(port)), timeout=5) as conn:
            conn.sendall(f"GET /check?seq={i} HTTP/1.0\r\nHost: {addr}\r\n\r\n".encode())
            while conn.recv(4096):
                pass


if __name__ == "__main__":
    commands = {
        "dns": serve_dns,
        "telnet": serve_telnet,
        "ftp": serve_ftp,
        "ftp-login": ftp_login,
        "telnet-login": telnet_login,
        "beacon": beacon,
    }
    commands[sys.argv[1]](*sys.argv[2:])
