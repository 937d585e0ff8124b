"""Who is calling the subscription API, so each client sees and changes only its own subscriptions.

In order: a verified TLS client certificate (the Portal's way, ``cert:<subject>``); a session from
``POST /portal/api/autenticar`` when the Portal API simulator is mounted; and, for plain-HTTP test
setups, a configured bearer token (``dispatcher.clients``: token -> name). Tokens are compared as
SHA-256 digests, all of them every time, so timing tells nothing about which one nearly matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping

from starlette.requests import Request

from receiver.dispatcher.tls import client_identity

SessionLookup = Callable[[Request], str | None]
MAX_AUTHORIZATION_BYTES = 4096


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class ClientIdentifier:
    def __init__(
        self, tokens: Mapping[str, str], session_identity: SessionLookup | None = None
    ) -> None:
        self._tokens = [(_digest(token.encode()), name) for token, name in tokens.items()]
        self._session_identity = session_identity

    def identify(self, request: Request) -> str | None:
        subject = client_identity(request.scope)
        if subject is not None:
            return f"cert:{subject}"
        if self._session_identity is not None:
            session = self._session_identity(request)
            if session is not None:
                return session
        return self._token_client(request.headers.get("authorization", ""))

    def _token_client(self, authorization: str) -> str | None:
        raw = authorization.encode("utf-8", "surrogateescape")
        if not raw or len(raw) > MAX_AUTHORIZATION_BYTES:
            return None
        scheme, _, value = raw.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        given = _digest(value.strip())
        found: str | None = None
        for digest, name in self._tokens:
            if hmac.compare_digest(given, digest):
                found = name
        return found
