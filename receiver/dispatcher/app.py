"""The dispatcher's Starlette app: subscription API, simulator controls, OpenAPI, health.

``create_dispatcher_app`` is the bare dispatcher (plus any ``extra_routes``);
``create_simulator_app`` adds the Portal API stand-in (``portal_api.py``) and lets the sessions it
issues identify clients of the subscription API, as the real Portal's do.
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
from receiver.dispatcher.portal_api import (
    CsrfRenewal,
    PortalAuthority,
    SimulatedDuimps,
    portal_api_routes,
)
from receiver.dispatcher.portal_events import duimp_situation
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


def create_simulator_app(
    settings: DispatcherSettings,
    dispatcher: Dispatcher | None = None,
    *,
    authority: PortalAuthority | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    transport: httpx.AsyncBaseTransport | None = None,
    verify: ssl.SSLContext | bool | None = None,
) -> Starlette:
    """The dispatcher with the Portal API simulator mounted (``app.state.portal_authority``): its
    Duimp consultation answers the situation the events emitted so far gave each Duimp."""
    authority = authority if authority is not None else PortalAuthority()
    if dispatcher is None:
        dispatcher = Dispatcher(settings, transport=transport, verify=verify)
        owned = True
    else:
        owned = False
    engine = dispatcher.store.engine
    source = SimulatedDuimps(lambda numero: duimp_situation(engine, numero))
    app = create_dispatcher_app(
        settings,
        dispatcher,
        extra_routes=[*portal_api_routes(authority, duimps_source=source), *extra_routes],
        session_identity=authority.identity_of,
        owns_dispatcher=owned,
    )
    app.add_middleware(CsrfRenewal, authority=authority)
    app.state.portal_authority = authority
    return app
