"""The reference handlers end to end, each from a notification stored in a real SQLite store:
Duimp against the Portal API stand-in over mutual TLS, InvoiCy with the status history (SINtegre:
test_sintegre_handler.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import handlers.duimp
import handlers.invoicy
from receiver.dispatcher.tls import server_ssl_context
from receiver.errors import ParseError
from receiver.portal import PortalClient
from receiver.simulator import duimps
from receiver.simulator.portal_api import PortalAuthority, create_portal_api_app
from receiver.store import Store
from receiver.testing import MemoryResults
from tests.integration.portal.support import (
    context,
    dispatch,
    make_certs,
    portal_settings,
    serve,
    stored,
)


@pytest.fixture
def store(sqlite_store: Store) -> Store:
    return sqlite_store


# --- Duimp ------------------------------------------------------------------------------------


def test_duimp_registration_and_rectification_fetch_and_keep_the_duimp(
    store: Store, tmp_path: Path
) -> None:
    certs = make_certs(tmp_path)
    authority = PortalAuthority()
    tls = server_ssl_context(certs.server_pem, client_ca_file=certs.ca_pem)
    numero = duimps.duimp_number(4242)
    notes = [
        stored(
            store,
            "pucomex",
            {
                "evento": evento,
                "dataHora": "2024-05-02T10:00:00-03:00",
                "dados": {"numero": numero, "versao": versao},
            },
        )
        for evento, versao in (("duimp.registro", 1), ("duimp.retificacao", "2"))
    ]
    results = MemoryResults()
    with serve(create_portal_api_app(authority), tls) as url:

        async def run() -> list[int]:
            settings = portal_settings(url, certs)
            async with PortalClient(settings, backoff_seconds=0.01) as portal:
                ctx = context(results, portal_client=portal)
                ran = [await dispatch(handlers.duimp.router, note, ctx) for note in notes]
                ran.append(await dispatch(handlers.duimp.router, notes[0], ctx))  # a replay
                return ran

        assert asyncio.run(run()) == [1, 1, 1]
    assert set(results.saved) == {("duimp", f"{numero}:1"), ("duimp", f"{numero}:2")}
    for versao in (1, 2):
        kept = asyncio.run(results.load("duimp", f"{numero}:{versao}"))
        assert kept == json.loads(json.dumps(duimps.duimp(numero, versao)))
    assert authority.authentications == 1


def test_a_duimp_handler_without_portal_says_so(store: Store) -> None:
    note = stored(
        store,
        "pucomex",
        {"evento": "duimp.registro", "dados": {"numero": "24BR0000000001", "versao": 1}},
    )
    with pytest.raises(Exception, match="portal"):
        asyncio.run(dispatch(handlers.duimp.router, note, context(MemoryResults())))


def test_a_duimp_notification_without_numero_never_reaches_the_handler(store: Store) -> None:
    with pytest.raises(ParseError, match=r"does not fit DuimpEvent: identificacao\.numero"):
        stored(store, "pucomex", {"evento": "duimp.registro", "dados": {}})


def test_situation_events_keep_the_new_situation_once_per_notification(
    store: Store, tmp_path: Path
) -> None:
    certs = make_certs(tmp_path)
    authority = PortalAuthority()
    tls = server_ssl_context(certs.server_pem, client_ca_file=certs.ca_pem)
    numero = duimps.duimp_number(4343)
    events = ("duimp.desembaraco", "duimp.cancelamento", "duimp.entrega-com-prosseguimento")
    notes = [
        stored(store, "pucomex", {"evento": evento, "dados": {"numero": numero, "versao": "1"}})
        for evento in events
    ]
    results = MemoryResults()
    with serve(create_portal_api_app(authority), tls) as url:

        async def run() -> list[int]:
            async with PortalClient(portal_settings(url, certs), backoff_seconds=0.01) as portal:
                ctx = context(results, portal_client=portal)
                ran = [await dispatch(handlers.duimp.router, note, ctx) for note in notes]
                ran.append(await dispatch(handlers.duimp.router, notes[0], ctx))  # a replay
                return ran

        assert asyncio.run(run()) == [1, 1, 1, 1]
    assert set(results.saved) == {("duimp-situacao", note.idempotency_key) for note in notes}
    kept = asyncio.run(results.load("duimp-situacao", notes[1].idempotency_key))
    assert kept is not None
    assert (kept["numero"], kept["evento"]) == (numero, "duimp.cancelamento")
    assert kept["situacao"] == duimps.duimp(numero, 1)["situacaoDeclaracao"]  # type: ignore[index]


def test_the_portals_ids_and_body_fetch_and_keep_the_duimp_and_its_situation(
    store: Store, tmp_path: Path
) -> None:
    certs = make_certs(tmp_path)
    authority = PortalAuthority()
    tls = server_ssl_context(certs.server_pem, client_ca_file=certs.ca_pem)
    numero = duimps.duimp_number(4444, year=26)
    latest = duimps.latest_version(numero)
    registro = stored(
        store,
        "pucomex",
        # The version left out: the handler asks the Portal's versoes for the latest.
        {"identificacao": {"numero": numero}, "situacaoDuimp": "REGISTRADA_AGUARDANDO_CANAL"},
        event="dimp-registro-import",
    )
    situacao = stored(
        store,
        "pucomex",
        {
            "identificacao": {"numero": numero, "versao": 1},
            "situacaoDuimp": "DESEMBARACADA_AGUARDANDO_ENTREGA_CARGA",
            "canal": "VERDE",
            "dataEvento": "2026-11-30T10:15:00-03:00",
            "message": "Duimp desembaraçada",
        },
        event="dimp-situacao-import",
    )
    results = MemoryResults()
    with serve(create_portal_api_app(authority), tls) as url:

        async def run() -> list[int]:
            async with PortalClient(portal_settings(url, certs), backoff_seconds=0.01) as portal:
                ctx = context(results, portal_client=portal)
                return [await dispatch(handlers.duimp.router, n, ctx) for n in (registro, situacao)]

        assert asyncio.run(run()) == [1, 1]
    kept = asyncio.run(results.load("duimp", f"{numero}:{latest}"))
    assert kept is not None and kept["versaoDeclaracao"] == str(latest)
    seen = asyncio.run(results.load("duimp-situacao", situacao.idempotency_key))
    assert seen is not None
    assert (seen["evento"], seen["situacao"], seen["canal"]) == (
        "dimp-situacao-import",
        "DESEMBARACADA_AGUARDANDO_ENTREGA_CARGA",
        "VERDE",
    )
    assert seen["dataEvento"] == "2026-11-30T10:15:00-03:00"


def test_events_other_than_duimp_run_no_duimp_handler(store: Store) -> None:
    note = stored(store, "pucomex", {"evento": "pcce.icms-solicitacao", "dados": {"numero": "x"}})
    assert asyncio.run(dispatch(handlers.duimp.router, note, context(MemoryResults()))) == 0


# --- InvoiCy ----------------------------------------------------------------------------------

KEY = "43240512345678000199550010000012341000012345"


def test_invoicy_keeps_the_status_history_of_each_document(store: Store) -> None:
    emitted = stored(
        store,
        "invoicy",
        {"Modulo": 1, "TipoNotificacao": 1, "ChaveAcesso": KEY, "Situacao": "Emitido"},
    )
    authorized = stored(
        store,
        "invoicy",
        {"Modulo": 1, "TipoNotificacao": 7, "ChaveAcesso": KEY, "Situacao": "Autorizado"},
    )
    other = stored(
        store, "invoicy", {"Modulo": 4, "TipoNotificacao": 2, "DocNumero": 77, "DocSerie": "A1"}
    )
    results = MemoryResults()
    ctx = context(results)

    async def run() -> None:
        for note in (emitted, authorized, emitted, other):  # the third is a replay
            assert await dispatch(handlers.invoicy.router, note, ctx) == 1

    asyncio.run(run())
    history = asyncio.run(results.load("invoicy-document", KEY))
    assert history is not None
    assert [(h["event"], h["status"]) for h in history] == [
        ("nfe.documento-emitido", "Emitido"),
        ("nfe.documento-autorizado", "Autorizado"),
    ]
    assert [h["notification"] for h in history] == [
        emitted.idempotency_key,
        authorized.idempotency_key,
    ]
    entries = asyncio.run(results.load("invoicy-document", "A1-77"))
    assert entries is not None
    (entry,) = entries
    assert entry["status"] == "nfse.status-atualizado"


def test_invoicy_without_a_document_key_fails_clearly(store: Store) -> None:
    note = stored(store, "invoicy", {"Modulo": 1, "TipoNotificacao": 2})
    with pytest.raises(ValueError, match="names no document"):
        asyncio.run(dispatch(handlers.invoicy.router, note, context(MemoryResults())))
