"""The pytest plugin of ``receiver.testing`` (entry point ``pytest11``, active wherever
portal-receiver is installed): fixtures of real payloads and the kit's fakes.

- ``receiver_payload``: ``receiver_payload("dimp-registro-import")`` is a fresh copy of that
  event's payload (``receiver_payload("nfe.evento", source="invoicy")`` to be explicit).
- ``fake_portal``: a new ``FakePortal``.
- ``memory_results``: a new ``MemoryResults``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from receiver.testing import FakePortal, MemoryResults


@pytest.fixture
def receiver_payload() -> Callable[..., dict[str, Any]]:
    # Imported when used: the plugin is loaded by every pytest run where the package is installed.
    from receiver.testing.fixtures import payload

    return payload


@pytest.fixture
def fake_portal() -> FakePortal:
    from receiver.testing import FakePortal

    return FakePortal()


@pytest.fixture
def memory_results() -> MemoryResults:
    from receiver.testing import MemoryResults

    return MemoryResults()
