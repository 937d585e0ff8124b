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
    assert set(dir(receiver)) >= set(HANDLER_API)
    for name in HANDLER_API:  # the handler API is imported when first asked for
        getattr(receiver, name)
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


def test_a_name_that_is_not_exported_is_an_attribute_error() -> None:
    try:
        receiver.Worker  # noqa: B018
    except AttributeError as error:
        assert "Worker" in str(error)
    else:
        raise AssertionError("receiver.Worker should not exist")


def test_the_store_alone_does_not_load_the_handler_api_or_httpx() -> None:
    """The writer process imports receiver.store only: not httpx, anyio or the routing table."""
    import subprocess
    import sys

    code = (
        "import sys, receiver.store.process.child; "
        "print(sorted(m for m in ('httpx', 'receiver.worker.routing', 'receiver.outbound') "
        "if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert found.strip() == "[]"
