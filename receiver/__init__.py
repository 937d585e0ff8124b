"""Durable webhook receiver for the Portal Único (PUCOMEX), SINtegre and InvoiCy.

What handler authors use is exported here; everything else is internal.
"""

from receiver.errors import HandlerError, PortalError, ReceiverError, Retry
from receiver.routing import Context, Notification, Router

__all__ = [
    "Context",
    "HandlerError",
    "Notification",
    "PortalError",
    "ReceiverError",
    "Retry",
    "Router",
]
