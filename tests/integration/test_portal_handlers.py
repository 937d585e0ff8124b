"""The reference handlers end to end, each from a notification stored in a real SQLite store:
Duimp against the Portal API stand-in over mutual TLS, SINtegre against a real file server,
InvoiCy with the status history."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

import handlers.duimp
import handlers.invoicy
import handlers.sintegre
from receiver import Context, Notification, Retry, Router
from receiver.dispatcher import duimps
from receiver.dispatcher.portal_api import PortalAuthority, create_portal_api_app
from receiver.dispatcher.tls import server_ssl_context
from receiver.portal import PortalClient
from receiver.sources import dedup_key, parse
from receiver.store import Incoming, Store
from tests.integration.portal_support import MemoryResults, make_certs, portal_settings, serve


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path}/r.db")
    store.create_schema()
    yield store
    store.close()


def stored(store: Store, source: str, payload: Any, event: str | None = None) -> Notification:
    """Store a body as ingest does, read it back, and make the Notification the worker would."""
    body = json.dumps(payload, ensure_ascii=False).encode()
    (receipt,) = store.append_now(
        [Incoming(source, event, "127.0.0.1", {}, body, dedup_key(source, body))]
    )
    row = store.note(receipt.id)
    assert row is not None
    parsed = parse(source, bytes(row["body"]), row["event"])
    return Notification(
        id=row["id"],
        source=source,
        event=parsed.event,
        received_at=row["received_at"],
        payload=parsed.payload,
        body=bytes(row["body"]),
        headers=json.loads(row["headers"]),
        idempotency_key=row["dedup_key"],
    )


def context(results: MemoryResults, **fields: Any) -> Context:
    return Context(
        handler="test", attempt=1, logger=logging.getLogger("test"), results=results, **fields
    )


async def dispatch(router: Router, note: Notification, ctx: Context) -> int:
    """Run every handler of ``router`` that matches, as the worker would; how many ran."""
    routes = [route for route in router.routes if route.matches(note.source, note.event)]
    for route in routes:
        await route.handler(note, ctx)
    return len(routes)


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
    assert set(results.data) == {("duimp", f"{numero}:1"), ("duimp", f"{numero}:2")}
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


def test_a_duimp_notification_without_numero_fails_clearly(store: Store) -> None:
    note = stored(store, "pucomex", {"evento": "duimp.registro", "dados": {}})
    with pytest.raises(ValueError, match=r"identificacao\.numero \(or dados\.numero\)"):
        asyncio.run(
            dispatch(handlers.duimp.router, note, context(MemoryResults(), portal_client=object()))
        )


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
    assert set(results.data) == {("duimp-situacao", note.idempotency_key) for note in notes}
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


# --- SINtegre ---------------------------------------------------------------------------------

PRODUCT = bytes(range(256)) * 4096  # 1 MiB


class Files:
    def __init__(self) -> None:
        self.hits: list[str] = []
        self.failing = 0

    def app(self) -> Starlette:
        async def product(request: Request) -> Response:
            self.hits.append(request.url.path)
            if self.failing:
                self.failing -= 1
                return Response(status_code=503)
            return Response(PRODUCT, media_type="application/zip")

        async def endless(request: Request) -> StreamingResponse:
            self.hits.append(request.url.path)

            async def chunks() -> Any:
                for _ in range(64):
                    yield b"\0" * 65536

            return StreamingResponse(chunks())  # no Content-Length: the limit applies while reading

        return Starlette(
            routes=[Route("/produtos/{name}", product), Route("/grande/{name}", endless)]
        )


@pytest.fixture
def files() -> Iterator[tuple[Files, str]]:
    served = Files()
    with serve(served.app()) as url:
        yield served, url


def sintegre_payload(uri: str) -> dict[str, str]:
    return {
        "Nome": "Carga Horária Verificada",
        "Processo": "Programação Diária",
        "MacroProcesso": "Programação da Operação",
        "DataProduto": "02/05/2024",
        "Periodicidade": "2024-05-02T00:00:00",
        "PeriodicidadeFinal": "2024-05-02T23:59:59",
        "Uri": uri,
    }


def test_sintegre_downloads_once_with_checksum(
    store: Store, tmp_path: Path, files: tuple[Files, str]
) -> None:
    served, url = files
    note = stored(store, "sintegre", sintegre_payload(f"{url}/produtos/carga%20horaria.zip"))
    results, data = MemoryResults(), tmp_path / "data"

    async def run(times: int) -> None:
        async with httpx.AsyncClient() as http:
            ctx = context(results, data_dir=data, extras={"http_client": http})
            for _ in range(times):
                await dispatch(handlers.sintegre.router, note, ctx)

    asyncio.run(run(2))
    (saved,) = (data / "sintegre").iterdir()
    assert saved.read_bytes() == PRODUCT and saved.name.endswith("-carga_horaria.zip")
    record = asyncio.run(results.load("sintegre-download", note.idempotency_key))
    assert record is not None
    assert record["sha256"] == hashlib.sha256(PRODUCT).hexdigest()
    assert record["size"] == len(PRODUCT) and record["file"] == saved.name
    assert served.hits == ["/produtos/carga horaria.zip"]  # the replay did not download again

    saved.write_bytes(b"damaged")  # a file that no longer matches its record is fetched again
    asyncio.run(run(1))
    assert saved.read_bytes() == PRODUCT and len(served.hits) == 2


def test_sintegre_refuses_a_file_over_the_limit(
    store: Store, tmp_path: Path, files: tuple[Files, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    served, url = files
    monkeypatch.setattr(handlers.sintegre, "MAX_FILE_BYTES", 1_000_000)
    note = stored(store, "sintegre", sintegre_payload(f"{url}/grande/enorme.zip"))
    results, data = MemoryResults(), tmp_path / "data"
    with pytest.raises(ValueError, match="1000000 byte limit"):
        asyncio.run(dispatch(handlers.sintegre.router, note, context(results, data_dir=data)))
    assert list((data / "sintegre").iterdir()) == []  # no partial file left behind
    assert results.data == {}
    big = stored(store, "sintegre", sintegre_payload(f"{url}/produtos/declarado.zip"))
    with pytest.raises(ValueError, match="over the 1000000 limit"):  # Content-Length says so
        asyncio.run(dispatch(handlers.sintegre.router, big, context(results, data_dir=data)))
    assert list((data / "sintegre").iterdir()) == []
    assert served.hits == ["/grande/enorme.zip", "/produtos/declarado.zip"]


def test_sintegre_server_errors_ask_for_a_retry(
    store: Store, tmp_path: Path, files: tuple[Files, str]
) -> None:
    served, url = files
    served.failing = 1
    note = stored(store, "sintegre", sintegre_payload(f"{url}/produtos/p.zip"))
    results, data = MemoryResults(), tmp_path / "data"
    with pytest.raises(Retry):
        asyncio.run(dispatch(handlers.sintegre.router, note, context(results, data_dir=data)))
    asyncio.run(dispatch(handlers.sintegre.router, note, context(results, data_dir=data)))
    assert len(list((data / "sintegre").iterdir())) == 1


def test_sintegre_without_a_folder_says_so(store: Store) -> None:
    note = stored(store, "sintegre", sintegre_payload("https://sintegre.ons.org.br/x.zip"))
    with pytest.raises(RuntimeError, match="store_dir"):
        asyncio.run(dispatch(handlers.sintegre.router, note, context(MemoryResults())))


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
