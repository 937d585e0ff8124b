"""The simulator sends what the Portal sends: its headers (event-type, secret, destinatario-*, no
Authorization), the production Duimp body, a consultation that follows the emitted events, and
the 30-day automatic cancellation judged on a clock the test moves."""

from __future__ import annotations

import asyncio
import json
import ssl
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from receiver.dispatcher import Dispatcher, OutboundAuth, serve_app
from receiver.dispatcher.lifecycle import cancel_failing, cancelled_subscriptions
from receiver.dispatcher.portal_events import duimp_situation
from receiver.dispatcher.tables import AuthType
from receiver.dispatcher.validation import SubscriptionInput, brasilia_date
from receiver.outbound import outbound_ssl_context
from receiver.simulator import create_simulator_app
from receiver.store.tables import utcnow
from tests.dispatcher_support import (
    TLS,
    Recorder,
    api_client,
    dispatcher_settings,
    https_endpoint,
    sqlite_url,
)

pytestmark = pytest.mark.anyio

CHAVE = "0484a6e22cf66a2d3da8953789f8c6b3"
NUMERO = "26BR0000000198"


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset


def make(tmp_path: Path, tls: TLS, clock: Clock | None = None, **options: Any) -> Dispatcher:
    settings = dispatcher_settings(sqlite_url(tmp_path), **options)
    return Dispatcher(settings, verify=tls.client_context(), clock=clock or Clock())


async def subscribe(
    dispatcher: Dispatcher, evento: str, endpoint: str, auth: OutboundAuth | None
) -> int:
    data = SubscriptionInput(evento, endpoint, auth)
    created = await asyncio.to_thread(dispatcher.store.add_subscription, "a", data, utcnow())
    return created.id


async def test_a_duimp_event_arrives_as_the_portal_sends_it(tmp_path: Path) -> None:
    tls, recorder = TLS(), Recorder()
    async with https_endpoint(tls, recorder) as endpoint, make(tmp_path, tls) as dispatcher:
        secret = OutboundAuth(AuthType.SECRET, None, CHAVE)
        await subscribe(
            dispatcher, "dimp-situacao-import", endpoint.url + "/webhooks/pucomex", secret
        )
        result = await dispatcher.emit(
            "dimp-situacao-import",
            {
                "numero": NUMERO,
                "versao": 2,
                "situacaoDuimp": "EM_CONFERENCIA_SELECIONADA",
                "canal": "VERMELHO",
            },
        )
        await dispatcher.wait_for(result.delivery_ids, within=10)
    (received,) = recorder.requests
    assert received.headers["event-type"] == "dimp-situacao-import"
    assert received.headers["secret"] == CHAVE
    assert received.headers["destinatario-tipo"] == "CNPJ"
    assert received.headers["destinatario-id"] == "00000000000191"
    assert "authorization" not in received.headers
    body = json.loads(received.body)
    assert body["identificacao"] == {"numero": NUMERO, "versao": 2}
    assert (body["situacaoDuimp"], body["canal"]) == ("EM_CONFERENCIA_SELECIONADA", "VERMELHO")
    assert set(body) == {"identificacao", "situacaoDuimp", "canal", "dataEvento", "message"}
    assert datetime.fromisoformat(body["dataEvento"]).utcoffset() == timedelta(hours=-3)


async def test_invoicy_style_credentials_still_send_authorization_and_no_secret(
    tmp_path: Path,
) -> None:
    tls, recorder = TLS(), Recorder()
    async with https_endpoint(tls, recorder) as endpoint, make(tmp_path, tls) as dispatcher:
        bearer = OutboundAuth(AuthType.BEARER, None, "tok-erp")
        await subscribe(dispatcher, "duimp.registro", endpoint.url + "/hook", bearer)
        result = await dispatcher.emit("duimp.registro", {"numero": NUMERO, "versao": 1})
        await dispatcher.wait_for(result.delivery_ids, within=10)
    (received,) = recorder.requests
    assert received.headers["authorization"] == "Bearer tok-erp"
    assert "secret" not in received.headers
    assert received.headers["event-type"] == "duimp.registro"
    assert json.loads(received.body)["dados"] == {"numero": NUMERO, "versao": 1}


