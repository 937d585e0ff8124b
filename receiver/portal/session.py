"""The Portal session: the tokens from ``/portal/api/autenticar`` (certificate and ``Role-Type``)
or ``/portal/api/autenticar/chave-acesso`` (``Client-Id`` and ``Client-Secret``), kept until
shortly before they expire, with exactly one authentication in flight however many callers need
a token at once.

The Portal answers with the session in the ``Set-Token`` and ``X-CSRF-Token`` headers (and, for
some deployments, ``X-CSRF-Expiration``); later calls send them back as ``Authorization`` and
``X-CSRF-Token``. Every later answer may carry a fresh ``X-CSRF-Token``, which public clients send
on their next call: ``TokenKeeper.renew_csrf`` takes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import httpx

from receiver.errors import PortalAuthError

AUTH_PATH = "/portal/api/autenticar"
CHAVE_ACESSO_PATH = "/portal/api/autenticar/chave-acesso"


@dataclass(frozen=True, slots=True)
class Token:
    """One session: what to send, and when (monotonic clock) to stop trusting it."""

    authorization: str
    csrf: str
    renew_at: float
    generation: int

    def headers(self) -> dict[str, str]:
        return {"Authorization": self.authorization, "X-CSRF-Token": self.csrf}


def expiration_in(value: str | None, now_wall: float) -> float | None:
    """Seconds from now until an ``X-CSRF-Expiration`` value, or None if it cannot be read.

    Public clients have seen epoch milliseconds; epoch seconds and ISO-8601 are accepted too.
    """
    if not value:
        return None
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            return None
        return moment.timestamp() - now_wall
    if number > 1e11:  # epoch milliseconds
        return number / 1000 - now_wall
    if number > 1e9:  # epoch seconds
        return number - now_wall
    return number  # a duration in seconds


def token_from_answer(
    response: httpx.Response,
    *,
    lifetime: float,
    generation: int,
    now: float,
    now_wall: float,
    path: str = AUTH_PATH,
) -> Token:
    """Read the session out of an authentication answer; PortalAuthError when it carries none."""
    headers: Mapping[str, str] = response.headers
    authorization, csrf = headers.get("set-token"), headers.get("x-csrf-token")
    if not authorization or not csrf:
        raise PortalAuthError(
            f"POST {path} answered {response.status_code} without the Set-Token and "
            "X-CSRF-Token headers; is portal.base_url the Portal API?",
            endpoint=path,
            status=response.status_code,
        )
    remaining = expiration_in(headers.get("x-csrf-expiration"), now_wall)
    valid_for = lifetime if remaining is None else max(0.0, min(lifetime, remaining))
    # Renew a little early, so a token never expires between our check and the Portal's.
    margin = min(60.0, valid_for * 0.1)
    return Token(authorization, csrf, now + valid_for - margin, generation)


class TokenKeeper:
    """Hands out a valid token; renews it before expiry, or when the Portal refused it.

    ``authenticate`` performs the HTTP call and returns a ``Token``; the keeper guarantees it is
    never running twice at the same time (an ``asyncio.Lock``), and that callers who waited for
    it reuse its result instead of authenticating again.
    """

    def __init__(
        self,
        authenticate: Callable[[int], Awaitable[Token]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._authenticate = authenticate
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: Token | None = None
        self.authentications = 0

    def _valid(self, token: Token | None) -> bool:
        return token is not None and self._clock() < token.renew_at

    async def current(self) -> Token:
        token = self._token
        if self._valid(token):
            assert token is not None
            return token
        async with self._lock:
            # Someone else may have renewed it while we waited for the lock.
            if self._valid(self._token):
                assert self._token is not None
                return self._token
            return await self._renew()

    async def refused(self, token: Token) -> Token:
        """The Portal answered 401/403 to ``token``: renew it, unless another caller already did."""
        async with self._lock:
            if self._token is not None and self._token.generation != token.generation:
                return self._token
            return await self._renew()

    def forget(self) -> None:
        self._token = None

    def renew_csrf(self, used: Token, csrf: str) -> None:
        """An answer to a call made with ``used`` carried a fresh CSRF token: the next call sends
        it. Ignored when the session has been renewed since (the answer is about an old one)."""
        current = self._token
        if current is not None and current.generation == used.generation and current.csrf != csrf:
            self._token = dataclasses.replace(current, csrf=csrf)

    async def _renew(self) -> Token:
        self._token = None
        self.authentications += 1
        self._token = await self._authenticate(self.authentications)
        return self._token
