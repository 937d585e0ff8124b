"""The subscription API over HTTP (in-process app, real SQLite file): the seed's requests and
answers, every field rule, ownership between two clients, the failure search, /sim controls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from receiver.dispatcher import Dispatcher, create_dispatcher_app
from receiver.dispatcher.openapi import OPENAPI_PATH
from receiver.dispatcher.validation import brasilia_date
from receiver.store.tables import utcnow
from tests.dispatcher_support import TOKEN_A, TOKEN_B, api_client, dispatcher_settings, sqlite_url

pytestmark = pytest.mark.anyio

WEBHOOK = "/portal/api/ext/webhook"
SUB = {"evento": "duimp.registro", "endpoint": "https://sefaz.example.gov.br/webhook"}


class Harness:
    def __init__(self, app: Any, dispatcher: Dispatcher, endpoint: list[int]) -> None:
        self.app = app
        self.dispatcher = dispatcher
        self.answers = endpoint  # statuses the mock endpoint answers with, in turn (then 200)
        self.a = api_client(app, TOKEN_A)
        self.b = api_client(app, TOKEN_B)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Harness]:
    answers: list[int] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        return httpx.Response(answers.pop(0) if answers else 200)

    settings = dispatcher_settings(sqlite_url(tmp_path), attempts=2, interval_seconds=0.01)
    dispatcher = Dispatcher(settings, transport=httpx.MockTransport(endpoint))
    async with dispatcher:
        harness = Harness(create_dispatcher_app(settings, dispatcher), dispatcher, answers)
        async with harness.a, harness.b:
            yield harness


async def test_subscribe_answers_the_seeds_fields(api: Harness) -> None:
    answer = await api.a.post(WEBHOOK, json=SUB)
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"id", "evento", "endpoint"}
    assert isinstance(body["id"], int)
    assert (body["evento"], body["endpoint"]) == (SUB["evento"], SUB["endpoint"])


async def test_list_change_delete(api: Harness) -> None:
    first = (await api.a.post(WEBHOOK, json=SUB)).json()
    second = (await api.a.post(WEBHOOK, json={**SUB, "evento": "duimp.cancelamento"})).json()
    assert (await api.a.get(WEBHOOK)).json() == [first, second]

    changed = {"id": first["id"], "evento": "duimp.retificacao", "endpoint": "https://x.example/"}
    answer = await api.a.put(f"{WEBHOOK}/{first['id']}", json=changed)
    assert (answer.status_code, answer.json()) == (200, changed)

    deleted = await api.a.request("DELETE", f"{WEBHOOK}/{second['id']}", json={"id": second["id"]})
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert (await api.a.get(WEBHOOK)).json() == [changed]
    # Gone means gone: changing or deleting it again is an unknown id.
    assert (await api.a.delete(f"{WEBHOOK}/{second['id']}")).status_code == 404
    assert (
        await api.a.put(f"{WEBHOOK}/{second['id']}", json={**SUB, "id": second["id"]})
    ).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"endpoint": SUB["endpoint"]}, 422, "evento"),
        ({"evento": "duimp.registro"}, 422, "endpoint"),
        ({**SUB, "evento": "e" * 41}, 422, "evento"),
        ({**SUB, "evento": None}, 422, "evento"),
        ({**SUB, "evento": 7}, 422, "evento"),
        ({**SUB, "endpoint": "https://a.example/" + "p" * 483}, 422, "endpoint"),
        ({**SUB, "endpoint": "http://sefaz.example.gov.br/webhook"}, 422, "endpoint"),
        ({**SUB, "endpoint": "https://u:p@sefaz.example/"}, 422, "endpoint"),
        ({**SUB, "endpoint": ["https://a.example"]}, 422, "endpoint"),
        ({**SUB, "callback": "https://a.example"}, 422, "callback"),
        ({**SUB, "autenticacao": {"tipo": "bearer"}}, 422, "autenticacao.token"),
        ({**SUB, "autenticacao": {"tipo": "ntlm"}}, 422, "autenticacao.tipo"),
    ],
)
async def test_field_rules_name_the_field(
    api: Harness, body: dict[str, Any], status: int, field: str
) -> None:
    answer = await api.a.post(WEBHOOK, json=body)
    assert answer.status_code == status
    assert answer.json()["field"] == field
    assert answer.json()["message"].startswith(field)
    assert (await api.a.get(WEBHOOK)).json() == []


async def test_lengths_at_the_limit_are_accepted(api: Harness) -> None:
    endpoint = "https://a.example/" + "p" * 482
    assert len(endpoint) == 500
    answer = await api.a.post(WEBHOOK, json={"evento": "e" * 40, "endpoint": endpoint})
    assert answer.status_code == 200


@pytest.mark.parametrize(
    ("content", "status"),
    [(b"", 400), (b"{", 400), (b"[]", 400), (b'"x"', 400), (b"{}" + b" " * 70_000, 413)],
)
async def test_unreadable_or_oversized_bodies(api: Harness, content: bytes, status: int) -> None:
    answer = await api.a.post(WEBHOOK, content=content)
    assert answer.status_code == status
    assert answer.json()["field"] == "body"


async def test_change_needs_the_id_in_the_body_and_the_path(api: Harness) -> None:
    created = (await api.a.post(WEBHOOK, json=SUB)).json()
    path = f"{WEBHOOK}/{created['id']}"
    missing = await api.a.put(path, json=SUB)
    assert (missing.status_code, missing.json()["field"]) == (422, "id")
    other = await api.a.put(path, json={**SUB, "id": created["id"] + 1})
    assert (other.status_code, other.json()["field"]) == (409, "id")
    bad_path = await api.a.put(f"{WEBHOOK}/abc", json={**SUB, "id": 1})
    assert (bad_path.status_code, bad_path.json()["field"]) == (422, "id")
    too_long = await api.a.delete(f"{WEBHOOK}/12345678901")
    assert (too_long.status_code, too_long.json()["field"]) == (422, "id")
    unknown = await api.a.put(f"{WEBHOOK}/999", json={**SUB, "id": 999})
    assert unknown.status_code == 404


async def test_unknown_clients_get_401(api: Harness) -> None:
    for token in (None, "wrong-token"):
        async with api_client(api.app, token) as client:
            answer = await client.get(WEBHOOK)
            assert answer.status_code == 401
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert (await client.post(WEBHOOK, json=SUB)).status_code == 401


async def test_a_client_sees_and_changes_only_its_own(api: Harness) -> None:
    mine = (await api.a.post(WEBHOOK, json=SUB)).json()
    theirs = (await api.b.post(WEBHOOK, json=SUB)).json()
    assert (await api.a.get(WEBHOOK)).json() == [mine]
    assert (await api.b.get(WEBHOOK)).json() == [theirs]

    hijack = {**SUB, "id": theirs["id"], "endpoint": "https://attacker.example/"}
    assert (await api.a.put(f"{WEBHOOK}/{theirs['id']}", json=hijack)).status_code == 404
    assert (await api.a.delete(f"{WEBHOOK}/{theirs['id']}")).status_code == 404
    for action in ("resend-pending", "send-latest"):
        assert (await api.a.post(f"/sim/subscriptions/{theirs['id']}/{action}")).status_code == 404
    assert (await api.a.get(f"/sim/subscriptions/{theirs['id']}/deliveries")).status_code == 404
    # B's subscription is untouched.
    assert (await api.b.get(WEBHOOK)).json() == [theirs]


async def test_credentials_are_never_answered_back(api: Harness) -> None:
    secret = "tok-outbound-5e6f7a8b9c"
    body = {**SUB, "autenticacao": {"tipo": "bearer", "token": secret}}
    created = await api.a.post(WEBHOOK, json=body)
    listed = await api.a.get(WEBHOOK)
    assert secret not in created.text
    assert secret not in listed.text


async def emit_failing(api: Harness, evento: str = "duimp.registro") -> dict[str, Any]:
    """One event to A's subscription whose endpoint fails both attempts."""
    api.answers.extend([500, 500])
    answer = await api.a.post("/sim/events", json={"evento": evento, "dados": {"n": 1}})
    emitted: dict[str, Any] = answer.json()
    await api.dispatcher.wait_for(emitted["deliveries"], within=10)
    return emitted


