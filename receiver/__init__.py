"""Durable webhook receiver for the Portal Único (PUCOMEX), SINtegre and InvoiCy.

What handler authors use is exported here; everything else is internal. For URLs that senders
choose, use ``ctx.http`` (or ``guarded_client`` outside a handler): it refuses internal
addresses, plain http and proxies, and checks every redirect. ``note.parsed`` is the payload as
its event's model (``DuimpEvent``, ``SintegreProduct``, ``InvoicyNotification``...).
"""

import typing as _typing

from receiver._lazy import lazy_exports as _lazy_exports
from receiver.errors import (
    AddressRefused,
    GiveUp,
    HandlerError,
    PortalError,
    ReceiverError,
    Retry,
)

if _typing.TYPE_CHECKING:
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

# Imported when first asked for: every process of ours imports this package (the writer process
# to reach receiver.store), and these brought httpx, httpcore, anyio and the routing table into
# each of them (the writer process: 67 -> 55 MiB resident after its imports).
_LAZY = {
    "guarded_client": "receiver.outbound",
    "Context": "receiver.worker.routing",
    "Notification": "receiver.worker.routing",
    "PortalAPI": "receiver.worker.routing",
    "Router": "receiver.worker.routing",
    **dict.fromkeys(
        [
            "DuimpEvent",
            "DuimpIdentificacao",
            "InvoicyNotification",
            "PortalEvent",
            "SefazEvent",
            "SintegreProduct",
        ],
        "receiver.payloads",
    ),
}


__getattr__, __dir__ = _lazy_exports(__name__, _LAZY)


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
