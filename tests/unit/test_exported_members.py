"""``receiver`` exports the handler API and nothing else (httpx's tests/test_exported_members.py):
the names are exactly these, each importable, each with a docstring."""

from __future__ import annotations

import inspect

import receiver

HANDLER_API = [
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


def test_the_exported_names_are_exactly_the_handler_api() -> None:
    assert receiver.__all__ == HANDLER_API
    # Subpackages appear as attributes once imported; they are not part of the namespace's API.
    public = {
        name
        for name, value in vars(receiver).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(HANDLER_API)


def test_each_exported_name_is_importable_and_documented() -> None:
    namespace: dict[str, object] = {}
    exec(f"from receiver import {', '.join(HANDLER_API)}", namespace)
    for name in HANDLER_API:
        assert namespace[name] is getattr(receiver, name)
        assert inspect.getdoc(namespace[name]), f"{name} has no docstring"
