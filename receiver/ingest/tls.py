"""TLS on the webhook port (``serve --ssl-certfile/--ssl-keyfile``, ``server.ssl_certfile`` and
``server.ssl_keyfile``): what the Portal requires of a receiver, and a certificate that can be
replaced without a restart.

- TLS 1.2 and 1.3 only (the Portal delivers with 1.2 or newer; 1.1 and below are refused in the
  handshake). TLS 1.2 with forward-secret AEAD suites only (ECDHE with AES-GCM or
  ChaCha20-Poly1305, the nginx site's list): no RC4, 3DES, CBC or SHA-1 suites, no static RSA
  key exchange. TLS 1.3's suites are OpenSSL's, all AEAD. No compression, no renegotiation, no
  session tickets (their key would never rotate).
- SIGHUP reads the certificate and key again (``ReloadableTLS.reload``): a pair that cannot be
  read or does not match is refused with one line, and the previous one keeps serving. New
  connections get the new certificate; open ones keep theirs, and no request is dropped. The
  context uvicorn listens with never changes: its SNI callback, which OpenSSL calls for every
  handshake (with or without SNI), hands each new connection the current context.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

from receiver.errors import ConfigError

log = logging.getLogger("receiver.tls")

# Mozilla's "intermediate" TLS 1.2 list without DHE (which would need dhparams).
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)


def _check_files(certfile: Path, keyfile: Path, where: str) -> None:
    """Say which file is wrong, and how, before OpenSSL's "PEM lib" would say neither."""
    # Here, when TLS is configured: every serving process imports this module, and cryptography
    # cost 8.6 MiB in each of those that serve plain http behind a proxy.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    for path, what in ((certfile, "certificate"), (keyfile, "key")):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"{where}: {what} file {path} does not exist") from None
        except OSError as error:
            raise ConfigError(f"{where}: {what} file {path} cannot be read: {error}") from None
        try:
            if what == "certificate":
                x509.load_pem_x509_certificates(data)
            else:
                serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as error:
            raise ConfigError(
                f"{where}: {path} is not a PEM {what}"
                + (" without a password" if "password" in str(error).lower() else "")
            ) from None


def server_context(certfile: Path, keyfile: Path, where: str = "TLS") -> ssl.SSLContext:
    """A server context with the receiver's TLS policy and this pair; a ConfigError naming
    ``where`` and the file when the pair cannot be used."""
    _check_files(certfile, keyfile, where)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_TICKET
    try:
        context.load_cert_chain(certfile, keyfile)
    except ssl.SSLError as error:
        if "KEY_VALUES_MISMATCH" in str(error) or "key values mismatch" in str(error):
            raise ConfigError(f"{where}: key {keyfile} is not the key of {certfile}") from None
        raise ConfigError(f"{where}: {certfile} and {keyfile}: {error.reason or error}") from None
    return context


class ReloadableTLS:
    """The listening context (``context``) and the one new connections get (``current``)."""

    def __init__(self, certfile: Path, keyfile: Path, where: str = "TLS") -> None:
        self.certfile = certfile
        self.keyfile = keyfile
        self.where = where
        self.context = server_context(certfile, keyfile, where)
        self.current = self.context
        self.context.sni_callback = self._choose
        self.reloads = 0

    def _choose(self, connection: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        current = self.current
        if current is not context:
            connection.context = current

    def reload(self) -> None:
        """Read the pair again; ConfigError (and nothing changed) when it cannot be used."""
        self.current = server_context(self.certfile, self.keyfile, self.where)
        self.reloads += 1


# This process's TLS on the webhook port, once uvicorn has asked for it (``context_factory``).
ACTIVE: ReloadableTLS | None = None


def context_factory(config: Any, default: Any) -> ssl.SSLContext:
    """uvicorn's ``ssl_context_factory``: the receiver's policy on ``config.ssl_certfile`` and
    ``config.ssl_keyfile``, kept in ``ACTIVE`` for SIGHUP. A module-level function, so that the
    configuration of ``--workers N`` still pickles: each serving process makes its own."""
    global ACTIVE
    ACTIVE = ReloadableTLS(Path(config.ssl_certfile), Path(config.ssl_keyfile))
    return ACTIVE.context


def reload_active() -> str | None:
    """SIGHUP: reload this process's certificate; what went wrong, or None (also when TLS is
    off)."""
    if ACTIVE is None:
        return None
    try:
        ACTIVE.reload()
    except ConfigError as error:
        return str(error)
    log.info("SIGHUP: TLS certificate %s and key %s reloaded", ACTIVE.certfile, ACTIVE.keyfile)
    return None
