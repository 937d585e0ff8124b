"""The pooled transport over real sockets: connections spread over shards, kept alive, bounded.

The clients made in receiver.outbound raise httpx's errors, as a plain httpx client would: a
handler catching ``httpx.HTTPError`` (or ``httpx.ConnectError``, ``httpx.ReadTimeout``) sees every
network failure, over real sockets to peers that refuse, stall or hang up."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from receiver.errors import AddressRefused
from receiver.outbound import SHARD_CONNECTIONS, PooledTransport, guarded_client

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


class Counting:
    """An HTTP/1.1 peer that holds every request until ``expected`` are open at once (or a second
    passed), then answers them all; it counts connections and the most requests open at once."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.all_open = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:  # the client hung up
                break
            self.open += 1
            self.most_open = max(self.most_open, self.open)
            if self.open >= self.expected:
                self.all_open.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_open.wait(), 1.0)
            self.open -= 1
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()


@pytest.mark.anyio
async def test_requests_beyond_one_shard_are_in_flight_together() -> None:
    """The connections are split over pools of SHARD_CONNECTIONS; every one of them is used."""
    total = 3 * SHARD_CONNECTIONS - 2
    peer = Counting(expected=total)
    async for url in _serve(peer):
        transport = PooledTransport(
            ssl_context=ssl.create_default_context(),
            max_connections=total,
            max_keepalive_connections=total,
        )
        async with httpx.AsyncClient(transport=transport) as http:
            answers = await asyncio.gather(*(http.get(url) for _ in range(total)))
            assert [a.status_code for a in answers] == [200] * total
            assert peer.most_open == total
            assert peer.connections == total
            # Kept alive and reused: as many again make no new connection.
            peer.all_open.clear()
            await asyncio.gather(*(http.get(url) for _ in range(total)))
            assert peer.connections == total


@pytest.mark.anyio
async def test_no_more_connections_than_allowed() -> None:
    peer = Counting(expected=10**6)  # never all open: each request is held for the second
    async for url in _serve(peer):
        transport = PooledTransport(
            ssl_context=ssl.create_default_context(),
            max_connections=10,
            max_keepalive_connections=10,
        )
        async with httpx.AsyncClient(transport=transport, timeout=5) as http:
            await asyncio.gather(*(http.get(url) for _ in range(25)))
    assert peer.most_open == 10
    assert peer.connections == 10
