"""The dispatcher's Starlette app: the subscription API, its OpenAPI document, health.

``create_dispatcher_app`` is the dispatcher (plus any ``extra_routes``); ``session_identity`` lets
another part identify clients too (``receiver.simulator.app.create_simulator_app`` mounts the
Portal API stand-in beside it, whose sessions identify clients as the real Portal's do).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Sequence

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from receiver.dispatcher.api import SubscriptionAPI
from receiver.dispatcher.config import DispatcherSettings
from receiver.dispatcher.identity import ClientIdentifier, SessionLookup
from receiver.dispatcher.openapi import OPENAPI_PATH, openapi_document
from receiver.dispatcher.sender import Dispatcher


def create_dispatcher_app(
    settings: DispatcherSettings,
    dispatcher: Dispatcher | None = None,
    *,
    extra_routes: Sequence[BaseRoute] = (),
    session_identity: SessionLookup | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    verify: ssl.SSLContext | bool | None = None,
    owns_dispatcher: bool | None = None,
) -> Starlette:
    """The dispatcher app; its lifespan starts the sender (and closes it if it made it, or
    ``owns_dispatcher`` says so).

    ``app.state.dispatcher`` is the ``Dispatcher``: ``await app.state.dispatcher.emit(...)``.
    """
    owned = dispatcher is None if owns_dispatcher is None else owns_dispatcher
    if dispatcher is None:
        dispatcher = Dispatcher(settings, transport=transport, verify=verify)
    running = dispatcher
    identifier = ClientIdentifier(settings.clients, session_identity)
    api = SubscriptionAPI(running, identifier)
    document = openapi_document()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await running.start()
        try:
            yield
        finally:
            if owned:
                await running.close()

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            *api.routes(),
            Route(OPENAPI_PATH, openapi, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            *extra_routes,
        ],
        lifespan=lifespan,
    )
    app.state.dispatcher = running
    app.state.settings = settings
    return app
