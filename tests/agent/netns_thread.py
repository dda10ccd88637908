"""Run a piece of code in a network namespace from one thread of the test process.

The network namespace is a per-thread attribute on Linux: a thread that ``setns``-es into a
namespace creates its sockets there, and a socket stays in the namespace it was made in. So a
test can open a capture on a veth inside a namespace and then use it from anywhere in the
process, while the rest of the process (server, database) stays on the host's loopback.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@contextmanager
def thread_in_netns(name: str) -> Iterator[None]:
    """The calling thread is in namespace ``name`` (from ``ip netns add``) for the duration."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)
