"""The client side of mutual TLS: an ``ssl.SSLContext`` holding the ICP-Brasil certificate.

The Portal identifies us by the certificate presented in the TLS handshake (seed
``pucomex-proposta-sefaz.txt``: "realizar o processo de handshake SSL ... apresentando um
certificado digital válido"). An A1 certificate usually comes as a PKCS#12 file (``.pfx``) with a
password; a PEM certificate and key work too.

Python's ``ssl`` module loads keys from files only, so a PKCS#12 file is unpacked into a private
temporary folder, with the key re-encrypted under a random one-off password, loaded, and deleted
at once: the key never sits on disk in the clear.
"""

from __future__ import annotations

import secrets
import ssl
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from receiver.config import PortalSettings
from receiver.errors import ConfigError


def client_ssl_context(settings: PortalSettings) -> ssl.SSLContext:
    """TLS 1.2+ context that verifies the Portal (``ca_file`` or the system roots) and presents
    our certificate, if one is configured (``pfx_file`` or ``cert_file``/``key_file``)."""
    try:
        context = ssl.create_default_context(
            cafile=str(settings.ca_file) if settings.ca_file else None
        )
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"portal.ca_file: cannot load {settings.ca_file}: {error}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.pfx_file is not None:
        password = settings.pfx_password.get_secret_value() if settings.pfx_password else None
        load_pkcs12(context, settings.pfx_file, password)
    elif settings.cert_file is not None:
        try:
            context.load_cert_chain(
                str(settings.cert_file), str(settings.key_file) if settings.key_file else None
            )
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(
                f"portal.cert_file/key_file: cannot load {settings.cert_file}: {error}"
            ) from None
    elif settings.key_file is not None:
        raise ConfigError("portal.key_file is set but portal.cert_file is not")
    return context


def load_pkcs12(context: ssl.SSLContext, path: Path, password: str | None) -> None:
    """Load the key and certificate chain of a PKCS#12 file into ``context``."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"portal.pfx_file: cannot read {path}: {error.strerror}") from None
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(
            data, password.encode() if password is not None else None
        )
    except ValueError:
        raise ConfigError(
            f"portal.pfx_file: {path} is not a PKCS#12 file, or portal.pfx_password is wrong"
        ) from None
    if key is None or cert is None:
        raise ConfigError(f"portal.pfx_file: {path} holds no private key and certificate")
    one_off = secrets.token_urlsafe(32)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(one_off.encode()),
    )
    chain_pem = b"".join(
        item.public_bytes(serialization.Encoding.PEM) for item in [cert, *(extra or [])]
    )
    # TemporaryDirectory is created 0700 and removed, files and all, when the block ends.
    with tempfile.TemporaryDirectory(prefix="portal-cert-") as folder:
        cert_path, key_path = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert_path.write_bytes(chain_pem)
        key_path.write_bytes(key_pem)
        try:
            context.load_cert_chain(str(cert_path), str(key_path), password=one_off)
        except ssl.SSLError as error:
            raise ConfigError(f"portal.pfx_file: {path}: {error}") from None
