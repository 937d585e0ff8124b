"""The simulated Portal API in process: chave-acesso, versoes, and the fresh CSRF token of every
answer (the TLS side is tested in tests/integration/portal/test_api.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from receiver.dispatcher.portal_events import SituationChange
from receiver.simulator.portal_api import (
    CSRF_KEPT,
    PortalAuthority,
    SimulatedDuimps,
    create_portal_api_app,
)

NUMERO = "26BR0000000198"
CLIENTS = {"erp": "s3cr3t-9f1b"}


def _call(work: Any, source: SimulatedDuimps | None = None) -> Any:
    app = create_portal_api_app(PortalAuthority(clients=CLIENTS), duimps_source=source)

    async def go() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://portal.test") as raw:
            auth = await raw.post(
                "/portal/api/autenticar/chave-acesso",
                headers={"Client-Id": "erp", "Client-Secret": CLIENTS["erp"], "Role-Type": "X"},
            )
            assert auth.status_code == 200
            session = {
                "Authorization": auth.headers["set-token"],
                "X-CSRF-Token": auth.headers["x-csrf-token"],
            }
            return await work(raw, session)

    return asyncio.run(go())


def test_a_client_that_never_takes_the_fresh_token_is_refused_in_the_end() -> None:
    async def work(raw: httpx.AsyncClient, stale: dict[str, str]) -> list[int]:
        path = f"/duimp-api/api/ext/duimp/{NUMERO}/versoes"
        return [(await raw.get(path, headers=stale)).status_code for _ in range(CSRF_KEPT + 1)]

    answers = _call(work)
    assert answers[:CSRF_KEPT] == [200] * CSRF_KEPT and answers[-1] == 401


def test_a_client_that_takes_each_fresh_token_goes_on_for_ever() -> None:
    async def work(raw: httpx.AsyncClient, session: dict[str, str]) -> set[int]:
        seen = set()
        for _ in range(CSRF_KEPT + 5):
            answer = await raw.get(f"/duimp-api/api/ext/duimp/{NUMERO}/1", headers=session)
            seen.add(answer.status_code)
            assert answer.headers["x-csrf-token"] != session["X-CSRF-Token"]
            session = {**session, "X-CSRF-Token": answer.headers["x-csrf-token"]}
        return seen

    assert _call(work) == {200}


def test_versoes_and_the_consultation_follow_the_emitted_events() -> None:
    known = SituationChange(NUMERO, 3, "DESEMBARACADA_CARGA_ENTREGUE", "VERMELHO")
    source = SimulatedDuimps(lambda numero: known if numero == NUMERO else None)

    async def work(raw: httpx.AsyncClient, session: dict[str, str]) -> Any:
        versions = await raw.get(f"/duimp-api/api/ext/duimp/{NUMERO}/versoes", headers=session)
        session["X-CSRF-Token"] = versions.headers["x-csrf-token"]
        duimp = await raw.get(f"/duimp-api/api/ext/duimp/{NUMERO}/3", headers=session)
        return versions.json(), duimp.json()

    versions, duimp = _call(work, source)
    assert versions == [{"numero": NUMERO, "versao": v} for v in (1, 2, 3)]
    assert duimp["situacaoDeclaracao"] == "DESEMBARACADA_CARGA_ENTREGUE"
    assert duimp["canalSelecao"] == 3


def test_an_unknown_number_has_no_versions() -> None:
    async def work(raw: httpx.AsyncClient, session: dict[str, str]) -> int:
        answer = await raw.get("/duimp-api/api/ext/duimp/NOPE/versoes", headers=session)
        return answer.status_code

    assert _call(work) == 404
