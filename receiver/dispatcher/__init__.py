"""The outbound dispatcher: the Portal's side of push events, built to its subscription API and
delivery rule, for re-dispatching received events to internal systems (``handlers.forward``) and
for the Portal simulator (``receiver.simulator``, which mounts the Portal API beside it).

Public API (everything else in the package is internal)::

    Dispatcher(settings)              emit / emit_body / resend_pending / send_latest / wait_for
    create_dispatcher_app(settings)   the subscription API, /sim controls, OpenAPI (Starlette)
    run_dispatcher(settings)          served on uvicorn in this event loop (port 0: free)
    serve_app(app)                    any ASGI app the same way (test endpoints)
    load_dispatcher_settings(path)    the dispatcher: section of a settings file

Module map: ``config`` (its settings) → ``tables`` (sqlmodel tables) → ``records`` → ``store``
(subscriptions, events, failure search) with ``outbox`` (claims, leases, attempt results) and
``portal_events`` (the Portal's event bodies, the Duimp situations they leave) → ``attempt`` and
``lifecycle`` → ``sender`` (the delivery rule) → ``api``/``openapi``/``identity``/``tls`` →
``app`` → ``server``; ``validation`` holds the seed's field rules. The guard that keeps the
sender off internal addresses is ``receiver.outbound`` (handlers use it too). It imports only
the kernel and the store.
"""

from receiver.dispatcher.app import create_dispatcher_app
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
    "load_dispatcher_settings",
    "pucomex_body",
    "run_dispatcher",
    "serve_app",
]
