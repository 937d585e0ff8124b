"""Run the dispatcher (or any ASGI app) on uvicorn inside the current event loop.

``run_dispatcher(settings)`` is the programmatic way to get a dispatcher server on a free port::

    async with run_dispatcher(settings) as running:
        running.url                                   # "http://127.0.0.1:54321"
        await running.dispatcher.emit("duimp.registro", {"numero": "...", "versao": 1})

``make_app`` serves another app around the same dispatcher (``receiver.simulator.run_simulator``
mounts the Portal API stand-in beside the subscription API this way).

``serve_app`` does the same for any app (tests use it for receiving endpoints). The socket is bound
before uvicorn starts, so port 0 gives a free port with no race.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import httpx
import uvicorn
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from receiver.dispatcher.app import create_dispatcher_app
from receiver.dispatcher.config import DispatcherSettings
from receiver.dispatcher.sender import Dispatcher
from receiver.dispatcher.tls import server_ssl_context, tls_uvicorn_config
from receiver.store.tables import utcnow

_COMMON: dict[str, Any] = {
    "proxy_headers": False,
    "server_header": False,
    "log_config": None,
    "access_log": False,
    "timeout_keep_alive": 5,
}


# The app to serve around a dispatcher: its settings, the dispatcher, and the extra routes.
AppFactory = Callable[[DispatcherSettings, Dispatcher, Sequence[BaseRoute]], ASGIApp]


@dataclass(frozen=True, slots=True)
class RunningServer:
    url: str
    host: str
    port: int
    server: uvicorn.Server


@dataclass(frozen=True, slots=True)
class RunningDispatcher:
    url: str
    port: int
    dispatcher: Dispatcher
    app: ASGIApp
    server: RunningServer


def uvicorn_config(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    lifespan: Literal["auto", "on", "off"] = "on",
) -> uvicorn.Config:
    """TLS servers use the TLS-aware protocol, so client certificates reach the scope."""
    if ssl_context is not None:
        return tls_uvicorn_config(
            app, ssl_context, host=host, port=port, lifespan=lifespan, **_COMMON
        )
    return uvicorn.Config(app, host=host, port=port, http="h11", lifespan=lifespan, **_COMMON)


def dispatcher_ssl_context(settings: DispatcherSettings) -> ssl.SSLContext | None:
    """Server TLS from the settings; client certificates are optional so token clients still work."""
    if settings.tls_cert_file is None:
        return None
    return server_ssl_context(
        settings.tls_cert_file,
        settings.tls_key_file,
        client_ca_file=settings.tls_ca_file,
        client_certs="optional" if settings.tls_ca_file is not None else "none",
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    # proto must say TCP: asyncio turns Nagle off (TCP_NODELAY) only on sockets that do, and
    # with Nagle on, a response written as headers then body waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


@contextlib.asynccontextmanager
async def serve_app(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    url_host: str | None = None,
) -> AsyncIterator[RunningServer]:
    """Serve ``app`` (its lifespan is not run: start what it needs first) until the block ends.

    ``url_host`` names the host in ``url`` (a certificate's name instead of the address).
    """
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    config = uvicorn_config(
        app, host=host, port=bound_port, ssl_context=ssl_context, lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"uvicorn-{bound_port}")
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError(f"uvicorn stopped before serving on {host}:{bound_port}")
            await asyncio.sleep(0.01)
        scheme = "https" if ssl_context is not None else "http"
        shown = url_host or (f"[{host}]" if ":" in host else host)
        yield RunningServer(f"{scheme}://{shown}:{bound_port}", host, bound_port, server)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=10)
        sock.close()


@contextlib.asynccontextmanager
async def run_dispatcher(
    settings: DispatcherSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    extra_routes: Sequence[BaseRoute] = (),
    transport: httpx.AsyncBaseTransport | None = None,
    verify: ssl.SSLContext | bool | None = None,
    ssl_context: ssl.SSLContext | None = None,
    clock: Callable[[], datetime] = utcnow,
    make_app: AppFactory | None = None,
) -> AsyncIterator[RunningDispatcher]:
    """The dispatcher served on ``host:port`` (0: a free port): its subscription API, or the app
    ``make_app`` builds around it.

    TLS comes from ``ssl_context``, else from ``settings.tls_*``, else plain HTTP.
    ``clock`` is what automatic cancellation judges by (tests move it).
    """
    dispatcher = Dispatcher(settings, transport=transport, verify=verify, clock=clock)
    app: ASGIApp
    if make_app is None:
        app = create_dispatcher_app(settings, dispatcher, extra_routes=extra_routes)
    else:
        app = make_app(settings, dispatcher, extra_routes)
    if ssl_context is None:
        ssl_context = dispatcher_ssl_context(settings)
    async with (
        dispatcher,
        serve_app(app, host=host, port=port, ssl_context=ssl_context) as server,
    ):
        yield RunningDispatcher(server.url, server.port, dispatcher, app, server)
