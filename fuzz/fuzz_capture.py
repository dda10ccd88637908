"""Fuzz target: the pcap/pcapng file reader on arbitrary file contents."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

from _harness import capture_files, run
from a2z.agent.capture import CaptureError, open_capture
from a2z.agent.capture.pcap_file import MAX_RECORD_BYTES

_scratch_fd: list[int] = []  # the reader maps a file, so the bytes go through one (unlinked)


def _scratch(data: bytes) -> str:
    """Write ``data`` to the scratch file; return a path that opens it."""
    if not _scratch_fd:
        fd, path = tempfile.mkstemp(prefix="a2z-fuzz-", suffix=".pcap")
        os.unlink(path)  # nothing left behind, however libFuzzer ends the process
        _scratch_fd.append(fd)
    fd = _scratch_fd[0]
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    return f"/proc/self/fd/{fd}"


def test_one_input(data: bytes) -> None:
    """Open and read the bytes as a capture: only CaptureError may escape, and only at open."""
    path = _scratch(data)
    try:
        reader = open_capture(path)
    except CaptureError:
        return
    with reader:
        for pkt in reader:
            assert len(pkt.data) <= MAX_RECORD_BYTES
            assert pkt.wirelen >= 0


def seeds() -> Iterator[bytes]:
    """Every capture in tests/data, whole and cut short."""
    for path in capture_files():
        data = path.read_bytes()
        yield data[:4096]
        if len(data) > 4096:
            yield data[: len(data) // 2]


if __name__ == "__main__":
    run(test_one_input, seeds)
