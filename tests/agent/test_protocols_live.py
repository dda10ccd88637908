"""A capture made here and now: real curl against a local HTTP server and openssl s_server.

tcpdump records loopback traffic on two random high ports; curl fetches a page over plain
HTTP (with Basic auth and a custom User-Agent) and over TLS 1.3 and TLS 1.2 with SNI from
``openssl s_server`` (throwaway certificate in tmp_path). The replayed http and ssl records
are checked directly and against tshark on the same file. Every subprocess is time-bounded.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from a2z.agent.replay import iter_records
from a2z.records import Conn, Http, Ssl
from tests.agent.tshark_compare import compare_http, compare_tls

TOOLS = ("tcpdump", "curl", "openssl", "tshark")
STEP_TIMEOUT = 20.0  # seconds for any one tool run


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; .ci/run installs it")
    return path


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait_for_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    pytest.fail(f"nothing listens on 127.0.0.1:{port}")


@contextlib.contextmanager
def _running(args: list[str], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _start_tcpdump(path: Path, ports: list[int]) -> subprocess.Popen[bytes]:
    bpf = " or ".join(f"tcp port {p}" for p in ports)
    # Immediate mode and -U: each packet reaches the file at once, none wait in the ring
    # for a block timeout (and get lost when we stop tcpdump).
    args = [_tool("tcpdump"), "-i", "lo", "--immediate-mode", "-U", "-n", "-s", "0"]
    args += ["-w", str(path), bpf]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_listening(proc: subprocess.Popen[bytes], deadline: float) -> None:
    # tcpdump says "listening on lo" on stderr once the capture is armed.
    assert proc.stderr is not None
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            break
        chunk = os.read(proc.stderr.fileno(), 4096)
        seen += chunk
        if b"listening on" in seen:
            return
        if not chunk:
            pytest.fail(f"tcpdump exited with {proc.wait(timeout=5)}: {seen!r}")
    pytest.fail(f"tcpdump did not start listening: {seen!r}")


def _settle(path: Path, quiet: float = 0.5, limit: float = 5.0) -> None:
    """Wait until the capture file stops growing (the last FINs and ACKs are in)."""
    end = time.monotonic() + limit
    size = -1
    while time.monotonic() < end:
        now = path.stat().st_size if path.exists() else 0
        if now == size:
            return
        size = now
        time.sleep(quiet)


@pytest.mark.needs_tools
def test_loopback_capture_of_curl_http_and_tls_matches_tshark(tmp_path: Path) -> None:
    for tool in TOOLS:
        _tool(tool)
    http_port, tls_port = _free_ports(2)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("<h1>a2z</h1>\n" * 50)
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            _tool("openssl"),
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=live.a2z.test",
        ],
        check=True,
        capture_output=True,
        timeout=STEP_TIMEOUT,
    )
    capture = tmp_path / "live.pcap"
    deadline = time.monotonic() + STEP_TIMEOUT
    dump = _start_tcpdump(capture, [http_port, tls_port])
    try:
        _wait_listening(dump, deadline)
        web = [
            sys.executable,
            "-m",
            "http.server",
            str(http_port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(tmp_path / "www"),
        ]
        tls = [
            _tool("openssl"),
            "s_server",
            "-accept",
            str(tls_port),
            "-cert",
            str(cert),
            "-key",
            str(key),
            "-www",
            "-quiet",
        ]
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        with _running(web, **quiet), _running(tls, stdin=subprocess.DEVNULL, **quiet):
            _wait_for_port(http_port, deadline)
            _wait_for_port(tls_port, deadline)
            curl = [_tool("curl"), "-s", "-o", "/dev/null", "--max-time", "10"]
            runs = [
                [
                    *curl,
                    "-A",
                    "a2z-live/1.0",
                    "-u",
                    "alice:s3cret",
                    f"http://127.0.0.1:{http_port}/index.html?x=1",
                ],
                [*curl, "-A", "a2z-live/1.0", f"http://127.0.0.1:{http_port}/missing"],
                [
                    *curl,
                    "-k",
                    "--tlsv1.3",
                    "--resolve",
                    f"live.a2z.test:{tls_port}:127.0.0.1",
                    f"https://live.a2z.test:{tls_port}/",
                ],
                [
                    *curl,
                    "-k",
                    "--tlsv1.2",
                    "--tls-max",
                    "1.2",
                    "--resolve",
                    f"v12.a2z.test:{tls_port}:127.0.0.1",
                    f"https://v12.a2z.test:{tls_port}/",
                ],
            ]
            for run in runs:
                subprocess.run(run, check=True, timeout=STEP_TIMEOUT)
        _settle(capture)
    finally:
        dump.send_signal(signal.SIGINT)
        try:
            dump.wait(timeout=5)
        except subprocess.TimeoutExpired:
            dump.kill()
            dump.wait(timeout=5)
        if dump.stderr is not None:
            dump.stderr.close()

    records = list(iter_records(capture))
    http = sorted((r for r in records if isinstance(r, Http)), key=lambda r: r.ts)
    assert [(r.method, r.uri, r.status_code, r.user_agent) for r in http] == [
        ("GET", "/index.html?x=1", 200, "a2z-live/1.0"),
        ("GET", "/missing", 404, "a2z-live/1.0"),
    ]
    assert http[0].host == f"127.0.0.1:{http_port}"
    assert (http[0].username, http[0].password) == ("alice", None)
    assert http[0].response_body_len == len("<h1>a2z</h1>\n" * 50)
    ssl = sorted((r for r in records if isinstance(r, Ssl)), key=lambda r: r.ts)
    assert [(r.server_name, r.version, r.established) for r in ssl] == [
        ("live.a2z.test", "TLSv13", True),
        ("v12.a2z.test", "TLSv12", True),
    ]
    services = {r.resp_p: r.service for r in records if isinstance(r, Conn)}
    assert services == {http_port: "http", tls_port: "ssl"}

    # tshark on the same file, told which ports carry what (it goes by port, we by content).
    decode = ("-d", f"tcp.port=={http_port},http", "-d", f"tcp.port=={tls_port},tls")
    tally = compare_http(capture, records, decode)
    tally.merge(compare_tls(capture, records, decode))
    assert tally.diffs == []
    assert tally.total["http.uri"] == 2
    assert tally.total["ssl.ja3"] == 2
    assert tally.total["ssl.ja3s"] == 2
