"""The Portal simulator: the dispatcher's subscription API with the Portal API stand-in mounted
beside it (``portal_api``), as ``receiver dispatcher`` and ``receiver demo`` serve it.

``create_simulator_app`` lets the sessions the stand-in issues identify clients of the
subscription API, as the real Portal's do, and its Duimp consultation answers the situation the
events emitted so far gave each Duimp. ``run_simulator`` serves it on uvicorn in this event loop.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from receiver.dispatcher import (
    Dispatcher,
    DispatcherSettings,
    RunningDispatcher,
    create_dispatcher_app,
    run_dispatcher,
)
from receiver.dispatcher.portal_events import duimp_situation
from receiver.simulator.portal_api import (
    CsrfRenewal,
    PortalAuthority,
    SimulatedDuimps,
    portal_api_routes,
)
from receiver.store import utcnow


def loopback_settings(
    folder: Path,
    certs: Mapping[str, Path],
    *,
    interval_seconds: float,
    per_endpoint_concurrency: int = DispatcherSettings.model_fields[
        "per_endpoint_concurrency"
    ].default,
) -> DispatcherSettings:
    """The simulator on this machine: its outbox in ``folder``, TLS with the test certificates
    ``write_demo_certificates`` made there, loopback subscribers allowed, and
    ``interval_seconds`` between attempts (the Portal waits 5 minutes)."""
    return DispatcherSettings(
        database_url=f"sqlite:///{folder / 'dispatcher.db'}",
        interval_seconds=interval_seconds,
        per_endpoint_concurrency=per_endpoint_concurrency,
        allowed_networks=["127.0.0.0/8", "::1/128"],
        tls_cert_file=certs["server"],
        tls_ca_file=certs["ca"],
        outbound_ca_file=certs["ca"],
    )


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


@contextlib.asynccontextmanager
async def run_simulator(
    settings: DispatcherSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    authority: PortalAuthority | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    transport: httpx.AsyncBaseTransport | None = None,
    verify: ssl.SSLContext | bool | None = None,
    ssl_context: ssl.SSLContext | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> AsyncIterator[RunningDispatcher]:
    """The dispatcher and the Portal API stand-in served on ``host:port`` (0: a free port).

    TLS comes from ``ssl_context``, else from ``settings.tls_*``, else plain HTTP. ``clock`` is
    what automatic cancellation judges by (tests move it).
    """

    def simulator(
        settings: DispatcherSettings, dispatcher: Dispatcher, routes: Sequence[BaseRoute]
    ) -> Starlette:
        return create_simulator_app(settings, dispatcher, authority=authority, extra_routes=routes)

    async with run_dispatcher(
        settings,
        host=host,
        port=port,
        extra_routes=extra_routes,
        transport=transport,
        verify=verify,
        ssl_context=ssl_context,
        clock=clock,
        make_app=simulator,
    ) as running:
        yield running
