"""handlers/forward.py: received notifications re-dispatched, bytes unchanged, through the same
dispatcher (outbox, 200 as receipt); a handler run again forwards nothing new."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from handlers.forward import ConfiguredDispatcher, forwarding_router, router
from receiver import Context, Notification
from receiver.dispatcher import Dispatcher
from receiver.dispatcher.validation import SubscriptionInput
from receiver.store.tables import utcnow
from tests.dispatcher_support import dispatcher_settings, sqlite_url

pytestmark = pytest.mark.anyio

BODY = (
    b'{"evento":"duimp.registro","dataHora":"2026-11-22T10:00:00-03:00","dados":{"numero":"24BR1"}}'
)


class NoResults:
    async def save(self, kind: str, key: str, value: Any) -> None:
        raise AssertionError("the forwarding handler keeps nothing itself")

    async def load(self, kind: str, key: str) -> Any | None:
        return None


def note(event: str | None = "duimp.registro", body: bytes = BODY) -> Notification:
    return Notification(
        id="01NOTE",
        source="pucomex",
        event=event,
        received_at=datetime(2026, 11, 22, 13, 0, tzinfo=UTC),
        payload=None,
        body=body,
        headers={"Content-Type": "application/json; charset=utf-8"},
        idempotency_key="a" * 64,
    )


def context(**extras: Any) -> Context:
    return Context(
        handler="handlers.forward",
        attempt=1,
        logger=logging.getLogger("test.forward"),
        results=NoResults(),
        extras=extras,
    )


@pytest.fixture
async def dispatcher(tmp_path: Path) -> Any:
    requests: list[httpx.Request] = []

    def internal_endpoint(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200)

    settings = dispatcher_settings(sqlite_url(tmp_path))
    running = Dispatcher(settings, transport=httpx.MockTransport(internal_endpoint))
    async with running:
        data = SubscriptionInput("duimp.registro", "https://erp.internal.example/hook", None)
        running.store.add_subscription("erp", data, utcnow())
        running.requests = requests  # type: ignore[attr-defined]
        yield running


async def test_a_notification_is_forwarded_unchanged(dispatcher: Any) -> None:
    async def source(ctx: Context) -> Dispatcher:
        return dispatcher  # type: ignore[no-any-return]

    (route,) = forwarding_router(source).routes
    await route.handler(note(), context())
    await route.handler(note(), context())  # the worker ran it again: nothing new
    (state,) = dispatcher.store.deliveries(ids=[1, 2])
    await dispatcher.wait_for([state.id], within=10)
    (request,) = dispatcher.requests
    assert request.content == BODY
    assert request.headers["content-type"] == "application/json; charset=utf-8"


@pytest.mark.parametrize("content_type", ["application/json; x=" + "y" * 100, "text/plain\x00"])
async def test_a_content_type_the_outbox_cannot_hold_is_forwarded_as_octets(
    dispatcher: Any, content_type: str
) -> None:
    async def source(ctx: Context) -> Dispatcher:
        return dispatcher  # type: ignore[no-any-return]

    odd = replace(note(), headers={"Content-Type": content_type})
    (route,) = forwarding_router(source).routes
    await route.handler(odd, context())
    (state,) = dispatcher.store.deliveries(ids=[1])
    await dispatcher.wait_for([state.id], within=10)
    (request,) = dispatcher.requests
    assert request.content == BODY
    assert request.headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize(
    ("event", "forwarded"),
    [
        (None, False),
        ("e" * 41, False),  # subscription event ids are Text(40)
        ("not subscribable", False),
        ("-leading", False),
        ("e" * 40, True),  # the longest that can be subscribed to
        ("lpco.registro", True),
    ],
)
async def test_only_events_with_a_subscribable_id_are_forwarded(
    dispatcher: Any, event: str | None, forwarded: bool, caplog: pytest.LogCaptureFixture
) -> None:
    asked: list[Context] = []

    async def source(ctx: Context) -> Dispatcher:
        asked.append(ctx)
        return dispatcher  # type: ignore[no-any-return]

    (route,) = forwarding_router(source).routes
    with caplog.at_level(logging.INFO, logger="test.forward"):
        await route.handler(note(event), context())
    assert (len(asked) == 1) is forwarded, "the dispatcher was asked for a skipped event"
    said = [record.getMessage() for record in caplog.records]
    if forwarded:
        assert any(m.startswith(f"forwarded {event} as event") for m in said), said
    else:
        assert said == [f"not forwarded: event {event!r} cannot be subscribed to"]


async def test_the_module_router_uses_the_workers_dispatcher(dispatcher: Any) -> None:
    (route,) = router.routes
    await route.handler(note(), context(dispatcher=dispatcher))
    (state,) = dispatcher.store.deliveries(ids=[1])
    await dispatcher.wait_for([state.id], within=10)
    assert len(dispatcher.requests) == 1


async def test_without_one_it_builds_the_configured_dispatcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "receiver.yaml"
    config.write_text(yaml.safe_dump({"dispatcher": {"database_url": "sqlite:///forward.db"}}))
    monkeypatch.setenv("RECEIVER_CONFIG", str(config))
    source = ConfiguredDispatcher()
    try:
        made = await source(context())
        assert await source(context()) is made
        (route,) = forwarding_router(source).routes
        await route.handler(note(event="lpco.registro"), context())
        assert made.store.url == f"sqlite:///{tmp_path / 'forward.db'}"
    finally:
        await source.aclose()
    assert (tmp_path / "forward.db").exists()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
