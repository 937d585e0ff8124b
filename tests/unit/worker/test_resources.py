"""The handler modules' resources in one process: lifespans and hooks in order, closed in
reverse, a name given twice refused, a failing start-up named, a failing shutdown logged."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from receiver import Router
from receiver.errors import StartupError
from receiver.worker.resources import open_resources


def lifespan_of(name: str, events: list[str], gives: dict[str, Any]) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[dict[str, Any]]:
        events.append(f"open {name}")
        try:
            yield gives
        finally:
            events.append(f"close {name}")

    return lifespan


def test_lifespans_and_hooks_open_in_order_and_close_in_reverse() -> None:
    events: list[str] = []
    first = Router(lifespan=lifespan_of("a", events, {"db": "pool"}))
    second = Router(lifespan=lifespan_of("b", events, {"http": "client"}))

    @second.on_startup
    async def start(resources: dict[str, Any]) -> None:
        events.append(f"startup sees {sorted(resources)}")
        resources["cache"] = {}

    @second.on_shutdown
    async def stop(resources: dict[str, Any]) -> None:
        events.append("shutdown b")

    async def run() -> dict[str, Any]:
        async with open_resources([first, second]) as resources:
            events.append("handlers run")
            return dict(resources)

    assert asyncio.run(run()) == {"db": "pool", "http": "client", "cache": {}}
    assert events == [
        "open a",
        "open b",
        "startup sees ['db', 'http']",
        "handlers run",
        "shutdown b",
        "close b",
        "close a",
    ]


def test_a_name_given_twice_is_refused_and_what_opened_is_closed() -> None:
    events: list[str] = []
    routers = [
        Router(lifespan=lifespan_of("a", events, {"db": 1})),
        Router(lifespan=lifespan_of("b", events, {"db": 2})),
    ]

    async def run() -> None:
        async with open_resources(routers):
            raise AssertionError("must not start")

    with pytest.raises(StartupError, match="gives resource 'db', which another handler module"):
        asyncio.run(run())
    assert events == ["open a", "open b", "close b", "close a"]


def test_a_failing_startup_hook_is_named_and_a_failing_shutdown_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = Router()

    @broken.on_startup
    async def connect(resources: dict[str, Any]) -> None:
        raise OSError("no route to the team database")

    async def run(routers: list[Router]) -> None:
        async with open_resources(routers):
            pass

    with pytest.raises(StartupError, match=r"on_startup hook .*connect failed: OSError: no route"):
        asyncio.run(run([broken]))

    closing = Router()
    closed: list[str] = []

    @closing.on_shutdown
    async def fails(resources: dict[str, Any]) -> None:
        raise RuntimeError("already closed")

    @closing.on_shutdown
    async def works(resources: dict[str, Any]) -> None:
        closed.append("closed")

    asyncio.run(run([closing]))
    assert closed == ["closed"]
    assert "on_shutdown hook" in caplog.text and "already closed" in caplog.text


def test_include_carries_the_lifespan_and_hooks() -> None:
    events: list[str] = []
    inner = Router(lifespan=lifespan_of("inner", events, {"x": 1}))
    outer = Router()
    outer.include(inner)

    async def run() -> Any:
        async with open_resources([outer]) as resources:
            return dict(resources)

    assert asyncio.run(run()) == {"x": 1}
    assert events == ["open inner", "close inner"]
