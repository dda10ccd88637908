"""The API's HTTP protocol turns Nagle's algorithm off on every connection it serves.

uvicorn's worker processes get a listening socket made as ``socket.socket(AF_INET)``
(``proto`` 0), on which asyncio leaves Nagle on; a response written as headers then body then
waited for the client's delayed ACK: 44 ms a request with ``--workers 2`` (ADR 0025).
"""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from a2z.server.http_protocol import HTTP_PROTOCOL


async def _app(scope: object, receive: object, send: object) -> None:  # never called
    raise AssertionError("no request is sent")


async def _nodelay_of_accepted(protocol: str) -> int:
    """TCP_NODELAY of a connection the server accepted through ``protocol``, on a listening
    socket made as uvicorn's workers get theirs."""
    config = uvicorn.Config(_app, http=protocol, loop="asyncio", lifespan="off")
    config.load()
    state = ServerState()
    listener = socket.socket(socket.AF_INET)  # proto 0, as uvicorn's bind_socket makes it
    listener.bind(("127.0.0.1", 0))
    assert listener.proto == 0
    server = await asyncio.get_running_loop().create_server(
        lambda: config.http_protocol_class(config=config, server_state=state, app_state={}),  # type: ignore[call-arg]
        sock=listener,
    )
    try:
        _reader, writer = await asyncio.open_connection(*listener.getsockname())
        for _ in range(100):  # bounded: the accept is one loop turn away
            if state.connections:
                break
            await asyncio.sleep(0.01)
        (served,) = state.connections
        sock = served.transport.get_extra_info("socket")  # type: ignore[union-attr]
        value: int = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        writer.close()
        await writer.wait_closed()
        return value
    finally:
        server.close()
        await server.wait_closed()


async def test_connections_served_by_workers_have_nagle_off() -> None:
    assert await _nodelay_of_accepted(HTTP_PROTOCOL) != 0


async def test_uvicorns_own_protocol_leaves_nagle_on_there() -> None:
    """Why the protocol exists: should uvicorn or asyncio start setting it, this fails and
    the subclass can go."""
    plain = f"{HttpToolsProtocol.__module__}:{HttpToolsProtocol.__name__}"
    if await _nodelay_of_accepted(plain) != 0:
        pytest.fail("uvicorn now turns Nagle off itself: remove a2z.server.http_protocol")
