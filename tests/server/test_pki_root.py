"""The gateway's TLS credentials in the data directory, as several server processes share it."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

from a2z.server.pki.root import load_or_create_root


def test_processes_reissuing_the_gateway_certificate_never_break_a_starting_gateway(
    tmp_path: Path,
) -> None:
    """Every server process (``--workers N``) issues the gateway certificate at start while
    another may be loading it: a gateway must always load a whole, matching key and chain."""
    secret = secrets.token_bytes(32)
    directory = tmp_path / "pki"
    root = load_or_create_root(directory, secret, ["localhost"])
    errors: list[BaseException] = []
    stop = threading.Event()

    def reissue() -> None:
        while not stop.is_set():
            load_or_create_root(directory, secret, ["localhost"])

    writers = [threading.Thread(target=reissue) for _ in range(2)]
    for writer in writers:
        writer.start()
    try:
        for _ in range(300):
            try:
                root.server_context()
            except Exception as exc:  # ssl.SSLError with torn or mismatched files
                errors.append(exc)
    finally:
        stop.set()
        for writer in writers:
            writer.join(30)
    assert errors == []
    assert [p.name for p in directory.iterdir() if p.name.startswith(".")] == []  # no leftovers
    assert (directory / "gateway.pem").stat().st_mode & 0o777 == 0o600  # it holds the key
