"""`receiver serve --ssl-certfile/--ssl-keyfile` over real sockets: TLS 1.2 and 1.3 accepted, 1.1
and CBC/SHA-1 suites refused, and a certificate replaced on disk taken up by SIGHUP for new
connections, while a connection opened before keeps working; a pair that does not match is
refused with one line and the previous certificate keeps serving."""

from __future__ import annotations

import signal
import socket
import ssl
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from tests.acceptance.conftest import TOKEN, Deployment, duimp_body, free_port

pytestmark = pytest.mark.acceptance


def issue(ca: trustme.CA, folder: Path, name: str = "") -> bytes:
    """A certificate for 127.0.0.1, written as the files serve reads; its DER form."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    (folder / "cert.pem").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


@pytest.fixture
def tls_serve(tmp_path: Path) -> Iterator[tuple[Deployment, int, trustme.CA, bytes]]:
    ca = trustme.CA()
    first = issue(ca, tmp_path)
    deployment = Deployment(tmp_path, f"sqlite:///{tmp_path / 'r.db'}")
    port = free_port()
    try:
        deployment.serve(
            port,
            "--no-worker",
            "--ssl-certfile",
            str(tmp_path / "cert.pem"),
            "--ssl-keyfile",
            str(tmp_path / "key.pem"),
        )
        yield deployment, port, ca, first
    finally:
        deployment.stop_all()


def client_context(
    ca: trustme.CA, version: ssl.TLSVersion | None = None, ciphers: str | None = None
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    if version is not None:
        with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is what is tested
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = context.maximum_version = version
        # Below 1.2 OpenSSL needs its security level lowered to offer it at all, so that the
        # refusal seen is the server's, not this client's.
        context.set_ciphers(ciphers or "DEFAULT:@SECLEVEL=0")
    return context


def handshake(port: int, context: ssl.SSLContext) -> tuple[str | None, bytes | None]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as plain,
        context.wrap_socket(plain, server_hostname="127.0.0.1") as sock,
    ):
        return sock.version(), sock.getpeercert(binary_form=True)


def test_tls_1_2_and_1_3_are_accepted_and_1_1_is_refused(
    tls_serve: tuple[Deployment, int, trustme.CA, bytes],
) -> None:
    _, port, ca, _ = tls_serve
    assert handshake(port, client_context(ca, ssl.TLSVersion.TLSv1_2))[0] == "TLSv1.2"
    assert handshake(port, client_context(ca, ssl.TLSVersion.TLSv1_3))[0] == "TLSv1.3"
    with pytest.raises(ssl.SSLError):
        handshake(port, client_context(ca, ssl.TLSVersion.TLSv1_1))
    # TLS 1.2 with only CBC suites on offer (SHA-256 ones, which Python's own defaults would
    # still accept), or SHA-1 ones, or static RSA: no suite in common.
    for ciphers in (
        "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES128-SHA256",
        "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA:DES-CBC3-SHA",
        "AES128-GCM-SHA256:AES256-GCM-SHA384",
    ):
        with pytest.raises(ssl.SSLError):
            handshake(port, client_context(ca, ssl.TLSVersion.TLSv1_2, f"{ciphers}:@SECLEVEL=0"))
    answer = httpx.post(
        f"https://127.0.0.1:{port}/webhooks/pucomex",
        content=duimp_body(1),
        headers={"Authorization": f"Bearer {TOKEN}"},
        verify=client_context(ca),
    )
    assert answer.status_code == 200, answer.text


def wait_for(deployment: Deployment, text: str, count: int = 1) -> None:
    deadline = time.monotonic() + 15
    while deployment.output().count(text) < count:
        assert time.monotonic() < deadline, f"no {text!r} in the log"
        time.sleep(0.05)


def test_sighup_takes_up_a_new_certificate_and_refuses_a_broken_one(
    tls_serve: tuple[Deployment, int, trustme.CA, bytes], tmp_path: Path
) -> None:
    deployment, port, ca, first = tls_serve
    context = client_context(ca)
    assert handshake(port, context)[1] == first
    url = f"https://127.0.0.1:{port}/webhooks/pucomex"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(verify=context, timeout=10) as kept_alive:
        assert kept_alive.post(url, content=duimp_body(2), headers=headers).status_code == 200
        second = issue(ca, tmp_path)
        assert second != first
        deployment.processes[0].send_signal(signal.SIGHUP)
        wait_for(deployment, "TLS certificate")
        # New connections get the new certificate; the one opened before still works.
        assert handshake(port, context)[1] == second
        assert kept_alive.post(url, content=duimp_body(3), headers=headers).status_code == 200

        # A key that is not the certificate's: refused in one line, the previous pair kept.
        other = trustme.CA().issue_cert("127.0.0.1")
        other.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
        deployment.processes[0].send_signal(signal.SIGHUP)
        wait_for(deployment, "TLS certificate not reloaded")
        assert handshake(port, context)[1] == second
        assert kept_alive.post(url, content=duimp_body(4), headers=headers).status_code == 200
    (line,) = [
        line for line in deployment.output().splitlines() if "TLS certificate not reloaded" in line
    ]
    assert "key.pem is not the key of" in line
    assert deployment.processes[0].poll() is None
