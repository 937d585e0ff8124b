"""A notification byte for byte as the Portal sends it (tests/fixtures/portal-delivery-*.http:
event-type, secret, destinatario-*, no Authorization, the production body) to a real
`receiver serve` configured as the README says, with the Portal simulator answering the Duimp
consultation over TLS; and what serve says when pucomex is given Basic or Bearer."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver.dispatcher import RunningDispatcher
from receiver.simulator import run_simulator
from receiver.simulator.portal_api import PortalAuthority
from receiver.sources import dedup_key
from receiver.store import Store
from receiver.worker.results import load_result
from tests.acceptance.conftest import ROOT, Deployment, free_port
from tests.dispatcher_support import TLS, InThread, dispatcher_settings, sqlite_url

pytestmark = pytest.mark.acceptance

FIXTURE = ROOT / "tests" / "fixtures" / "portal-delivery-dimp-situacao-import.example.http"
CHAVE = "0484a6e22cf66a2d3da8953789f8c6b3"  # the fixture's
NEXT_CHAVE = "b7d2e90c4a1f36e85d0c9b2a7e4f1c63"  # the one being rotated in
CLIENT_SECRET = "segredo-do-cliente-0f3a9"
ENV = {
    "PUCOMEX_CHAVE_SECRETA": CHAVE,
    "PUCOMEX_CHAVE_SECRETA_NOVA": NEXT_CHAVE,
    "PORTAL_CLIENT_SECRET": CLIENT_SECRET,
}


def portal_request(host: str, secret: str | None) -> bytes:
    """The fixture's request as bytes on the wire: its headers in its order, its body."""
    text = FIXTURE.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    blank = lines.index("")
    request_line, headers, body = lines[0], lines[1:blank], "\n".join(lines[blank + 1 :]).strip()
    raw_body = body.encode("utf-8")
    sent: list[str] = [request_line]
    for header in headers:
        name, _, value = header.partition(": ")
        if name.lower() == "host":
            value = host
        if name.lower() == "secret":
            if secret is None:
                continue
            value = secret
        sent.append(f"{name}: {value}")
    sent.append(f"Content-Length: {len(raw_body)}")
    return ("\r\n".join(sent) + "\r\n\r\n").encode("ascii") + raw_body


def send(port: int, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[tuple[RunningDispatcher, PortalAuthority, Path]]:
    tls = TLS()
    ca = tmp_path / "portal-ca.pem"
    tls.ca.cert_pem.write_to_path(str(ca))
    settings = dispatcher_settings(sqlite_url(tmp_path, "simulator.db"))
    authority = PortalAuthority(clients={"sefaz-sp": CLIENT_SECRET})
    context = tls.server_context("127.0.0.1")
    with InThread(
        lambda: run_simulator(settings, authority=authority, ssl_context=context)
    ) as running:
        yield running, authority, ca


def readme_deployment(folder: Path, portal_url: str, ca: Path) -> Deployment:
    return Deployment(
        folder,
        f"sqlite:///{folder / 'receiver.db'}",
        sources={
            "pucomex": {
                "credentials": [
                    {"type": "header", "name": "secret", "value": "env:PUCOMEX_CHAVE_SECRETA"},
                    {"type": "header", "name": "secret", "value": "env:PUCOMEX_CHAVE_SECRETA_NOVA"},
                ]
            },
            "sintegre": {"credentials": []},
            "invoicy": {"credentials": []},
        },
        handlers=["handlers.duimp"],
        portal={
            "base_url": portal_url,
            "role_type": "SEFAZ",
            "client_id": "sefaz-sp",
            "client_secret": "env:PORTAL_CLIENT_SECRET",
            "ca_file": str(ca),
            "chave_secreta": "env:PUCOMEX_CHAVE_SECRETA",
            "watch_every_seconds": 0,
        },
    )


def test_a_delivery_byte_for_byte_as_the_portal_sends_it(
    tmp_path: Path, simulator: tuple[RunningDispatcher, PortalAuthority, Path]
) -> None:
    sim, authority, ca = simulator
    deployment = readme_deployment(tmp_path, sim.url, ca)
    port = free_port()
    host = f"127.0.0.1:{port}"
    try:
        deployment.serve(port, **ENV)
        status, body = send(port, portal_request(host, CHAVE))
        assert status == 200, body
        note_id = json.loads(body)["id"]

        refused = [send(port, portal_request(host, secret)) for secret in (None, CHAVE[:-1] + "0")]
        assert [answer[0] for answer in refused] == [401, 401]
        rotated = send(port, portal_request(host, NEXT_CHAVE).replace(b"desembara", b"Desembara"))
        assert rotated[0] == 200, rotated

        deadline = time.monotonic() + 30
        while True:
            listing = deployment.cli("inbox", "list", "--json", **ENV)
            assert listing.returncode == 0, listing.stderr
            rows = [json.loads(line) for line in listing.stdout.splitlines()]
            if rows and all(row["status"] == "done" for row in rows):
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.1)
    finally:
        deployment.stop_all(graceful=True)

    assert len(rows) == 2 and rows[0]["id"] == note_id  # the 401s stored nothing
    first = rows[0]
    assert first["event"] == "dimp-situacao-import"
    assert first["body"].encode("utf-8") in FIXTURE.read_bytes()
    assert first["headers"]["event-type"] == "dimp-situacao-import"
    assert first["headers"]["destinatario-id"] == "00000000000191"
    assert "secret" not in first["headers"] and "authorization" not in first["headers"]
    # Routed to handlers.duimp, which fetched the Duimp from the Portal (chave-acesso, versoes
    # not needed: the body gives version 2) and kept the situation with it.
    store = Store(f"sqlite:///{tmp_path / 'receiver.db'}")
    try:
        kept = load_result(store, "duimp-situacao", dedup_key("pucomex", first["body"].encode()))
    finally:
        store.close()
    assert kept is not None
    assert (kept["numero"], kept["versao"]) == ("26BR00000000198", "2")
    assert kept["situacao"] == "DESEMBARACADA_AGUARDANDO_ENTREGA_CARGA"
    assert kept["situacaoConsultada"]  # the consultation answered
    assert authority.authentications >= 1
    logs = deployment.output()
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("receiver.db*"))
    for secret in (CHAVE, NEXT_CHAVE, CLIENT_SECRET):
        assert secret not in logs and secret not in listing.stdout
        assert secret.encode() not in stored
    assert "WARNING receiver.config" not in logs  # the README's configuration warns of nothing


def test_serve_warns_once_when_pucomex_has_bearer_credentials(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path, f"sqlite:///{tmp_path / 'receiver.db'}")  # pucomex: bearer
    try:
        deployment.serve(free_port())
    finally:
        deployment.stop_all(graceful=True)
    warnings = [line for line in deployment.output().splitlines() if "receiver.config" in line]
    assert len(warnings) == 1
    assert "WARNING" in warnings[0]
    assert "sources.pucomex has bearer credentials, which the Portal cannot send" in warnings[0]
    assert "{type: header, name: secret" in warnings[0]
