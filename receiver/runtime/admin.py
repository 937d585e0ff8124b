"""The admin listener: ``/healthz``, ``/readyz`` and ``/metrics`` on an address of their own
(``admin_listen``, 127.0.0.1:9464 for serve, ``worker.admin_listen``, 127.0.0.1:9465 for
``receiver worker``), never on the webhook port, which serves only ``/webhooks/...``.

It is plain HTTP, answers anyone who reaches it (bind it to loopback or a private address), and
is not behind the webhook port's connection gate or allowlist. ``admin_app`` takes the routes to
add beside the three (``extra``): the runtime assembles them, so a later piece (an operator
console) is one ``Mount`` more in that list. ``AdminServer`` serves an app with uvicorn on a
socket bound beforehand (``bind``: a port already taken is one configuration error at start-up,
not a traceback from inside the server) or on a Unix socket, in the event loop of the process it
watches: the scrape reads ingest's plain counters (``receiver.metrics``) on the thread that
writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from receiver import metrics
from receiver.config import parse_listen
from receiver.errors import ConfigError

# Whether the process is ready to serve: for serve, its store answers and ingest's latest commit
# did not fail; for a worker, its store answers.
Readiness = Callable[[], Awaitable[bool]]


def exposition() -> bytes:
    """This process's metrics in Prometheus' text format."""
    return generate_latest(metrics.REGISTRY)


def admin_app(
    ready: Readiness,
    *,
    retry_after_seconds: int = 5,
    metrics_text: Callable[[], Awaitable[bytes]] | None = None,
    extra: Sequence[BaseRoute] = (),
) -> Starlette:
    """``/healthz`` (the process answers), ``/readyz`` (``ready``), ``/metrics``
    (``metrics_text``, this process's own by default) and the ``extra`` routes and mounts."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if await ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse(
            {"status": "store unreachable or failing to commit"},
            status_code=503,
            headers={"Retry-After": str(retry_after_seconds)},
        )

    async def metrics_endpoint(request: Request) -> Response:
        body = await metrics_text() if metrics_text is not None else exposition()
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *extra,
        ]
    )


def bind(listen: str, origin: str, key: str = "admin_listen") -> socket.socket:
    """A TCP socket bound to ``listen`` (HOST:PORT); a ConfigError naming the file and key when
    it cannot be (a port in use, an address this host does not have)."""
    host, port = parse_listen(listen)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as error:
        raise ConfigError(f"{origin}: {key}: cannot listen on {listen}: {error}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise ConfigError(
            f"{origin}: {key}: cannot listen on {listen}: {error.strerror or error}"
        ) from None
    sock.set_inheritable(False)
    return sock


def listening_on(sock: socket.socket) -> str:
    """HOST:PORT a bound socket listens on (the port the system chose, for port 0)."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class AdminServer:
    """uvicorn serving ``app`` on ``sock`` (bound by ``bind``) or on the Unix socket ``uds``,
    inside the running event loop, for as long as ``serving`` lasts. No lifespan (the process's
    own app has it), no access log, and no signal handling: the process's own server or command
    decides when to stop, and stops this with it."""

    # A scrape in progress when the process stops gets this long to finish.
    GRACE_SECONDS = 2

    def __init__(
        self, app: Starlette, *, sock: socket.socket | None = None, uds: str | None = None
    ) -> None:
        if (sock is None) == (uds is None):
            raise ValueError("give a bound socket or a Unix socket path")
        self._sock = sock
        self._config = uvicorn.Config(
            app,
            uds=uds,
            http="h11",
            lifespan="off",
            proxy_headers=False,
            server_header=False,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=self.GRACE_SECONDS,
        )

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        config = self._config
        if not config.loaded:
            config.load()
        server = uvicorn.Server(config)
        # What Server.serve does before its startup, without taking the process's signals.
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[self._sock] if self._sock is not None else None)
        try:
            yield
        finally:
            await server.shutdown()


def run_in_thread(server: AdminServer) -> Callable[[], None]:
    """Serve ``server`` from a thread with an event loop of its own (the supervisor of
    ``serve --workers N``, whose main thread waits on its processes); the function returned
    stops it."""
    import threading

    started = threading.Event()
    holder: dict[str, asyncio.AbstractEventLoop | asyncio.Event] = {}

    async def run() -> None:
        stop = asyncio.Event()
        holder["loop"], holder["stop"] = asyncio.get_running_loop(), stop
        async with server.serving():
            started.set()
            await stop.wait()

    def target() -> None:
        try:
            asyncio.run(run())
        finally:
            started.set()

    thread = threading.Thread(target=target, name="admin-listener", daemon=True)
    thread.start()
    started.wait(timeout=30)

    def stop() -> None:
        loop, event = holder.get("loop"), holder.get("stop")
        if isinstance(loop, asyncio.AbstractEventLoop) and isinstance(event, asyncio.Event):
            with contextlib.suppress(RuntimeError):  # its loop is gone already
                loop.call_soon_threadsafe(event.set)
        thread.join(timeout=10)

    return stop
