"""Clients told apart by their TLS client certificate (mutual TLS on a real uvicorn server), by a
Portal session from ``/portal/api/autenticar``, or by a configured token; ownership follows."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
import trustme

from receiver.dispatcher import DispatcherSettings, run_dispatcher
from receiver.simulator import run_simulator
from tests.dispatcher_support import TOKEN_A, dispatcher_settings, sqlite_url

pytestmark = pytest.mark.anyio

WEBHOOK = "/portal/api/ext/webhook"
SUB = {"evento": "duimp.registro", "endpoint": "https://sefaz.example.gov.br/webhook"}


class PKI:
    def __init__(self, folder: Path) -> None:
        self.ca = trustme.CA()
        self.ca_file = folder / "ca.pem"
        self.server_file = folder / "server.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        server.private_key_and_cert_chain_pem.write_to_path(str(self.server_file))
        self.sefaz = self.ca.issue_cert("sefaz-sp@example.org", organization_name="Sefaz SP")
        self.erp = self.ca.issue_cert("erp@example.org", organization_name="ERP Importadora")

    def client(self, base_url: str, cert: trustme.LeafCert | None = None) -> httpx.AsyncClient:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if cert is not None:
            cert.configure_cert(context)
        return httpx.AsyncClient(base_url=base_url, verify=context, trust_env=False)


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return PKI(tmp_path)


def tls_settings(tmp_path: Path, pki: PKI) -> DispatcherSettings:
    return dispatcher_settings(
        sqlite_url(tmp_path),
        tls_cert_file=str(pki.server_file),
        tls_ca_file=str(pki.ca_file),
    )


async def test_client_certificates_own_their_subscriptions(tmp_path: Path, pki: PKI) -> None:
    settings = tls_settings(tmp_path, pki)
    async with run_dispatcher(settings) as running:
        assert running.url.startswith("https://")
        async with (
            pki.client(running.url, pki.sefaz) as sefaz,
            pki.client(running.url, pki.erp) as erp,
        ):
            mine = (await sefaz.post(WEBHOOK, json=SUB)).json()
            theirs = (await erp.post(WEBHOOK, json=SUB)).json()
            assert (await sefaz.get(WEBHOOK)).json() == [mine]
            assert (await erp.get(WEBHOOK)).json() == [theirs]
            assert (await erp.delete(f"{WEBHOOK}/{mine['id']}")).status_code == 404
            assert (await sefaz.get(WEBHOOK)).json() == [mine]
        owners = {s.owner for s in running.dispatcher.store.subscriptions(None)}
    assert len(owners) == 2
    assert all(owner.startswith("cert:") for owner in owners), owners
    assert any("Sefaz SP" in owner for owner in owners), owners


async def test_without_certificate_or_token_the_answer_is_401(tmp_path: Path, pki: PKI) -> None:
    async with (
        run_dispatcher(tls_settings(tmp_path, pki)) as running,
        pki.client(running.url) as anonymous,
    ):
        assert (await anonymous.get(WEBHOOK)).status_code == 401
        # A token client over the same TLS server (no certificate) is still recognised.
        answer = await anonymous.get(WEBHOOK, headers={"Authorization": f"Bearer {TOKEN_A}"})
        assert answer.status_code == 200


async def test_a_portal_session_identifies_its_certificate_holder(tmp_path: Path, pki: PKI) -> None:
    # The sessions are the Portal API stand-in's (receiver.simulator), mounted beside the API.
    async with run_simulator(tls_settings(tmp_path, pki)) as running:
        async with pki.client(running.url, pki.sefaz) as sefaz:
            mine = (await sefaz.post(WEBHOOK, json=SUB)).json()
            login = await sefaz.post("/portal/api/autenticar", headers={"Role-Type": "IMPEXP"})
            assert login.status_code == 200
        session = {
            "Authorization": login.headers["set-token"],
            "X-CSRF-Token": login.headers["x-csrf-token"],
        }
        # The session, without the certificate, is the same client.
        async with pki.client(running.url) as anonymous:
            assert (await anonymous.get(WEBHOOK, headers=session)).json() == [mine]
            wrong = {**session, "X-CSRF-Token": "forged"}
            assert (await anonymous.get(WEBHOOK, headers=wrong)).status_code == 401


async def test_plain_http_with_tokens(tmp_path: Path) -> None:
    settings = dispatcher_settings(sqlite_url(tmp_path))
    async with run_dispatcher(settings) as running:
        assert running.url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=running.url, trust_env=False) as client:
            headers = {"Authorization": f"Bearer {TOKEN_A}"}
            created = await client.post(WEBHOOK, json=SUB, headers=headers)
            assert created.status_code == 200
            assert (await client.get("/portal/api/ext/openapi.json")).status_code == 200
            assert (await client.get("/healthz")).json() == {"status": "ok"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
