"""Outbound safety: what the receiver fetches or sends reaches only public addresses, checked at
connect time.

A subscriber chooses the URL the dispatcher POSTs to, and a sender chooses the URL a handler
downloads (SINtegre's ``Uri``), so a careless check would let anyone make the receiver call its own
network (SSRF). Checking the hostname before the request is not enough: DNS can answer differently
a moment later (rebinding). So the check lives in the network backend: the host is resolved once,
every address it resolves to must be allowed, and the connection is opened to that checked address
(TLS still verifies the certificate against the hostname). The transport also refuses plain
``http://`` unless allowed, so a redirect cannot downgrade either; clients made here ignore proxy
variables, and every redirect they follow goes through the same checks, hop by hop.

A kernel module: the dispatcher and the handlers' ``Context`` both use it, and it imports nothing
of ours but the errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import select
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

import httpcore
import httpx

from receiver.errors import AddressRefused

__all__ = [
    "AddressPolicy",
    "AddressRefused",
    "GuardedBackend",
    "GuardedTransport",
    "KeptAliveBackend",
    "PooledTransport",
    "Resolver",
    "guarded_client",
    "outbound_ssl_context",
    "system_resolver",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

# Named even where ``is_global`` already excludes them, so the refusal says why.
_BLOCKED: list[tuple[str, str]] = [
    ("169.254.169.254/32", "the cloud metadata address"),
    ("100.64.0.0/10", "carrier-grade NAT (shared address space)"),
    ("0.0.0.0/8", "an unspecified address"),
    ("fc00::/7", "a unique local IPv6 address"),
]
_BLOCKED_NETS = [(ipaddress.ip_network(net), why) for net, why in _BLOCKED]


class AddressPolicy:
    """Which resolved addresses the sender may connect to."""

    def __init__(self, allowed_networks: Iterable[str] = ()) -> None:
        self.allowed = [ipaddress.ip_network(net.strip(), strict=False) for net in allowed_networks]

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` may not be reached, or None when it may."""
        if self._allowed(address):
            return None
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                # Python 3.11 does not call ::ffff:127.0.0.1 loopback; refuse the whole form.
                return f"{address} is an IPv4-mapped IPv6 address"
            embedded = address.sixtofour
            if embedded is not None and self.refusal(embedded) is not None:
                return f"{address} is a 6to4 address around {embedded}"
        for network, why in _BLOCKED_NETS:
            if address.version == network.version and address in network:
                return f"{address} is {why}"
        for flag, why in (
            ("is_loopback", "a loopback address"),
            ("is_unspecified", "an unspecified address"),
            ("is_link_local", "a link-local address"),
            ("is_multicast", "a multicast address"),
            ("is_reserved", "a reserved address"),
            ("is_private", "a private address"),
        ):
            if getattr(address, flag):
                return f"{address} is {why}"
        if not address.is_global:
            return f"{address} is not a public address"
        return None

    def _allowed(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(
            candidate.version == network.version and candidate in network
            for candidate in candidates
            for network in self.allowed
        )

    def check(self, host: str, addresses: Sequence[str]) -> list[str]:
        """The addresses to try, or AddressRefused if any of them is refused."""
        if not addresses:
            raise AddressRefused(f"{host} did not resolve to any address")
        for text in addresses:
            why = self.refusal(ipaddress.ip_address(text.split("%", 1)[0]))
            if why is not None:
                # One bad answer refuses them all: a name that also points inward is not trusted.
                raise AddressRefused(f"refused to connect to {host}: {why}")
        return list(addresses)


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


class KeptAliveBackend(httpcore.AsyncNetworkBackend):
    """httpcore's AnyIO backend, whose streams answer the pool's one frequent question cheaply.

    Before each request and after each response, httpcore's pool asks every idle connection
    whether its socket is readable (the server hung up); anyio answers by building all of the
    stream's attributes, getpeername() included, each time. With 16 connections to one endpoint
    that was 23 such questions per delivery and a third of the dispatcher's time (cProfile, 2,000
    deliveries), and 49 per notification in the Portal client of ``loadtests/e2e.py`` (98,000
    getpeername() calls for 2,000 Duimps fetched); the socket is looked up once instead.
    """

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _KeptAliveStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(path, timeout, socket_options)
        return _KeptAliveStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedBackend(KeptAliveBackend):
    """Resolves, checks, then connects to the checked address itself."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver = system_resolver) -> None:
        super().__init__()
        self._policy = policy
        self._resolve = resolver

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await asyncio.wait_for(self._resolve(host, port), timeout)
        except (OSError, TimeoutError) as error:
            raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from error
        last: Exception | None = None
        for address in self._policy.check(host, addresses):
            try:
                return await super().connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last = error
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("outbound calls do not connect to unix sockets")


class _KeptAliveStream(httpcore.AsyncNetworkStream):
    """An AnyIO stream whose socket is looked up once (see ``KeptAliveBackend``)."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
    ) -> httpcore.AsyncNetworkStream:
        return _KeptAliveStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "socket":
            return self._socket
        if info == "is_readable" and self._socket is not None:
            return _readable(self._socket)
        return self._inner.get_extra_info(info)


def _readable(sock: socket.socket) -> bool:
    """Whether a read would not block (data, or the b"" of a hang-up), as httpcore checks it."""
    if sock.fileno() < 0:
        return True
    poll = select.poll()
    poll.register(sock, select.POLLIN)
    return bool(poll.poll(0))


