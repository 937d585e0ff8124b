"""The outbound dispatcher: the Portal's side of push events, so the system runs end to end.

Public API (everything else in the package is internal)::

    Dispatcher(settings.dispatcher)          emit / emit_body / resend_pending / send_latest / wait_for
    create_dispatcher_app(settings)          the subscription API + /sim controls (Starlette)
    create_simulator_app(settings)           the same plus the Portal API simulator
    run_dispatcher(settings)                 served on uvicorn in this event loop (port 0: free)
    serve_app(app)                           any ASGI app the same way (test endpoints)

Module map: ``tables`` (sqlmodel tables) → ``records`` → ``store`` (subscriptions, events,
failure search) with ``outbox`` (claims, leases, attempt results) →
``sender`` (the delivery rule) → ``api``/``openapi``/``identity`` → ``app`` → ``server``/``cli``;
``validation`` holds the seed's field rules. The guard that keeps the sender off internal
addresses is ``receiver.outbound`` (handlers use it too); ``netguard`` re-exports it.
"""

from receiver.dispatcher.app import create_dispatcher_app, create_simulator_app
from receiver.dispatcher.config import DispatcherSettings, load_dispatcher_settings
from receiver.dispatcher.portal_events import pucomex_body
from receiver.dispatcher.records import (
    DeliveryState,
    EmitResult,
    Subscription,
)
from receiver.dispatcher.sender import Dispatcher
from receiver.dispatcher.server import RunningDispatcher, RunningServer, run_dispatcher, serve_app
from receiver.dispatcher.store import DispatchStore
from receiver.dispatcher.validation import OutboundAuth
from receiver.errors import InvalidField, UnknownSubscription
from receiver.outbound import AddressPolicy, AddressRefused

__all__ = [
    "AddressPolicy",
    "AddressRefused",
    "DeliveryState",
    "DispatchStore",
    "Dispatcher",
    "DispatcherSettings",
    "EmitResult",
    "InvalidField",
    "OutboundAuth",
    "RunningDispatcher",
    "RunningServer",
    "Subscription",
    "UnknownSubscription",
    "create_dispatcher_app",
    "create_simulator_app",
    "load_dispatcher_settings",
    "pucomex_body",
    "run_dispatcher",
    "serve_app",
]
