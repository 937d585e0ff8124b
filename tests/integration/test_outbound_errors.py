"""The clients made in receiver.outbound raise httpx's errors, as a plain httpx client would: a
handler catching ``httpx.HTTPError`` (or ``httpx.ConnectError``, ``httpx.ReadTimeout``) sees every
network failure, over real sockets to peers that refuse, stall or hang up."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from receiver.errors import AddressRefused
from receiver.outbound import guarded_client

LOOPBACK = ["127.0.0.1/32"]
Peer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(peer: Peer) -> AsyncIterator[str]:
    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.anyio
async def test_a_refused_connection_is_httpx_connect_error() -> None:
    async with guarded_client(LOOPBACK, allow_http=True) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{_closed_port()}/")


@pytest.mark.anyio
async def test_a_peer_that_never_answers_is_httpx_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await reader.read()  # nothing answered until the client gives up and hangs up
        writer.close()

    async for url in _serve(silent):
        async with guarded_client(LOOPBACK, allow_http=True, timeout=0.2) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(url)


@pytest.mark.anyio
async def test_a_hang_up_in_the_middle_of_the_body_is_an_httpx_error() -> None:
    async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nonly this")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async for url in _serve(cut_short):
        async with guarded_client(LOOPBACK, allow_http=True) as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(url)


@pytest.mark.anyio
async def test_a_refused_address_stays_address_refused() -> None:
    """The guard's own refusal is not a network error to retry: it keeps its type."""
    async with guarded_client(allow_http=True) as http:
        with pytest.raises(AddressRefused):
            await http.get(f"http://127.0.0.1:{_closed_port()}/")
