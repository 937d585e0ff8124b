"""Typed events against the real stores: a body that does not fit its event's model is
quarantined by the planner with the validation error and never reaches handler code; one that
fits reaches the handler as ``note.parsed``; a replay after the fix routes it again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from receiver import Context, DuimpEvent, Notification, Router, SintegreProduct
from receiver.config import Settings
from receiver.runtime.services import build_worker
from receiver.sources import dedup_key
from receiver.store import Incoming, Store
from receiver.worker import planner, replay
from receiver.worker.routing import Routing
from tests.integration.worker.test_worker import until

pytestmark = pytest.mark.anyio


def incoming(payload: object, source: str = "pucomex", event: str | None = None) -> Incoming:
    body = json.dumps(payload).encode()
    return Incoming(source, event, "203.0.113.7", {}, body, dedup_key(source, body))


async def run_until(
    store: Store, settings: Settings, router: Router, done: Callable[[], bool]
) -> None:
    worker = build_worker(settings, store, Routing([router], settings.sources))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop, grace_seconds=1))
    try:
        await until(done, seconds=20)
    finally:
        stop.set()
        await task


async def test_a_body_that_does_not_fit_is_quarantined_and_never_reaches_the_handler(
    store: Store, settings: Settings
) -> None:
    router = Router()
    seen: list[object] = []

    @router.on("pucomex", "dimp-registro-import")
    async def fetch(note: Notification, ctx: Context) -> None:
        seen.append(note.parsed)

    @router.on("sintegre", "produto.publicado")
    async def download(note: Notification, ctx: Context) -> None:
        seen.append(note.parsed)

    good = {
        "identificacao": {"numero": "26BR00000000198", "versao": "2"},
        "situacaoDuimp": "REGISTRADA_AGUARDANDO_CANAL",
        "canal": "VERDE",
        "dataEvento": "2026-11-30T10:15:00-03:00",
        "message": "Duimp 26BR00000000198 registrada",
    }
    no_numero = {"identificacao": {"versao": 2}, "situacaoDuimp": "X"}
    bad_versao = {"identificacao": {"numero": "26BR1", "versao": "segunda"}}
    [fits] = store.append_now([incoming(good, event="dimp-registro-import")])
    [missing] = store.append_now([incoming(no_numero, event="dimp-registro-import")])
    [wrong] = store.append_now([incoming(bad_versao, event="dimp-registro-import")])
    [product] = store.append_now([incoming({"nome": "IPDO", "URL": "https://x/f.zip"}, "sintegre")])
    assert planner.plan(store, Routing([router], settings.sources)) == 4

    def note(note_id: str) -> dict[str, object]:
        row = store.note(note_id)
        assert row is not None
        return dict(row)

    assert note(missing.id)["status"] == "quarantined"
    assert note(missing.id)["error"] == (
        "payload does not fit DuimpEvent: identificacao.numero: Field required"
    )
    assert note(wrong.id)["status"] == "quarantined"
    assert "identificacao.versao: Input should be a valid integer" in str(note(wrong.id)["error"])
    assert store.jobs_of(missing.id) == [] and store.jobs_of(wrong.id) == []

    await run_until(
        store,
        settings,
        router,
        lambda: {note(fits.id)["status"], note(product.id)["status"]} == {"done"},
    )
    duimp, published = sorted(seen, key=lambda parsed: type(parsed).__name__)
    assert isinstance(duimp, DuimpEvent)
    assert (duimp.identificacao.numero, duimp.identificacao.versao) == ("26BR00000000198", 2)
    assert duimp.canal == "VERDE"
    assert isinstance(published, SintegreProduct)
    assert (published.Nome, published.uri) == ("IPDO", "https://x/f.zip")

    # A replay routes them again: the body still does not fit, so the same reason comes back.
    assert replay.replay_matching(store, statuses=["quarantined"]) == 2
    assert planner.plan(store, Routing([router], settings.sources)) == 2
    assert note(missing.id)["status"] == "quarantined"  # still does not fit: same reason
    assert str(note(missing.id)["error"]).startswith("payload does not fit DuimpEvent")


async def test_the_earlier_shape_of_the_sefaz_events_reads_as_the_same_model(
    store: Store, settings: Settings
) -> None:
    router = Router()
    seen: list[DuimpEvent] = []

    @router.on("pucomex", "duimp.desembaraco")
    async def cleared(note: Notification, ctx: Context) -> None:
        seen.append(note.parsed_as(DuimpEvent))

    earlier = {
        "evento": "duimp.desembaraco",
        "dataHora": "2026-11-22T10:00:00Z",
        "dados": {"numero": "26BR7", "versao": 3},
    }
    [receipt] = store.append_now([incoming(earlier)])

    def status() -> object:
        row = store.note(receipt.id)
        return None if row is None else row["status"]

    await run_until(store, settings, router, lambda: status() == "done")
    [event] = seen
    assert (event.identificacao.numero, event.identificacao.versao) == ("26BR7", 3)
    assert event.dataEvento == "2026-11-22T10:00:00Z"