async def test_the_subscription_api_keeps_chave_secreta_and_never_answers_it(
    tmp_path: Path,
) -> None:
    settings = dispatcher_settings(sqlite_url(tmp_path))
    app = create_simulator_app(settings)
    async with app.router.lifespan_context(app), api_client(app) as client:
        body = {
            "evento": "dimp-registro-import",
            "endpoint": "https://sefaz.example/webhooks/pucomex",
        }
        created = await client.post("/portal/api/ext/webhook", json={**body, "chaveSecreta": CHAVE})
        assert created.status_code == 200 and CHAVE not in created.text
        both = await client.post(
            "/portal/api/ext/webhook",
            json={**body, "chaveSecreta": CHAVE, "autenticacao": {"tipo": "bearer", "token": "t"}},
        )
        spaced = await client.post("/portal/api/ext/webhook", json={**body, "chaveSecreta": " x"})
        listed = await client.get("/portal/api/ext/webhook?exibirInativos=true")
        wrong = await client.get("/portal/api/ext/webhook?exibirInativos=sim")
        [stored] = app.state.dispatcher.store.subscriptions("client-a")
    assert both.status_code == 422 and both.json()["field"] == "chaveSecreta"
    assert spaced.status_code == 422
    assert CHAVE not in listed.text and listed.json()[0]["ativo"] is True
    assert wrong.status_code == 422 and wrong.json()["field"] == "exibirInativos"
    assert stored.auth == OutboundAuth(AuthType.SECRET, None, CHAVE)


async def test_the_consultation_answers_the_situation_the_events_left(tmp_path: Path) -> None:
    settings = dispatcher_settings(sqlite_url(tmp_path))
    app = create_simulator_app(settings)
    dispatcher: Dispatcher = app.state.dispatcher
    async with app.router.lifespan_context(app):
        await dispatcher.emit("dimp-registro-import", {"numero": NUMERO, "versao": 1})
        registered = duimp_situation(dispatcher.store.engine, NUMERO)
        await dispatcher.emit(
            "dimp-situacao-import",
            {
                "numero": NUMERO,
                "versao": 1,
                "situacaoDuimp": "DESEMBARACADA_CARGA_ENTREGUE",
                "canal": "VERDE",
            },
        )
        await dispatcher.emit("dimp-retifica-import", {"numero": NUMERO, "versao": 3})
        cleared = duimp_situation(dispatcher.store.engine, NUMERO)
    assert registered is not None and registered.situacao == "REGISTRADA_AGUARDANDO_CANAL"
    assert cleared is not None
    assert (cleared.situacao, cleared.canal, cleared.versao) == (
        "DESEMBARACADA_CARGA_ENTREGUE",
        "VERDE",
        3,
    )


async def test_a_subscription_failing_for_30_days_is_cancelled_on_a_moved_clock(
    tmp_path: Path,
) -> None:
    clock = Clock()
    # Nothing listens on port 9 of loopback: every attempt fails at once.
    async with make(tmp_path, TLS(), clock, interval_seconds=0.01) as dispatcher:
        sid = await subscribe(dispatcher, "dimp-registro-import", "https://127.0.0.1:9/hook", None)
        result = await dispatcher.emit("dimp-registro-import", {"numero": NUMERO, "versao": 1})
        [state] = await dispatcher.wait_for(result.delivery_ids, within=10)
        assert state.status == "failed"
        clock.offset = timedelta(days=29, hours=23)
        assert await dispatcher.cancel_failing() == []
        clock.offset = timedelta(days=30, minutes=1)
        assert await dispatcher.cancel_failing() == [sid]
        assert await dispatcher.cancel_failing() == []  # once
        later = await dispatcher.emit("dimp-registro-import", {"numero": NUMERO, "versao": 1})
    assert later.delivery_ids == ()  # a cancelled subscription receives nothing
    [cancelled] = cancelled_subscriptions(dispatcher.store.engine, None)
    assert cancelled.subscription.id == sid
    assert cancelled.motivo.startswith("Cancelada automaticamente: apenas erros na entrega por 30")
    # Its failure records stay searchable, for recovery.
    assert len(dispatcher.store.failures(None, brasilia_date(utcnow()))) == 3


