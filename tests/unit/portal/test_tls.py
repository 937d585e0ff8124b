"""Client certificates (PKCS#12 and PEM) and the server side's view of the client identity."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import load_pem_x509_certificate

from receiver.config import PortalSettings
from receiver.dispatcher.tls import client_identity, server_ssl_context, tls_uvicorn_config
from receiver.errors import ConfigError
from receiver.portal.certificates import client_ssl_context


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_pfx(ca: trustme.CA, path: Path, password: bytes | None) -> None:
    leaf = ca.issue_cert("empresa@example.org")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    cert = load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(b"a1", key, cert, None, encryption)  # type: ignore[arg-type]
    )


def test_a_pfx_with_its_password_loads(ca: trustme.CA, tmp_path: Path) -> None:
    pfx = tmp_path / "a1.pfx"
    write_pfx(ca, pfx, b"senha-do-certificado")
    settings = PortalSettings(pfx_file=pfx, pfx_password="senha-do-certificado")
    context = client_ssl_context(settings)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert list(tmp_path.iterdir()) == [pfx]  # nothing left on disk beside it


def handshake(client: ssl.SSLContext, ca: trustme.CA, tmp_path: Path) -> bytes:
    """A TLS handshake in memory with a server that requires a client certificate from ``ca``;
    the certificate the server was shown (DER)."""
    server_pem, ca_pem = tmp_path / "server.pem", tmp_path / "ca.pem"
    ca.issue_cert("portal.example").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    ca.cert_pem.write_to_path(str(ca_pem))
    server = server_ssl_context(server_pem, client_ca_file=ca_pem)
    client.load_verify_locations(cafile=str(ca_pem))
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    ours = client.wrap_bio(c_in, c_out, server_hostname="portal.example")
    theirs = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, side, out, peer_in in (
            ("client", ours, c_out, s_in),
            ("server", theirs, s_out, c_in),
        ):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            break
    shown = theirs.getpeercert(binary_form=True)
    assert shown is not None, "the server saw no client certificate"
    return shown


def test_a_pfx_without_password_loads_and_is_presented(ca: trustme.CA, tmp_path: Path) -> None:
    pfx = tmp_path / "a1.pfx"
    write_pfx(ca, pfx, None)
    context = client_ssl_context(PortalSettings(pfx_file=pfx))
    shown = handshake(context, ca, tmp_path)
    _, cert, _ = pkcs12.load_key_and_certificates(pfx.read_bytes(), None)
    assert cert is not None
    assert shown == cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("password", ["errada", None])
def test_a_wrong_pfx_password_is_a_config_error(
    ca: trustme.CA, tmp_path: Path, password: str | None
) -> None:
    pfx = tmp_path / "a1.pfx"
    write_pfx(ca, pfx, b"certa")
    with pytest.raises(ConfigError, match="pfx_password is wrong"):
        client_ssl_context(PortalSettings(pfx_file=pfx, pfx_password=password))


def test_a_missing_pfx_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        client_ssl_context(PortalSettings(pfx_file=tmp_path / "none.pfx"))


def test_pem_certificate_and_key(ca: trustme.CA, tmp_path: Path) -> None:
    leaf = ca.issue_cert("empresa@example.org")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    client_ssl_context(PortalSettings(cert_file=cert, key_file=key))
    with pytest.raises(ConfigError, match="cert_file"):
        client_ssl_context(PortalSettings(cert_file=key, key_file=cert))
    with pytest.raises(ConfigError, match="cert_file is not"):
        client_ssl_context(PortalSettings(key_file=key))


def scope(tls: dict[str, Any] | None) -> dict[str, Any]:
    return {"type": "http", "extensions": {"tls": tls} if tls is not None else {}}


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        ({"client_cert_name": "CN=a,O=Sefaz", "client_cert_sha256": "ab" * 32}, "CN=a,O=Sefaz"),
        ({"client_cert_name": None, "client_cert_sha256": None}, None),  # TLS, no certificate
        (
            {"client_cert_name": "CN=a", "client_cert_sha256": "ab", "client_cert_error": "x"},
            None,
        ),
        (None, None),  # plain HTTP
    ],
)
def test_client_identity(tls: dict[str, Any] | None, expected: str | None) -> None:
    assert client_identity(scope(tls)) == expected
    assert client_identity({"type": "http"}) is None


def test_server_context_modes(ca: trustme.CA, tmp_path: Path) -> None:
    server, ca_pem = tmp_path / "server.pem", tmp_path / "ca.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server))
    ca.cert_pem.write_to_path(str(ca_pem))
    assert server_ssl_context(server, client_ca_file=ca_pem).verify_mode == ssl.CERT_REQUIRED
    optional = server_ssl_context(server, client_ca_file=ca_pem, client_certs="optional")
    assert optional.verify_mode == ssl.CERT_OPTIONAL
    assert server_ssl_context(server, client_certs="none").verify_mode == ssl.CERT_NONE
    with pytest.raises(ValueError, match="client_ca_file"):
        server_ssl_context(server)
    context = server_ssl_context(server, client_ca_file=ca_pem)
    config = tls_uvicorn_config(lambda *a: None, context, port=9443, http="httptools")  # type: ignore[arg-type]
    config.load()
    assert config.ssl is context and config.is_ssl and config.proxy_headers is False
    assert config.http_protocol_class.__name__ == "TLSHttpToolsProtocol"
