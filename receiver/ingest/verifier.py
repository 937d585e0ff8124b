"""Basic, Bearer and header-secret verification in constant time, several secrets per source.

Secrets are kept only as SHA-256 digests and compared digest to digest, so neither content nor
length leaks through timing, and every configured credential of the kind presented is checked on
every request (no early exit), so a rotation with old and new secrets costs the same whichever
one matches.

A header credential (``{type: header, name: secret, value: ...}``, the Portal's ``chaveSecreta``)
is a shared secret in a named request header. Several entries with the same name are a rotation.
Its 401 carries ``WWW-Authenticate: Header realm="<source>", name="<header>"``: no registered
scheme fits, and the challenge tells a human which header is expected, not its value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence

MAX_AUTHORIZATION_BYTES = 4096


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class Verifier:
    """Checks one source's ``Authorization`` header and header secrets against its credentials,
    given as plain values (``receiver.credentials`` reads them from ``receiver.yaml``): Bearer
    tokens, Basic (username, password) pairs and header (name, secret) pairs. None at all: no
    credential check."""

    def __init__(
        self,
        realm: str,
        *,
        bearer: Sequence[str] = (),
        basic: Sequence[tuple[str, str]] = (),
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._bearer = [_digest(token.encode()) for token in bearer]
        self._basic = [
            (_digest(username.encode()), _digest(password.encode())) for username, password in basic
        ]
        self._headers = [
            (name.lower().encode("ascii"), _digest(value.encode("ascii")))
            for name, value in headers
        ]
        # The request headers ingest must pick out for this source (and never store).
        self.header_names = frozenset(name for name, _ in self._headers)
        self.open = not (bearer or basic or headers)
        safe_realm = realm.replace('"', "")
        challenges = [
            f'{scheme} realm="{safe_realm}"'
            for scheme, used in (("Bearer", self._bearer), ("Basic", self._basic))
            if used
        ]
        challenges += [
            f'Header realm="{safe_realm}", name="{name.decode()}"'
            for name in sorted(self.header_names)
        ]
        self.challenge = ", ".join(challenges)

    def verify(
        self,
        authorization: bytes | None,
        presented: Mapping[bytes, bytes | None] | None = None,
    ) -> bool:
        """True when the request carries any one of the configured credentials.

        ``presented`` maps the configured header names found in the request to their value
        (None when the header came more than once: ambiguous, so it matches nothing).
        """
        if self.open:
            return True
        matched = self._headers_match(presented) if self._headers else False
        return self._authorization_match(authorization) | matched

    def _headers_match(self, presented: Mapping[bytes, bytes | None] | None) -> bool:
        given: dict[bytes, bytes | None] = {}
        for name in self.header_names:
            value = presented.get(name) if presented else None
            ok = value is not None and 0 < len(value) <= MAX_AUTHORIZATION_BYTES
            given[name] = _digest(value) if ok and value is not None else None
        matched = False
        for name, known in self._headers:
            candidate = given[name]
            if candidate is None:
                # Same work as a comparison, so an absent header costs what a wrong one does.
                hmac.compare_digest(known, known)
                continue
            matched |= hmac.compare_digest(candidate, known)
        return matched

    def _authorization_match(self, authorization: bytes | None) -> bool:
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