async def test_failures_are_searched_by_date_and_owner(api: Harness) -> None:
    await api.a.post(WEBHOOK, json=SUB)
    await emit_failing(api)
    today = brasilia_date(utcnow())
    yesterday = brasilia_date(utcnow() - timedelta(days=1))

    default = await api.a.get(f"{WEBHOOK}/falhas")
    assert default.status_code == 200
    failures = default.json()
    assert len(failures) == 2
    for failure in failures:
        assert set(failure) == {"id", "data", "descricao", "evento", "conteudo"}
        assert failure["data"] == today
        assert failure["evento"] == "duimp.registro"
        assert '"dados":{"n":1}' in failure["conteudo"]
        assert "HTTP 500" in failure["descricao"]
    assert (await api.a.get(f"{WEBHOOK}/falhas", params={"data": today})).json() == failures
    # The seed shows the date as a JSON field of the GET, and as a number.
    by_body = await api.a.request("GET", f"{WEBHOOK}/falhas", json={"data": int(today)})
    assert by_body.json() == failures
    assert (await api.a.get(f"{WEBHOOK}/falhas", params={"data": yesterday})).json() == []
    # Another client's failures are not shown.
    assert (await api.b.get(f"{WEBHOOK}/falhas")).json() == []


@pytest.mark.parametrize("data", ["2024-01-31", "3101202", "32012024", "abcdefgh", ""])
async def test_failure_search_date_format(api: Harness, data: str) -> None:
    answer = await api.a.get(f"{WEBHOOK}/falhas", params={"data": data})
    assert (answer.status_code, answer.json()["field"]) == (422, "data")
    in_body = await api.a.request("GET", f"{WEBHOOK}/falhas", json={"data": data})
    assert (in_body.status_code, in_body.json()["field"]) == (422, "data")


