"""Payloads of every catalog event of the three senders, shipped with the package
(``receiver/testing/payloads/<source>.json``): the Portal's published Duimp shape, the Sefaz events'
``{evento, dataHora, dados}``, SINtegre's seed fields, InvoiCy's module and notification codes.
Each entry says where its shape comes from (``shape``)."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

SOURCES = ("pucomex", "sintegre", "invoicy")


@functools.cache
def _entries(source: str) -> Mapping[str, Mapping[str, Any]]:
    if source not in SOURCES:
        raise KeyError(f"no payload fixtures for source {source!r} (these: {', '.join(SOURCES)})")
    text = resources.files("receiver.testing").joinpath("payloads", f"{source}.json").read_text()
    events: Mapping[str, Mapping[str, Any]] = json.loads(text)["events"]
    return events


def source_of(event: str) -> str:
    """The sender whose catalog has ``event``."""
    for source in SOURCES:
        if event in _entries(source):
            return source
    raise KeyError(f"no payload fixture for event {event!r}: see `receiver events`")


def payload(event: str, source: str | None = None) -> dict[str, Any]:
    """A copy of the fixture payload of ``event`` (of ``source``, else the sender that has it)."""
    source = source or source_of(event)
    entries = _entries(source)
    if event not in entries:
        raise KeyError(f"no payload fixture for {source} event {event!r}: see `receiver events`")
    body: dict[str, Any] = copy.deepcopy(entries[event]["body"])
    return body


def events(source: str) -> list[str]:
    """Every event of ``source`` with a fixture (its whole catalog)."""
    return list(_entries(source))
