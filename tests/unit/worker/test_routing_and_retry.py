"""Pure logic: the routing table and the retry policy."""

from __future__ import annotations

import logging
import random
import sys
import types

import pytest

from receiver import Context, Notification, Router
from receiver.errors import HandlerError
from receiver.worker.retry import RetryPolicy
from receiver.worker.routing import Routing, load_routers

SOURCES = ["pucomex", "sintegre", "invoicy"]


async def noop(note: Notification, ctx: Context) -> None:
    return None


def test_routes_match_events_families_and_catch_alls() -> None:
    router = Router()
    router.on("pucomex", "duimp.registro", "duimp.retificacao")(noop)

    async def lpco(note: Notification, ctx: Context) -> None:
        return None

    async def everything(note: Notification, ctx: Context) -> None:
        return None

    router.on("pucomex", "lpco.*")(lpco)
    router.on_any()(everything)
    routing = Routing([router], SOURCES)

    def names(source: str, event: str | None) -> list[str]:
        return [r.handler.__name__ for r in routing.handlers_for(source, event)]

    assert names("pucomex", "duimp.registro") == ["noop", "everything"]
    assert names("pucomex", "lpco.registro") == ["lpco", "everything"]
    assert names("pucomex", "lpcox") == ["everything"]
    assert names("sintegre", "produto.publicado") == ["everything"]
    assert names("pucomex", None) == ["everything"]


def test_unknown_source_is_a_startup_error() -> None:
    router = Router()
    router.on("portal", "duimp.registro")(noop)
    with pytest.raises(HandlerError, match="source 'portal'"):
        Routing([router], SOURCES)


def test_unknown_event_warns_or_fails_in_strict_mode(caplog: pytest.LogCaptureFixture) -> None:
    router = Router()
    router.on("pucomex", "duimp.registr")(noop)
    with caplog.at_level(logging.WARNING):
        Routing([router], SOURCES)
    assert "not in the pucomex catalog" in caplog.text
    with pytest.raises(HandlerError, match=r"duimp\.registr"):
        Routing([router], SOURCES, strict=True)
    family = Router()
    family.on("pucomex", "nada.*")(noop)
    with pytest.raises(HandlerError):
        Routing([family], SOURCES, strict=True)


def test_on_needs_an_event() -> None:
    with pytest.raises(HandlerError, match="on_any"):
        Router().on("pucomex")


def test_load_routers_errors_name_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HandlerError, match=r"cannot import no_such_module_here"):
        load_routers(["no_such_module_here"])
    module = types.ModuleType("fake_handlers")
    module.router = Router()  # type: ignore[attr-defined]
    module.other = "not a router"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_handlers", module)
    assert load_routers(["fake_handlers"]) == [module.router]
    with pytest.raises(HandlerError, match=r"is not a receiver\.Router"):
        load_routers(["fake_handlers:other"])


def test_context_without_portal_says_what_to_configure() -> None:
    ctx = Context(handler="h", attempt=1, logger=logging.getLogger("t"), results=None)  # type: ignore[arg-type]
    with pytest.raises(HandlerError, match="no 'portal:' section"):
        _ = ctx.portal


def test_backoff_doubles_is_capped_and_jittered() -> None:
    policy = RetryPolicy(max_attempts=10, backoff_seconds=10, max_backoff_seconds=100, jitter=0)
    assert [policy.backoff(n) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 80, 100]
    jittered = RetryPolicy(backoff_seconds=10, jitter=0.25)
    waits = {jittered.backoff(1, random.Random(seed)) for seed in range(50)}
    assert min(waits) >= 7.5 and max(waits) <= 12.5 and len(waits) > 10


def test_decide_dead_after_the_last_attempt_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_attempts=3, backoff_seconds=1, jitter=0)
    assert policy.decide(1).dead is False
    assert policy.decide(2).delay == 2
    assert policy.decide(3).dead is True
    assert policy.decide(1, requested_after=30).delay == 30
    assert policy.decide(3, requested_after=30).dead is True
