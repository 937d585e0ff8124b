"""``receiver dev``'s choices: which events it subscribes to and emits."""

from __future__ import annotations

from receiver import Context, Notification, Router
from receiver.catalog import PUCOMEX_CATALOG
from receiver.dispatcher.portal_events import PUBLISHED_DUIMP_EVENTS
from receiver.simulator.dev import MAX_EVENTS, events_to_emit
from receiver.worker.routing import Routing

SOURCES = ["pucomex", "sintegre", "invoicy"]


def routing_for(*events: str) -> Routing:
    router = Router()

    async def handler(note: Notification, ctx: Context) -> None:
        return None

    if events:
        router.on("pucomex", *events)(handler)
    return Routing([router], SOURCES)


def test_the_events_the_handlers_run_on_else_the_published_duimp_events() -> None:
    assert events_to_emit(routing_for("duimp.desembaraco"), []) == ["duimp.desembaraco"]
    assert events_to_emit(routing_for(), []) == list(PUBLISHED_DUIMP_EVENTS)
    lpco = [event for event in PUCOMEX_CATALOG if event.startswith("lpco.")]
    assert len(lpco) > MAX_EVENTS
    assert events_to_emit(routing_for("lpco.*"), []) == lpco[:MAX_EVENTS]


def test_the_events_asked_for_once_each_in_order() -> None:
    wanted = ["dimp-situacao-import", "duimp.desembaraco", "dimp-situacao-import"]
    assert events_to_emit(routing_for(), wanted) == ["dimp-situacao-import", "duimp.desembaraco"]
