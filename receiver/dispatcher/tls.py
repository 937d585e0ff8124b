"""Mutual TLS on uvicorn: who is the client, by its verified certificate.

uvicorn does not put the peer certificate in the ASGI scope. The protocol classes here (one for
h11, one for httptools) read it from the TLS transport once per connection and add the ASGI "tls"
extension to every request's scope::

    scope["extensions"]["tls"] = {
        "server_cert": None,
        "client_cert_chain": [PEM of the client certificate],    # verified ones only
        "client_cert_name": "CN=...,O=...",                       # RFC 4514 subject
        "client_cert_error": None,
        "tls_version": 0x0304,
        "cipher_suite": None,
        "client_cert_sha256": "ab12...",                          # our addition
    }

``client_identity(scope)`` is how the subscription API tells clients apart (subscription
ownership, ``identity``), and how the simulator's ``autenticar`` knows whose certificate it is. ``server_ssl_context`` and ``tls_uvicorn_config`` build a server that
requires (or optionally accepts) client certificates signed by a given CA.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Literal

import uvicorn
from cryptography import x509
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

ClientCertMode = Literal["required", "optional", "none"]
_VERIFY_MODES = {
    "required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
}
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def tls_info(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    """The ASGI "tls" extension for a connection, or None when it is not TLS."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    info: dict[str, Any] = {
        "server_cert": None,
        "client_cert_chain": [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
        "client_cert_sha256": None,
    }
    # getpeercert() is non-empty only when the certificate was verified against our CA; with
    # CERT_NONE it is {} even if a certificate was sent, and that one must not be trusted.
    if not ssl_object.getpeercert():
        return info
    der: bytes | None = ssl_object.getpeercert(binary_form=True)
    if der is None:  # pragma: no cover - verified implies present
        return info
    certificate = x509.load_der_x509_certificate(der)
    info["client_cert_chain"] = [ssl.DER_cert_to_PEM_cert(der)]
    info["client_cert_name"] = certificate.subject.rfc4514_string()
    info["client_cert_sha256"] = hashlib.sha256(der).hexdigest()
    return info


class _WithTLS:
    """Wraps the app for one connection, adding that connection's TLS facts to each scope."""

    def __init__(self, app: ASGIApp, info: dict[str, Any]) -> None:
        self.app = app
        self.info = info

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extensions: MutableMapping[str, Any] = dict(scope.get("extensions") or {})
        extensions["tls"] = dict(self.info)
        scope["extensions"] = extensions
        await self.app(scope, receive, send)


class TLSH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus the ASGI "tls" extension in the scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        info = tls_info(transport)
        if info is not None:
            self.app = _WithTLS(self.app, info)


class TLSHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the ASGI "tls" extension in the scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        info = tls_info(transport)
        if info is not None:
            self.app = _WithTLS(self.app, info)


PROTOCOLS: dict[str, type[asyncio.Protocol]] = {
    "h11": TLSH11Protocol,
    "httptools": TLSHttpToolsProtocol,
}


def client_certificate(scope: Scope) -> dict[str, Any] | None:
    """The verified client certificate's facts (the "tls" extension), or None."""
    tls = (scope.get("extensions") or {}).get("tls")
    if not isinstance(tls, dict) or tls.get("client_cert_error") is not None:
        return None
    if not tls.get("client_cert_name") or not tls.get("client_cert_sha256"):
        return None
    return tls


def client_identity(scope: Scope) -> str | None:
    """Who the client is, by its verified TLS certificate: the subject, as an RFC 4514 string
    (stable across a certificate's renewal, like the Portal's binding to the holder), or None
    when the connection carries no verified certificate."""
    tls = client_certificate(scope)
    return str(tls["client_cert_name"]) if tls is not None else None


def server_ssl_context(
    certfile: str | Path,
    keyfile: str | Path | None = None,
    *,
    client_ca_file: str | Path | None = None,
    client_certs: ClientCertMode = "required",
    password: str | None = None,
) -> ssl.SSLContext:
    """A server context, TLS 1.2 or newer, asking clients for a certificate signed by
    ``client_ca_file`` (required, optional, or not at all)."""
    if client_certs != "none" and client_ca_file is None:
        raise ValueError("client_ca_file is needed to verify client certificates")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(certfile), str(keyfile) if keyfile else None, password)
    context.verify_mode = _VERIFY_MODES[client_certs]
    if client_ca_file is not None:
        context.load_verify_locations(str(client_ca_file))
    return context


def tls_uvicorn_config(
    app: ASGIApp,
    ssl_context: ssl.SSLContext,
    *,
    host: str = "127.0.0.1",
    port: int = 8443,
    http: Literal["h11", "httptools"] = "h11",
    **options: Any,
) -> uvicorn.Config:
    """A uvicorn ``Config`` serving ``app`` over ``ssl_context`` with the TLS-aware protocol.

    Extra ``options`` go to ``uvicorn.Config`` (``log_config=None``, ``lifespan=...``). Proxy
    headers are off: behind TLS termination the certificate would not be ours to see anyway.
    """
    options.setdefault("proxy_headers", False)
    options.setdefault("server_header", False)
    options.setdefault("ws", "none")
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=PROTOCOLS[http],
        ssl_context_factory=lambda _config, _default: ssl_context,
        **options,
    )