async def test_a_success_resets_the_30_days(tmp_path: Path) -> None:
    clock = Clock()
    tls = TLS()
    recorder = Recorder([500, 500, 500], default=200)
    async with (
        https_endpoint(tls, recorder) as endpoint,
        make(tmp_path, tls, clock, interval_seconds=0.01) as dispatcher,
    ):
        await subscribe(dispatcher, "dimp-registro-import", endpoint.url + "/hook", None)
        failed = await dispatcher.emit("dimp-registro-import", {"numero": NUMERO, "versao": 1})
        await dispatcher.wait_for(failed.delivery_ids, within=10)
        delivered = await dispatcher.emit("dimp-registro-import", {"numero": NUMERO, "versao": 2})
        [state] = await dispatcher.wait_for(delivered.delivery_ids, within=10)
        assert state.status == "delivered"
        clock.offset = timedelta(days=45)
        assert await dispatcher.cancel_failing() == []


def test_cancel_failing_ignores_subscriptions_without_failures(tmp_path: Path) -> None:
    from receiver.dispatcher import DispatchStore

    store = DispatchStore(sqlite_url(tmp_path))
    store.upgrade_schema()
    store.add_subscription("a", SubscriptionInput("x", "https://e.example/h", None), utcnow())
    assert cancel_failing(store.engine, utcnow() + timedelta(days=400), timedelta(days=30)) == []
    store.close()


def _tls11_only(tls: TLS) -> ssl.SSLContext:
    """A server that speaks TLS 1.1 and nothing newer (OpenSSL 3 needs security level 0)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.ca.issue_cert("127.0.0.1").configure_cert(context)
    context.minimum_version = ssl.TLSVersion.TLSv1_1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


async def _deliver_once(database: str, endpoint: str, verify: ssl.SSLContext) -> str:
    settings = dispatcher_settings(database, attempts=1)
    async with Dispatcher(settings, verify=verify) as dispatcher:
        await subscribe(dispatcher, "dimp-registro-import", endpoint, None)
        result = await dispatcher.emit("dimp-registro-import", {"numero": NUMERO, "versao": 1})
        [state] = await dispatcher.wait_for(result.delivery_ids, within=10)
    return state.status


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
async def test_an_endpoint_offering_only_tls_1_1_is_never_sent_to(tmp_path: Path) -> None:
    tls, recorder = TLS(), Recorder()
    async with serve_app(recorder, ssl_context=_tls11_only(tls)) as endpoint:
        # The same dispatcher with a context that still accepts TLS 1.1 delivers: the server
        # works, and the minimum version is the only difference.
        loose = tls.client_context()
        loose.minimum_version = ssl.TLSVersion.TLSv1_1
        loose.set_ciphers("DEFAULT:@SECLEVEL=0")
        assert await _deliver_once(
            sqlite_url(tmp_path, "loose.db"), endpoint.url + "/loose", loose
        ) == ("delivered")
        # The Portal's rule, and ours: TLS 1.2 at least.
        ours = outbound_ssl_context()
        tls.ca.configure_trust(ours)
        assert ours.minimum_version == ssl.TLSVersion.TLSv1_2
        assert (
            await _deliver_once(sqlite_url(tmp_path, "ours.db"), endpoint.url + "/ours", ours)
            == "failed"
        )
    assert [r.path for r in recorder.requests] == ["/loose"]
