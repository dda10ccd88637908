"""The HTTP/1.1 protocol the API serves with: uvicorn's httptools protocol, with Nagle off.

asyncio turns Nagle's algorithm off (``TCP_NODELAY``) only for sockets whose ``proto`` is
``IPPROTO_TCP``. uvicorn's worker processes (``--workers 2`` and up) serve a listening socket
made with ``socket.socket(family)``, whose ``proto`` is 0, and the connections accepted from it
inherit that: Nagle stayed on, and a response written in two parts (headers, then body) waited
for the client's delayed ACK — every request took 44 ms (docs/adr/0025-api-event-loop.md).
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# For uvicorn's ``http=`` setting: an import string survives the spawn of worker processes.
HTTP_PROTOCOL = f"{__name__}:NoDelayHttpToolsProtocol"


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; every TCP connection gets ``TCP_NODELAY`` first."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