# httpcore's errors as httpx's, most specific first, as httpx's own transport raises them: a
# handler catching httpx.HTTPError (or httpx.ConnectError) must see one from every client we make.
_HTTPX_ERRORS: list[tuple[type[Exception], type[httpx.HTTPError]]] = [
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
]


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as error:
        for theirs, ours in _HTTPX_ERRORS:
            if isinstance(error, theirs):
                raise ours(str(error)) from error
        raise


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: Any, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        try:
            if hasattr(self._stream, "aclose"):
                with _httpx_errors():
                    await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:  # once, however often the response is closed
                release()


# The most connections one httpcore pool holds. Its bookkeeping on every request and response
# costs the square of its connections (a count of all of them for each idle one, in
# _assign_requests_to_connections): at 32 connections, 1,850 is_idle() calls per request and a
# quarter of loadtests/e2e.py's dispatcher process (cProfile, 4,000 deliveries). Shards of 8 keep
# that to 64 each, whatever the total.
SHARD_CONNECTIONS = 8


class PooledTransport(httpx.AsyncBaseTransport):
    """An httpx transport over httpcore connection pools on ``network_backend``, raising httpx's
    errors as httpx's own transport does (which cannot be given a network backend).

    ``max_connections`` are spread over pools of at most ``SHARD_CONNECTIONS``; each request goes
    to the pool with the fewest requests in flight, so the connections of all of them are used.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        max_connections: int = 100,
        max_keepalive_connections: int | None = None,
        keepalive_expiry: float = 5.0,
    ) -> None:
        # Kept alive by default, each for keepalive_expiry: a pool closes an idle connection as
        # soon as it holds more connections than it may keep (all of them, busy or not, are
        # counted), so a shard keeping fewer than it holds opened a connection, and made a TLS
        # handshake, for most requests (8,000 handshakes for 4,000 notifications in e2e).
        keepalive = (
            max_connections if max_keepalive_connections is None else max_keepalive_connections
        )
        shards = -(-max_connections // SHARD_CONNECTIONS)
        backend = network_backend or KeptAliveBackend()
        self._pools = [
            httpcore.AsyncConnectionPool(
                ssl_context=ssl_context,
                max_connections=_share(max_connections, shards, shard),
                max_keepalive_connections=max(1, _share(keepalive, shards, shard)),
                keepalive_expiry=keepalive_expiry,
                network_backend=backend,
            )
            for shard in range(shards)
        ]
        self._in_flight = [0] * shards

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        shard = min(range(len(self._pools)), key=self._in_flight.__getitem__)
        self._in_flight[shard] += 1
        try:
            with _httpx_errors():
                core_response = await self._pools[shard].handle_async_request(core_request)
        except BaseException:
            self._in_flight[shard] -= 1
            raise
        return httpx.Response(
            status_code=core_response.status,
            headers=core_response.headers,
            stream=_ResponseStream(core_response.stream, functools.partial(self._done, shard)),
            extensions=core_response.extensions,
        )

    def _done(self, shard: int) -> None:
        self._in_flight[shard] -= 1

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


def _share(total: int, shards: int, shard: int) -> int:
    """Shard ``shard``'s part of ``total`` split as evenly as it goes over ``shards``."""
    return total // shards + (shard < total % shards)


class GuardedTransport(PooledTransport):
    """A ``PooledTransport`` whose every connection goes through ``GuardedBackend``, and which
    sends nothing over plain ``http://`` unless ``allow_http``."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        verify: ssl.SSLContext | bool = True,
        resolver: Resolver = system_resolver,
        max_connections: int = 100,
        max_keepalive_connections: int | None = None,
        allow_http: bool = False,
    ) -> None:
        super().__init__(
            ssl_context=(
                verify if isinstance(verify, ssl.SSLContext) else outbound_ssl_context(verify)
            ),
            network_backend=GuardedBackend(policy, resolver),
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
        )
        self._allow_http = allow_http

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        scheme = request.url.scheme
        if scheme != "https" and not (scheme == "http" and self._allow_http):
            # Checked per request, so a redirect to http:// is refused like a first request.
            raise AddressRefused(
                f"refused to connect to {request.url.host}: {scheme}:// is not allowed "
                "(https only unless plain http is allowed)"
            )
        return await super().handle_async_request(request)


def outbound_ssl_context(verify: bool = True, extra_ca_file: str | None = None) -> ssl.SSLContext:
    """The public CAs (certifi), plus ``extra_ca_file`` when a local receiver has its own CA."""
    context = httpx.create_ssl_context(verify=verify, trust_env=False)
    if extra_ca_file is not None:
        context.load_verify_locations(cafile=extra_ca_file)
    # Receivers must offer TLS 1.2 or newer (the Portal's rule); so do we.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


DEFAULT_TIMEOUT = httpx.Timeout(30.0, read=120.0)


def guarded_client(
    allowed_networks: Iterable[str] = (),
    *,
    allow_http: bool = False,
    extra_ca_file: str | None = None,
    timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    max_redirects: int = 5,
    resolver: Resolver = system_resolver,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that reaches only public addresses (plus ``allowed_networks``),
    over https (plus http when ``allow_http``), ignoring proxy variables.

    Redirects are followed up to ``max_redirects`` (0: none), each hop through the same transport,
    so a redirect to an internal address or to plain http is refused like a first request would
    be: ``AddressRefused`` is raised from the request.
    """
    transport = GuardedTransport(
        AddressPolicy(allowed_networks),
        verify=outbound_ssl_context(extra_ca_file=extra_ca_file),
        resolver=resolver,
        allow_http=allow_http,
    )
    return httpx.AsyncClient(
        transport=transport,
        trust_env=False,
        follow_redirects=max_redirects > 0,
        max_redirects=max_redirects,
        timeout=timeout,
    )
