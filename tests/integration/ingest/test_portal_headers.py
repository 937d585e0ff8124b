"""Ingest as the Portal delivers: the ``secret`` header as the credential, ``event-type`` as the
event id, and neither a credential header nor ``Authorization`` ever stored."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import pytest

from receiver.config import Settings
from receiver.ingest.allowlist import Allowlist
from receiver.ingest.app import create_app
from receiver.store import NoteFilter, Store
from tests.conftest import ALLOWLIST, AppClient

pytestmark = pytest.mark.anyio

SECRET = "0484a6e22cf66a2d3da8953789f8c6b3"
OLD_SECRET = "9f1c2b7d44e0a6c8b3d5e7f901a2c4e6"
INVOICY_KEY = "invoicy-key-7b3e91d0c2"
BODY = (
    b'{"identificacao":{"numero":"26BR00000000198","versao":2},'
    b'"situacaoDuimp":"DESEMBARACADA_AGUARDANDO_ENTREGA_CARGA","canal":"VERDE",'
    b'"dataEvento":"2026-11-30T10:15:00-03:00","message":"Duimp 26BR00000000198 desembaracada"}'
)
PORTAL_HEADERS = {
    "Content-Type": "application/json",
    "event-type": "dimp-situacao-import",
    "destinatario-tipo": "CNPJ",
    "destinatario-id": "00000000000191",
}


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        sources={
            "pucomex": {
                "credentials": [
                    {"type": "header", "name": "secret", "value": SECRET},
                    {"type": "header", "name": "Secret", "value": OLD_SECRET},  # rotation
                ]
            },
            "sintegre": {"credentials": []},
            "invoicy": {"credentials": [{"type": "header", "name": "X-Key", "value": INVOICY_KEY}]},
        }
    )


@pytest.fixture
async def portal(settings: Settings, store: Store) -> AsyncIterator[AppClient]:
    app = create_app(settings, store=store, allowlist=Allowlist.from_mapping(ALLOWLIST))
    store.start()
    yield AppClient(app, store)


def stored(store: Store) -> list[dict[str, object]]:
    return list(store.notes(NoteFilter()))


@pytest.mark.parametrize("secret", [SECRET, OLD_SECRET])
async def test_a_portal_delivery_is_stored_with_its_event_from_event_type(
    portal: AppClient, secret: str
) -> None:
    async with portal.client() as client:
        answer = await client.post(
            "/webhooks/pucomex", content=BODY, headers={**PORTAL_HEADERS, "secret": secret}
        )
    assert answer.status_code == 200, answer.text
    row = portal.store.note(answer.json()["id"])
    assert row is not None
    assert row["event"] == "dimp-situacao-import"
    assert row["body"] == BODY
    headers = json.loads(str(row["headers"]))
    assert headers["event-type"] == "dimp-situacao-import"
    assert headers["destinatario-id"] == "00000000000191"
    assert "secret" not in headers
    assert secret not in str(row["headers"])


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"secret": SECRET[:-1]},
        {"secret": SECRET + "0"},
        {"secret": ""},
        {"secret": SECRET.upper()},
        {"Authorization": f"Bearer {SECRET}"},  # the right value in the wrong place
        {"x-secret": SECRET},
        {"X-Key": INVOICY_KEY},  # another source's credential
    ],
)
async def test_a_missing_or_wrong_secret_is_401_and_nothing_is_stored(
    portal: AppClient, credentials: dict[str, str]
) -> None:
    async with portal.client() as client:
        answer = await client.post(
            "/webhooks/pucomex", content=BODY, headers={**PORTAL_HEADERS, **credentials}
        )
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Header realm="pucomex", name="secret"'
    assert stored(portal.store) == []


async def test_the_secret_header_twice_is_refused_even_if_one_is_right(portal: AppClient) -> None:
    async with portal.client() as client:
        for pair in ((SECRET, "wrong"), (SECRET, SECRET), ("wrong", OLD_SECRET)):
            answer = await client.post(
                "/webhooks/pucomex",
                content=BODY,
                headers=[("secret", pair[0]), ("secret", pair[1]), ("event-type", "x")],
            )
            assert answer.status_code == 401
    assert stored(portal.store) == []


async def test_header_names_are_case_insensitive(portal: AppClient) -> None:
    async with portal.client() as client:
        answer = await client.post("/webhooks/pucomex", content=BODY, headers={"SECRET": SECRET})
    assert answer.status_code == 200


async def test_event_type_wins_over_the_path(portal: AppClient) -> None:
    async with portal.client() as client:
        answer = await client.post(
            "/webhooks/pucomex/duimp.registro",
            content=BODY,
            headers={**PORTAL_HEADERS, "secret": SECRET},
        )
    row = portal.store.note(answer.json()["id"])
    assert row is not None and row["event"] == "dimp-situacao-import"


@pytest.mark.parametrize(
    "event_type", [b"dimp situacao", b"dimp-*", b"-dimp", "é-evento".encode(), b"x" * 121, b""]
)
async def test_an_event_type_that_is_no_event_id_is_stored_not_refused(
    portal: AppClient, event_type: bytes
) -> None:
    async with portal.client() as client:
        answer = await client.post(
            "/webhooks/pucomex/duimp.registro",
            content=BODY,
            headers=[(b"secret", SECRET.encode()), (b"event-type", event_type)],
        )
    assert answer.status_code == 200
    row = portal.store.note(answer.json()["id"])
    assert row is not None
    assert row["event"] == "duimp.registro"  # the path's, since the header names no id
    assert "event-type" in json.loads(str(row["headers"]))


async def test_another_sources_header_credential_is_never_stored(portal: AppClient) -> None:
    async with portal.client(ip="192.0.2.9") as client:
        answer = await client.post(
            "/webhooks/invoicy/nfe.documento-autorizado",
            content=b"{}",
            headers={"x-key": INVOICY_KEY, "secret": SECRET},
        )
    assert answer.status_code == 200
    row = portal.store.note(answer.json()["id"])
    assert row is not None
    assert INVOICY_KEY not in str(row["headers"]) and SECRET not in str(row["headers"])


async def test_a_header_credential_added_by_a_reload_is_checked_and_never_stored(
    portal: AppClient, make_settings: Callable[..., Settings]
) -> None:
    """SIGHUP reloads credentials: a header credential that came with the new file is both the
    credential and one of the headers never stored, from the next request on."""
    reloaded = make_settings(
        sources={
            "pucomex": {"credentials": [{"type": "header", "name": "x-chave", "value": SECRET}]},
            "sintegre": {"credentials": []},
            "invoicy": {"credentials": []},
        }
    )
    portal.app.state.ingest.reload(reloaded, Allowlist.from_mapping(ALLOWLIST))
    async with portal.client() as client:
        refused = await client.post(
            "/webhooks/pucomex", content=BODY, headers={**PORTAL_HEADERS, "secret": SECRET}
        )
        answer = await client.post(
            "/webhooks/pucomex", content=BODY, headers={**PORTAL_HEADERS, "x-chave": SECRET}
        )
    assert refused.status_code == 401
    assert answer.status_code == 200
    row = portal.store.note(answer.json()["id"])
    assert row is not None
    assert "x-chave" not in str(row["headers"]) and SECRET not in str(row["headers"])
