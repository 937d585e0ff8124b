"""Durable webhook receiver for the Portal Único (PUCOMEX), SINtegre and InvoiCy.

What handler authors use is exported here; everything else is internal. For URLs that senders
choose, use ``ctx.http`` (or ``guarded_client`` outside a handler): it refuses internal
addresses, plain http and proxies, and checks every redirect. ``note.parsed`` is the payload as
its event's model (``DuimpEvent``, ``SintegreProduct``, ``InvoicyNotification``...).
"""

from receiver.errors import (
    AddressRefused,
    GiveUp,
    HandlerError,
    PortalError,
    ReceiverError,
    Retry,
)
from receiver.outbound import guarded_client
from receiver.payloads import (
    DuimpEvent,
    DuimpIdentificacao,
    InvoicyNotification,
    PortalEvent,
    SefazEvent,
    SintegreProduct,
)
from receiver.worker.routing import Context, Notification, PortalAPI, Router

__all__ = [
    "AddressRefused",
    "Context",
    "DuimpEvent",
    "DuimpIdentificacao",
    "GiveUp",
    "HandlerError",
    "InvoicyNotification",
    "Notification",
    "PortalAPI",
    "PortalError",
    "PortalEvent",
    "ReceiverError",
    "Retry",
    "Router",
    "SefazEvent",
    "SintegreProduct",
    "guarded_client",
]
