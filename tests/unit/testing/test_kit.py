"""receiver.testing itself: notifications built as the worker builds them, handlers run as the
worker runs them (outcomes, retry delays, timeouts, quarantine, resources), the in-memory Portal
with its failures, and a payload for every catalog event."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import handlers.duimp
import handlers.invoicy
from receiver import Context, DuimpEvent, GiveUp, Notification, PortalError, Retry, Router
from receiver.catalog import CATALOGS
from receiver.config import WorkerSettings
from receiver.errors import ParseError
from receiver.payloads import model_for
from receiver.sources import dedup_key
from receiver.testing import (
    FakePortal,
    MemoryResults,
    Quarantined,
    events,
    make_notification,
    outcomes,
    payload,
    run_handlers,
    run_handlers_sync,
)
from receiver.worker.retry import RetryPolicy

SITUATION = "dimp-situacao-import"


def test_a_notification_is_built_as_the_worker_builds_it() -> None:
    body = payload("dimp-registro-import")
    note = make_notification("pucomex", "dimp-registro-import", payload=body)
    raw = json.dumps(body, ensure_ascii=False).encode()
    assert note.body == raw
    assert note.idempotency_key == dedup_key("pucomex", raw)  # the store's dedup key
    assert note.headers["event-type"] == "dimp-registro-import"
    assert "secret" not in note.headers  # never stored, so never seen by a handler
    assert isinstance(note.parsed, DuimpEvent)
    assert note.parsed.identificacao.numero == body["identificacao"]["numero"]
    assert (datetime.now(UTC) - note.received_at).total_seconds() < 5
    again = make_notification("pucomex", "dimp-registro-import", body=raw)
    assert again.idempotency_key == note.idempotency_key and again.id != note.id


def test_a_recorded_body_names_its_event_and_a_bad_one_is_refused_as_the_worker_would() -> None:
    note = make_notification("invoicy", body=b'{"Modulo": 1, "TipoNotificacao": 7}')
    assert note.event == "nfe.documento-autorizado"
    with pytest.raises(ParseError, match="does not fit DuimpEvent: identificacao: Field required"):
        make_notification("pucomex", "dimp-registro-import", payload={"canal": "VERDE"})
    with pytest.raises(ParseError, match="not JSON"):
        make_notification("pucomex", "dimp-registro-import", body=b"{oops")
    with pytest.raises(TypeError, match=r"payload= .* or body="):
        make_notification("pucomex", "x")


def test_every_catalog_event_has_a_payload_that_reads_as_its_model() -> None:
    for source, catalog in CATALOGS.items():
        assert sorted(events(source)) == sorted(catalog), source
        for event in catalog:
            note = make_notification(source, event, payload=payload(event, source))
            model = model_for(source, event)
            assert model is not None and isinstance(note.parsed, model), (source, event)
            assert note.event == event


def test_the_plugin_gives_payloads_and_fakes(
    receiver_payload: Callable[..., dict[str, Any]],
    fake_portal: FakePortal,
    memory_results: MemoryResults,
) -> None:
    first = receiver_payload("produto.publicado")
    first["Nome"] = "changed"
    assert receiver_payload("produto.publicado")["Nome"] != "changed"  # a fresh copy each time
    assert receiver_payload("nfe.evento", source="invoicy")["TipoNotificacao"] == 3
    assert fake_portal.calls == [] and memory_results.saved == {}
    with pytest.raises(KeyError, match="receiver events"):
        receiver_payload("no-such-event")


def test_the_reference_duimp_handler_fetches_through_the_real_client_and_saves() -> None:
    note = make_notification("pucomex", SITUATION, payload=payload(SITUATION))
    portal, results = FakePortal(), MemoryResults()
    runs = run_handlers_sync(handlers.duimp.router, note, portal=portal, results=results)
    assert outcomes(runs) == {"track_situation": "done"}
    numero = payload(SITUATION)["identificacao"]["numero"]
    assert portal.duimps_fetched() == [(numero, 2)]
    kept = asyncio.run(results.load("duimp-situacao", note.idempotency_key))
    assert kept is not None
    assert kept["situacao"] == "DESEMBARACADA_AGUARDANDO_ENTREGA_CARGA"
    assert kept["canal"] == "VERDE"


def test_a_portal_that_fails_gives_a_failed_run_with_the_workers_retry_delay() -> None:
    note = make_notification("pucomex", SITUATION, payload=payload(SITUATION))
    portal = FakePortal()
    portal.fail(503, path_contains="/duimp-api/")
    policy = RetryPolicy(max_attempts=3, backoff_seconds=10, jitter=0)
    [run] = run_handlers_sync(handlers.duimp.router, note, portal=portal, retry=policy)
    assert run.outcome == "failed" and run.delay == 10
    assert isinstance(run.error, PortalError) and run.error.status == 503
    assert "answered 503" in run.reason
    portal.fail(timeout=True, path_contains="/duimp-api/")
    [last] = run_handlers_sync(handlers.duimp.router, note, portal=portal, retry=policy, attempt=3)
    assert last.outcome == "dead" and "ReadTimeout" in last.reason


def test_retry_giveup_timeout_and_errors_as_the_worker_decides() -> None:
    router = Router()

    @router.on("pucomex", "dimp-registro-import")
    async def asks_later(note: Notification, ctx: Context) -> None:
        raise Retry(after=42)

    @router.on("pucomex", "dimp-registro-import")
    async def gives_up(note: Notification, ctx: Context) -> None:
        raise GiveUp("this Duimp belongs to another state")

    @router.on("pucomex", "dimp-registro-import", timeout=0.05)
    async def too_slow(note: Notification, ctx: Context) -> None:
        await asyncio.sleep(5)

    @router.on("pucomex", "dimp-registro-import")
    async def breaks(note: Notification, ctx: Context) -> None:
        raise KeyError("situacao")

    hooked: list[str] = []

    @router.on_error
    async def alert(note: Notification, ctx: Context, error: BaseException) -> None:
        hooked.append(type(error).__name__)

    note = make_notification(
        "pucomex", "dimp-registro-import", payload=payload("dimp-registro-import")
    )
    policy = RetryPolicy(max_attempts=5, backoff_seconds=1, jitter=0)
    runs = {r.handler.rsplit(".", 1)[-1]: r for r in run_handlers_sync(router, note, retry=policy)}
    assert (runs["asks_later"].outcome, runs["asks_later"].delay) == ("failed", 42)
    assert runs["gives_up"].outcome == "dead"
    assert runs["gives_up"].reason == "GiveUp: this Duimp belongs to another state"
    assert (
        runs["too_slow"].outcome == "failed" and runs["too_slow"].reason == "timed out after 0.05 s"
    )
    assert (runs["breaks"].outcome, runs["breaks"].delay) == ("failed", 1)
    assert isinstance(runs["breaks"].error, KeyError)
    assert hooked == ["Retry", "GiveUp", "TimeoutError", "KeyError"]


def test_the_workers_timeout_applies_when_the_handler_has_none() -> None:
    router = Router()

    @router.on("pucomex", "dimp-registro-import")
    async def slow(note: Notification, ctx: Context) -> None:
        await asyncio.sleep(5)

    note = make_notification(
        "pucomex", "dimp-registro-import", payload=payload("dimp-registro-import")
    )
    settings = WorkerSettings(handler_timeout_seconds=0.05)
    [run] = run_handlers_sync(router, note, settings=settings)
    assert run.reason == "timed out after 0.05 s"


def test_what_the_worker_would_quarantine_never_reaches_a_handler() -> None:
    router = Router()
    ran: list[str] = []

    @router.on("pucomex", "dimp-registro-import")
    async def fetch(note: Notification, ctx: Context) -> None:
        ran.append(note.id)

    other = make_notification("pucomex", "duimp.desembaraco", payload=payload("duimp.desembaraco"))
    with pytest.raises(Quarantined, match=r"no handler for pucomex event 'duimp\.desembaraco'"):
        run_handlers_sync(router, other)
    # Built by hand, as a test might: checked as the planner checks it.
    by_hand = Notification(
        id="n1",
        source="pucomex",
        event="dimp-registro-import",
        received_at=datetime.now(UTC),
        payload={"identificacao": {}},
        body=b'{"identificacao": {}}',
        headers={},
        idempotency_key="k",
    )
    with pytest.raises(
        Quarantined, match=r"payload does not fit DuimpEvent: identificacao\.numero"
    ):
        run_handlers_sync(router, by_hand)
    assert ran == []


def test_the_lifespan_gives_resources_once_for_all_the_handlers_and_closes() -> None:
    opened: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[dict[str, Any]]:
        opened.append("open")
        yield {"db": []}
        opened.append("close")

    router = Router(lifespan=lifespan)

    @router.on_any("invoicy")
    async def first(note: Notification, ctx: Context) -> None:
        ctx.resources["db"].append(("first", note.event))

    @router.on_any("invoicy")
    async def second(note: Notification, ctx: Context) -> None:
        ctx.resources["db"].append(("second", len(ctx.resources["db"])))
        assert ctx.resources["db"][0] == ("first", "nfe.evento")

    note = make_notification("invoicy", payload=payload("nfe.evento"))
    assert outcomes(run_handlers_sync(router, note)) == {"first": "done", "second": "done"}
    assert opened == ["open", "close"]


@pytest.mark.anyio
async def test_run_handlers_in_an_async_test_with_a_portal_of_ones_own() -> None:
    class OnePortal:
        async def duimp(self, numero: str, versao: str | int | None = None) -> dict[str, Any]:
            return {"numero": numero, "versaoDeclaracao": 7, "situacaoDeclaracao": "REGISTRADA"}

    note = make_notification(
        "pucomex", "dimp-registro-import", payload=payload("dimp-registro-import")
    )
    results = MemoryResults()
    [run] = await run_handlers(handlers.duimp.router, note, portal=OnePortal(), results=results)
    assert run.outcome == "done"
    numero = note.parsed_as(DuimpEvent).identificacao.numero
    assert await results.load("duimp", f"{numero}:1") == {
        "numero": numero,
        "versaoDeclaracao": 7,
        "situacaoDeclaracao": "REGISTRADA",
    }


def test_the_invoicy_handler_keeps_the_history_through_the_kit() -> None:
    results = MemoryResults()
    for event in ("nfe.documento-emitido", "nfe.documento-autorizado"):
        note = make_notification("invoicy", payload={**payload(event), "ChaveAcesso": "3526"})
        assert outcomes(run_handlers_sync(handlers.invoicy.router, note, results=results)) == {
            "record_document_status": "done"
        }
    [(kind, key)] = results.saved
    history = asyncio.run(results.load(kind, key))
    assert history is not None
    assert [entry["event"] for entry in history] == [
        "nfe.documento-emitido",
        "nfe.documento-autorizado",
    ]


def test_a_failed_run_is_logged_with_its_notification_handler_attempt_and_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = Router()

    @router.on("pucomex", "dimp-registro-import")
    async def breaks(note: Notification, ctx: Context) -> None:
        raise KeyError("situacao")

    @router.on("pucomex", "dimp-registro-import")
    async def asks_later(note: Notification, ctx: Context) -> None:
        raise Retry(after=5)

    note = make_notification(
        "pucomex", "dimp-registro-import", payload=payload("dimp-registro-import")
    )
    run_handlers_sync(router, note, attempt=2)
    failed, retried = [r for r in caplog.records if r.name == "receiver.worker"]
    assert failed.getMessage().startswith(
        f"handler {__name__}.test_a_failed_run_is_logged_with_its_notification_handler_attempt_and"
        f"_traceback.<locals>.breaks on notification {note.id} attempt 2: KeyError: 'situacao'"
    )
    assert failed.exc_info is not None and failed.exc_info[0] is KeyError  # the traceback
    assert retried.exc_info is None  # a Retry is raised on purpose: no traceback


def test_the_fake_portal_answers_the_documented_shape_and_a_duimp_of_ones_own() -> None:
    documented = json.loads(
        (
            Path(__file__).parents[2] / "fixtures" / "duimp-consulta-response.example.json"
        ).read_text()
    )
    portal = FakePortal()

    async def consult() -> tuple[dict[str, Any], dict[str, Any]]:
        async with portal.client() as client:
            simulated = await client.duimp("26BR0000000198")  # versoes first, then the latest
            portal.set_duimp("26BR0000000198", 1, {"numeroDuimp": "26BR0000000198", "mine": 1})
            own = await client.duimp("26BR0000000198", 1)
            return simulated, own

    simulated, own = asyncio.run(consult())
    assert set(simulated) == set(documented)
    assert own == {"numeroDuimp": "26BR0000000198", "mine": 1}
    assert [(call.method, call.path.rsplit("/", 1)[-1]) for call in portal.calls] == [
        ("POST", "chave-acesso"),
        ("GET", "versoes"),
        ("GET", str(simulated["versaoDeclaracao"])),
        ("GET", "1"),
    ]
    assert portal.authentications == 1
