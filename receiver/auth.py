"""Basic and Bearer verification in constant time, with several secrets active per source.

Secrets are kept only as SHA-256 digests and compared digest to digest, so neither content nor
length leaks through timing, and every configured credential is checked on every request (no
early exit), so a rotation with old and new secrets costs the same whichever one matches.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

from receiver.config import BasicCredential, BearerCredential, Credential

MAX_AUTHORIZATION_BYTES = 4096


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class Verifier:
    """Checks one source's ``Authorization`` header against its configured credentials."""

    def __init__(self, credentials: Sequence[Credential], realm: str) -> None:
        self._bearer = [
            _digest(c.token.get_secret_value().encode())
            for c in credentials
            if isinstance(c, BearerCredential)
        ]
        self._basic = [
            (_digest(c.username.encode()), _digest(c.password.get_secret_value().encode()))
            for c in credentials
            if isinstance(c, BasicCredential)
        ]
        self.open = not credentials
        schemes = (["Bearer"] if self._bearer else []) + (["Basic"] if self._basic else [])
        safe_realm = realm.replace('"', "")
        self.challenge = ", ".join(f'{scheme} realm="{safe_realm}"' for scheme in schemes)

    def verify(self, authorization: bytes | None) -> bool:
        """True when the header carries any one of the configured credentials."""
        if self.open:
            return True
        if not authorization or len(authorization) > MAX_AUTHORIZATION_BYTES:
            return False
        scheme, _, value = authorization.strip().partition(b" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == b"bearer" and self._bearer:
            return _any_equal(_digest(value), self._bearer)
        if scheme == b"basic" and self._basic:
            pair = _decode_basic(value)
            if pair is None:
                return False
            user, password = _digest(pair[0]), _digest(pair[1])
            matched = False
            for known_user, known_password in self._basic:
                # Both comparisons always run: no short-circuit on the username.
                user_ok = hmac.compare_digest(user, known_user)
                password_ok = hmac.compare_digest(password, known_password)
                matched |= user_ok & password_ok
            return matched
        return False


def _any_equal(candidate: bytes, known: list[bytes]) -> bool:
    matched = False
    for digest in known:
        matched |= hmac.compare_digest(candidate, digest)
    return matched


def _decode_basic(value: bytes) -> tuple[bytes, bytes] | None:
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    return user, password


def basic_header(username: str, password: str) -> str:
    """The ``Authorization`` value a sender uses for Basic; public so tests and the dispatcher agree."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"
