"""The ingest app: a pure-ASGI front that takes the webhook POSTs itself and hands everything
else, lifespan included, to a plain Starlette app.

``ReceiverApp`` is a plain class holding the inner app, as Starlette's own middleware are
(``starlette/middleware/trustedhost.py``): a ``POST /webhooks/{source}[/{event}]`` goes straight
to the ``IngestEndpoint``, skipping the middleware stack and the route-by-route regex match,
which cost about a third of a bare Starlette request; it is the only hot path. The inner app has
the lifespan (the store, the background services) and only the webhook routes, so everything
else about those paths is answered as Starlette answers it: 405 for a GET, a redirect for a
trailing slash, 404 for any other path (``/metrics``, ``/healthz`` and ``/readyz`` included:
they are on the admin listener, ``receiver.runtime.admin``). An exception in the endpoint
becomes a 500 from uvicorn instead of from the middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from receiver.config import Settings
from receiver.ingest.allowlist import Allowlist
from receiver.ingest.endpoint import IngestEndpoint
from receiver.store import Store

log = logging.getLogger("receiver.ingest")

# How long serve waits for its writer process before listening (it takes about a second).
WRITER_START_SECONDS = 30.0

# Something to run beside ingest for the life of the app (the handler worker, the Portal watch).
BackgroundService = Callable[[], contextlib.AbstractAsyncContextManager[Any]]


def webhook_params(path: str) -> dict[str, str] | None:
    """The path parameters of ``/webhooks/{source}`` or ``/webhooks/{source}/{event}``, as
    Starlette's routes would match them (no empty segment, no further slash), else None."""
    if not path.startswith("/webhooks/"):
        return None
    source, slash, event = path[10:].partition("/")
    if not source:
        return None
    if not slash:
        return {"source": source}
    if not event or "/" in event:
        return None
    return {"source": source, "event": event}


class ReceiverApp:
    """The webhook POSTs to ``ingest``; everything else to ``app``.

    ``state`` is the inner app's: ``store``, ``settings`` and ``ingest`` (whose ``reload`` a
    SIGHUP calls).
    """

    def __init__(self, ingest: IngestEndpoint, app: ASGIApp, state: State) -> None:
        self.ingest = ingest
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            params = webhook_params(scope["path"])
            if params is not None:
                scope["path_params"] = params
                await self.ingest(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    settings: Settings,
    store: Store | None = None,
    allowlist: Allowlist | None = None,
    background: Sequence[BackgroundService] = (),
) -> ReceiverApp:
    """The ingest app. ``background`` services (the admin listener, the in-process worker...) run
    in its lifespan, started in order once the store is, stopped in reverse."""
    store = store if store is not None else Store.from_settings(settings)
    allowlist = allowlist if allowlist is not None else Allowlist.load(settings.allowlist)
    ingest = IngestEndpoint(settings, allowlist, store)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Never DDL here: the runtime role has no such rights (``receiver db upgrade`` does it).
        await asyncio.to_thread(store.check_schema)
        store.start()
        # Before listening: the first requests are not the ones that wait for the writer.
        if not await store.until_started(WRITER_START_SECONDS):
            log.warning(
                "the writer process has not started within %.0f s; serving anyway (requests "
                "answer 503 until it has)",
                WRITER_START_SECONDS,
            )
        async with contextlib.AsyncExitStack() as stack:
            for service in background:
                await stack.enter_async_context(service())
            yield
        await asyncio.to_thread(store.close)

    inner = Starlette(
        routes=[
            Route("/webhooks/{source}", ingest, methods=["POST"]),
            Route("/webhooks/{source}/{event}", ingest, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    inner.state.store = store
    inner.state.settings = settings
    inner.state.ingest = ingest
    return ReceiverApp(ingest, inner, inner.state)
