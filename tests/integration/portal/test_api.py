"""The Portal client against the Portal API stand-in on a real HTTPS uvicorn server that requires
a client certificate (certificates made here with trustme)."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from receiver.dispatcher.tls import client_identity, server_ssl_context
from receiver.errors import PortalAuthError, PortalError
from receiver.portal import PortalClient
from receiver.simulator import duimps
from receiver.simulator.portal_api import CsrfRenewal, PortalAuthority, portal_api_routes
from tests.integration.portal.support import Certs, StatusLog, make_certs, portal_settings, serve

NUMERO = "24BR0000012345"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def _app(authority: PortalAuthority) -> StatusLog:
    async def whoami(request: Request) -> JSONResponse:
        tls = request.scope.get("extensions", {}).get("tls", {})
        return JSONResponse(
            {
                "certificate": client_identity(request.scope),
                "sha256": tls.get("client_cert_sha256"),
                "session": authority.identity_of(request),
            }
        )

    routes = [*portal_api_routes(authority), Route("/whoami", whoami)]
    app = Starlette(routes=routes)
    app.add_middleware(CsrfRenewal, authority=authority)
    return StatusLog(app)


class Portal:
    def __init__(self, url: str, authority: PortalAuthority, log: StatusLog) -> None:
        self.url, self.authority, self.log = url, authority, log


@pytest.fixture(scope="module")
def server(certs: Certs) -> Iterator[Portal]:
    authority = PortalAuthority(clients={"erp-client": "s3cr3t-9f1b"})
    log = _app(authority)
    context = server_ssl_context(certs.server_pem, client_ca_file=certs.ca_pem)
    with serve(log, context) as url:
        yield Portal(url, authority, log)


@pytest.fixture
def portal(server: Portal) -> Portal:
    server.authority.revoke_all()
    server.authority.authentications = 0
    server.authority.token_lifetime_seconds = 3600
    server.log.answers.clear()
    return server


def client(portal: Portal, certs: Certs, **changes: Any) -> PortalClient:
    return PortalClient(portal_settings(portal.url, certs, **changes), backoff_seconds=0.01)


def test_authenticates_with_certificate_and_fetches_the_duimp(portal: Portal, certs: Certs) -> None:
    async def run() -> dict[str, Any]:
        async with client(portal, certs) as api:
            return await api.duimp(NUMERO, "1")

    found = asyncio.run(run())
    expected = json.loads(json.dumps(duimps.duimp(NUMERO, 1)))
    assert found == expected
    assert found["numeroDeclaracao"] == NUMERO and found["versaoDeclaracao"] == "1"
    assert portal.authority.authentications == 1
    assert portal.log.answers == [
        ("POST", "/portal/api/autenticar", 200),
        ("GET", f"/duimp-api/api/ext/duimp/{NUMERO}/1", 200),
    ]


def test_the_version_in_force_when_no_version_is_given(portal: Portal, certs: Certs) -> None:
    async def run() -> dict[str, Any]:
        async with client(portal, certs) as api:
            return await api.duimp(NUMERO)

    found = asyncio.run(run())
    assert found["versaoDeclaracao"] == str(duimps.latest_version(NUMERO))
    # As the Portal's clients do it: the versions first, then the latest one.
    assert [path for _, path, _ in portal.log.answers[1:]] == [
        f"/duimp-api/api/ext/duimp/{NUMERO}/versoes",
        f"/duimp-api/api/ext/duimp/{NUMERO}/{duimps.latest_version(NUMERO)}",
    ]


def test_every_answer_carries_a_fresh_csrf_token_that_the_client_sends_next(
    portal: Portal, certs: Certs
) -> None:
    from receiver.portal.client import PortalClient as Client

    seen: list[str] = []

    async def run() -> None:
        async with client(portal, certs) as api:
            for _ in range(3):
                response = await api.request("GET", f"/duimp-api/api/ext/duimp/{NUMERO}/1")
                seen.append(response.headers["x-csrf-token"])
            token = await api.tokens.current()
            assert token.csrf == seen[-1]

    asyncio.run(run())
    assert len(set(seen)) == 3 and Client is PortalClient


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_the_verified_certificate_reaches_the_scope(certs: Certs, http: str) -> None:
    authority = PortalAuthority()
    context = server_ssl_context(certs.server_pem, client_ca_file=certs.ca_pem)
    with serve(_app(authority), context, http=http) as url:
        portal = Portal(url, authority, StatusLog(Starlette()))

        async def run() -> Any:
            async with client(portal, certs) as api:
                return (await api.request("GET", "/whoami")).json()

        seen = asyncio.run(run())
    assert seen["certificate"] is not None and "O=Sefaz SP" in seen["certificate"]
    assert len(seen["sha256"]) == 64
    assert seen["session"] == f"cert:{seen['certificate']}"


def test_two_certificates_are_two_identities(portal: Portal, certs: Certs) -> None:
    async def who(cert: Path) -> Any:
        async with client(portal, certs, cert_file=cert) as api:
            return (await api.request("GET", "/whoami")).json()["certificate"]

    first, second = asyncio.run(who(certs.client_pem)), asyncio.run(who(certs.other_client_pem))
    assert "Sefaz SP" in first and "ERP Importadora" in second


def test_client_id_and_secret_authenticate(portal: Portal, certs: Certs) -> None:
    async def run() -> Any:
        async with client(
            portal, certs, client_id="erp-client", client_secret="s3cr3t-9f1b"
        ) as api:
            return (await api.request("GET", "/whoami")).json()

    assert asyncio.run(run())["session"] == "client-id:erp-client"


def test_a_wrong_client_secret_is_refused(portal: Portal, certs: Certs) -> None:
    async def run() -> None:
        async with client(portal, certs, client_id="erp-client", client_secret="nope") as api:
            await api.duimp(NUMERO, "1")

    with pytest.raises(PortalAuthError) as refused:
        asyncio.run(run())
    assert refused.value.status == 401
    assert refused.value.endpoint == "/portal/api/autenticar/chave-acesso"
    assert portal.authority.authentications == 0


def test_client_credentials_at_the_certificates_endpoint_are_refused(certs: Certs) -> None:
    import httpx

    authority = PortalAuthority(clients={"erp-client": "s3cr3t-9f1b"})
    with serve(_app(authority), server_ssl_context(certs.server_pem, client_certs="none")) as url:
        trust = ssl.create_default_context(cafile=str(certs.ca_pem))
        with httpx.Client(verify=trust, base_url=url) as raw:
            headers = {"Client-Id": "erp-client", "Client-Secret": "s3cr3t-9f1b"}
            old_way = raw.post("/portal/api/autenticar", headers=headers)
            new_way = raw.post("/portal/api/autenticar/chave-acesso", headers=headers)
    assert old_way.status_code == 401 and "chave-acesso" in old_way.json()["message"]
    assert new_way.status_code == 200 and new_way.headers["set-token"]


def test_no_client_certificate_no_connection(portal: Portal, certs: Certs) -> None:
    bare = ssl.create_default_context(cafile=str(certs.ca_pem))

    async def run() -> None:
        settings = portal_settings(portal.url, None)
        async with PortalClient(settings, ssl_context=bare, backoff_seconds=0.01) as api:
            await api.duimp(NUMERO, "1")

    with pytest.raises(PortalError) as refused:
        asyncio.run(run())
    assert refused.value.endpoint == "/portal/api/autenticar"
    assert "client certificate" in str(refused.value)
    assert portal.authority.authentications == 0 and portal.log.answers == []


def test_a_portal_certificate_we_do_not_trust_is_refused(portal: Portal, certs: Certs) -> None:
    stranger = trustme.CA()
    stranger_pem = certs.ca_pem.with_name("stranger-ca.pem")
    stranger.cert_pem.write_to_path(str(stranger_pem))

    async def run() -> None:
        async with client(portal, certs, ca_file=stranger_pem) as api:
            await api.duimp(NUMERO, "1")

    with pytest.raises(PortalAuthError, match="TLS handshake failed"):
        asyncio.run(run())
    assert portal.log.answers == []


def test_fifty_concurrent_calls_share_one_authentication(portal: Portal, certs: Certs) -> None:
    numbers = [duimps.duimp_number(n) for n in range(1, 51)]

    async def run() -> list[dict[str, Any]]:
        async with client(portal, certs) as api:
            return await asyncio.gather(*(api.duimp(n, "1") for n in numbers))

    found = asyncio.run(run())
    assert [d["numeroDeclaracao"] for d in found] == numbers
    assert portal.authority.authentications == 1
    assert portal.log.statuses("/portal/api/autenticar") == [200]
    assert portal.log.statuses("/duimp-api/") == [200] * 50


def test_the_session_is_renewed_before_it_expires(portal: Portal, certs: Certs) -> None:
    # The stand-in announces a 0.4 s session in X-CSRF-Expiration; the client must renew on its
    # own, before the Portal would refuse the old token.
    portal.authority.token_lifetime_seconds = 0.4

    async def run() -> None:
        async with client(portal, certs) as api:
            await api.duimp(NUMERO, "1")
            await asyncio.sleep(0.45)
            await api.duimp(NUMERO, "1")
            assert api.authentications == 2

    asyncio.run(run())
    assert portal.authority.authentications == 2
    assert 401 not in portal.log.statuses("/duimp-api/")


def test_the_configured_lifetime_renews_too(portal: Portal, certs: Certs) -> None:
    async def run() -> None:
        async with client(portal, certs, token_lifetime_seconds=0.3) as api:
            await api.duimp(NUMERO, "1")
            await api.duimp(NUMERO, "1")
            assert api.authentications == 1
            await asyncio.sleep(0.35)
            await api.duimp(NUMERO, "1")

    asyncio.run(run())
    assert portal.authority.authentications == 2


def test_a_401_renews_the_session_once(portal: Portal, certs: Certs) -> None:
    async def run() -> None:
        async with client(portal, certs) as api:
            await api.duimp(NUMERO, "1")
            portal.authority.revoke_all()  # as a Portal restart would
            await asyncio.gather(*(api.duimp(NUMERO, "1") for _ in range(10)))

    asyncio.run(run())
    assert portal.authority.authentications == 2
    assert portal.log.statuses("/portal/api/autenticar") == [200, 200]
    assert 401 in portal.log.statuses("/duimp-api/")


def test_an_unknown_duimp_names_endpoint_and_status(portal: Portal, certs: Certs) -> None:
    async def run() -> None:
        async with client(portal, certs) as api:
            await api.duimp(NUMERO, "120")

    with pytest.raises(PortalError) as failed:
        asyncio.run(run())
    assert failed.value.status == 404
    assert failed.value.endpoint == f"/duimp-api/api/ext/duimp/{NUMERO}/120"
    assert "404" in str(failed.value) and NUMERO in str(failed.value)


def test_calls_without_a_session_get_401(portal: Portal, certs: Certs) -> None:
    import httpx

    context = ssl.create_default_context(cafile=str(certs.ca_pem))
    context.load_cert_chain(str(certs.client_pem))
    started = time.monotonic()
    with httpx.Client(verify=context) as raw:
        answer = raw.get(f"{portal.url}/duimp-api/api/ext/duimp/{NUMERO}/1")
        forged = raw.get(
            f"{portal.url}/duimp-api/api/ext/duimp/{NUMERO}/1",
            headers={"Authorization": "Bearer forged", "X-CSRF-Token": "x"},
        )
    assert answer.status_code == 401 and forged.status_code == 401
    assert time.monotonic() - started < 5


def test_a_version_int_cannot_read_is_a_422(portal: Portal, certs: Certs) -> None:
    """'²' is a digit to str.isdigit, not to int(): the simulator answered 500."""

    async def run() -> None:
        async with client(portal, certs) as api:
            await api.json("GET", f"/duimp-api/api/ext/duimp/{NUMERO}/%C2%B2")

    with pytest.raises(PortalError) as failed:
        asyncio.run(run())
    assert failed.value.status == 422