async def test_failure_search_refuses_two_different_dates(api: Harness) -> None:
    answer = await api.a.request(
        "GET", f"{WEBHOOK}/falhas", params={"data": "17092018"}, json={"data": "18092018"}
    )
    assert (answer.status_code, answer.json()["field"]) == (409, "data")


async def test_sim_events_and_deliveries(api: Harness) -> None:
    subscription = (await api.a.post(WEBHOOK, json=SUB)).json()
    emitted = await api.a.post(
        "/sim/events",
        json={"evento": "duimp.registro", "dados": {"numero": "24BR0000000001", "versao": 1}},
    )
    assert emitted.status_code == 200
    ids = emitted.json()["deliveries"]
    assert len(ids) == 1
    await api.dispatcher.wait_for(ids, within=10)
    listed = (await api.a.get(f"/sim/subscriptions/{subscription['id']}/deliveries")).json()
    assert [(d["id"], d["status"], d["attempts"]) for d in listed] == [(ids[0], "delivered", 1)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"dados": {}}, "evento"),
        ({"evento": "duimp.registro", "dados": []}, "dados"),
        ({"evento": "duimp.registro", "dataHora": "yesterday"}, "dataHora"),
        ({"evento": "duimp.registro", "dataHora": None}, "dataHora"),
        ({"evento": "duimp.registro", "extra": 1}, "extra"),
    ],
)
async def test_sim_events_field_rules(api: Harness, body: dict[str, Any], field: str) -> None:
    answer = await api.a.post("/sim/events", json=body)
    assert (answer.status_code, answer.json()["field"]) == (422, field)


async def test_resend_pending_and_send_latest(api: Harness) -> None:
    subscription = (await api.a.post(WEBHOOK, json=SUB)).json()
    sid = subscription["id"]
    failed = await emit_failing(api)
    resent = await api.a.post(f"/sim/subscriptions/{sid}/resend-pending")
    assert resent.json() == {"deliveries": failed["deliveries"]}
    (state,) = await api.dispatcher.wait_for(failed["deliveries"], within=10)
    assert state.status == "delivered"
    # Nothing is pending any more.
    assert (await api.a.post(f"/sim/subscriptions/{sid}/resend-pending")).json() == {
        "deliveries": []
    }

    latest = await api.a.post(f"/sim/subscriptions/{sid}/send-latest")
    (new_id,) = latest.json()["deliveries"]
    assert new_id not in failed["deliveries"]
    (again,) = await api.dispatcher.wait_for([new_id], within=10)
    assert (again.event_id, again.status) == (failed["event"], "delivered")


async def test_send_latest_without_any_event_sends_nothing(api: Harness) -> None:
    subscription = (await api.a.post(WEBHOOK, json={**SUB, "evento": "lpco.registro"})).json()
    answer = await api.a.post(f"/sim/subscriptions/{subscription['id']}/send-latest")
    assert answer.json() == {"deliveries": []}


async def test_unlisted_methods_are_405_naming_the_allowed_ones(api: Harness) -> None:
    answer = await api.a.patch(WEBHOOK, json=SUB)
    assert answer.status_code == 405
    assert set(answer.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert (await api.a.put(f"{WEBHOOK}/falhas", json={})).status_code == 405


async def test_the_openapi_document_matches_the_routes(api: Harness) -> None:
    answer = await api.a.get(OPENAPI_PATH)
    assert answer.status_code == 200
    document = answer.json()
    assert document["openapi"].startswith("3.1")
    documented = {
        (path, method.upper()) for path, item in document["paths"].items() for method in item
    }
    served = set()
    for route in api.app.routes:
        if isinstance(route, Route) and route.path not in (OPENAPI_PATH, "/healthz"):
            path = route.path.replace("{id:subscription_id}", "{id}")
            served |= {(path, method) for method in route.methods or () if method != "HEAD"}
    assert documented == served
    post = document["paths"][WEBHOOK]["post"]["requestBody"]["content"]["application/json"]
    assert post["schema"] == {"$ref": "#/components/schemas/NovaAssinatura"}
    schema = document["components"]["schemas"]["NovaAssinatura"]
    assert schema["required"] == ["evento", "endpoint"]
    assert schema["properties"]["evento"]["maxLength"] == 40
    assert schema["properties"]["endpoint"]["maxLength"] == 500


async def test_deliveries_answer_in_order_of_emission(api: Harness) -> None:
    await api.a.post(WEBHOOK, json=SUB)
    results = await asyncio.gather(
        *(api.a.post("/sim/events", json={"evento": "duimp.registro"}) for _ in range(5))
    )
    ids = [delivery for result in results for delivery in result.json()["deliveries"]]
    assert len(set(ids)) == 5
    states = await api.dispatcher.wait_for(ids, within=10)
    assert {state.status for state in states} == {"delivered"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
