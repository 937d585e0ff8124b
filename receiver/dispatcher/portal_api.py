"""The Portal API stand-in: ``POST /portal/api/autenticar`` and the Duimp consultation.

Authentication, as the Portal does it: the client presents a certificate our CA verified (see
``receiver.dispatcher.tls``) with a ``Role-Type`` header, or sends ``Client-Id`` and
``Client-Secret`` headers that match a configured client. The answer is 200 with the session in
``Set-Token`` (sent back as ``Authorization``), ``X-CSRF-Token`` and ``X-CSRF-Expiration`` (epoch
milliseconds). Sessions expire after ``token_lifetime_seconds``; any other route that needs one
answers 401 without it.

Duimp consultation (same paths as ``receiver.portal.client``):
``GET /duimp-api/api/ext/duimp/{numero}/{versao}`` and ``GET /duimp-api/api/ext/duimp/{numero}``
(the version in force), with data from ``receiver.dispatcher.duimps``.

The subscription API can reuse the sessions: ``authority.identity_of(request)`` names the client
that authenticated, or None.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.dispatcher import duimps
from receiver.dispatcher.tls import client_identity

AUTH_PATH = "/portal/api/autenticar"
DUIMP_PATH = "/duimp-api/api/ext/duimp/{numero}"
DUIMP_VERSION_PATH = "/duimp-api/api/ext/duimp/{numero}/{versao}"

DuimpSource = Callable[[str, int | None], dict[str, Any] | None]


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class Session:
    identity: str
    role: str
    csrf: str
    expires_at: float  # monotonic
    expires_wall: float


class PortalAuthority:
    """Issues and checks the simulator's sessions; counts authentications (tests read it)."""

    def __init__(
        self,
        *,
        clients: Mapping[str, str] | None = None,
        token_lifetime_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        # Client-Id -> SHA-256 of Client-Secret: compared in constant time, never kept in clear.
        self._clients = {cid: _digest(secret) for cid, secret in (clients or {}).items()}
        self.token_lifetime_seconds = token_lifetime_seconds
        self._clock = clock
        self._wall = wall_clock
        self._sessions: dict[str, Session] = {}
        self.authentications = 0

    def client_id_identity(self, client_id: str, client_secret: str) -> str | None:
        expected = self._clients.get(client_id)
        given = _digest(client_secret)
        if expected is None:
            hmac.compare_digest(given, given)  # same work whether or not the id exists
            return None
        return f"client-id:{client_id}" if hmac.compare_digest(expected, given) else None

    def issue(self, identity: str, role: str) -> tuple[str, Session]:
        self.authentications += 1
        now = self._clock()
        self._sessions = {t: s for t, s in self._sessions.items() if s.expires_at > now}
        token = "Bearer " + secrets.token_urlsafe(32)
        session = Session(
            identity=identity,
            role=role,
            csrf=secrets.token_urlsafe(24),
            expires_at=now + self.token_lifetime_seconds,
            expires_wall=self._wall() + self.token_lifetime_seconds,
        )
        self._sessions[token] = session
        return token, session

    def session_of(self, request: Request) -> Session | None:
        """The live session a request carries (``Authorization`` and ``X-CSRF-Token``), or None."""
        token = request.headers.get("authorization", "")
        session = self._sessions.get(token)
        if session is None or session.expires_at <= self._clock():
            return None
        csrf = request.headers.get("x-csrf-token", "")
        if not hmac.compare_digest(_digest(csrf), _digest(session.csrf)):
            return None
        return session

    def identity_of(self, request: Request) -> str | None:
        session = self.session_of(request)
        return session.identity if session is not None else None

    def revoke_all(self) -> None:
        """Forget every session, as a Portal restart would (clients must renew after a 401)."""
        self._sessions.clear()


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status, headers=headers or None)


def portal_api_routes(
    authority: PortalAuthority, *, duimp_source: DuimpSource = duimps.duimp
) -> list[Route]:
    """The Portal API routes, to mount in the dispatcher's Starlette app."""

    async def autenticar(request: Request) -> Response:
        role = request.headers.get("role-type", "").strip()
        client_id = request.headers.get("client-id")
        identity: str | None = None
        if client_id is not None:
            identity = authority.client_id_identity(
                client_id, request.headers.get("client-secret", "")
            )
            if identity is None:
                return _error(401, "Client-Id/Client-Secret not recognised")
        else:
            subject = client_identity(request.scope)
            if subject is None:
                return _error(401, "a client certificate (or Client-Id/Client-Secret) is required")
            if not role:
                return _error(422, "the Role-Type header is required")
            identity = f"cert:{subject}"
        token, session = authority.issue(identity, role or "CLIENT")
        return Response(
            status_code=200,
            headers={
                "Set-Token": token,
                "X-CSRF-Token": session.csrf,
                "X-CSRF-Expiration": str(int(session.expires_wall * 1000)),
            },
        )

    async def consultar_duimp(request: Request) -> Response:
        if authority.session_of(request) is None:
            return _error(
                401,
                "missing or expired session: POST /portal/api/autenticar first",
                **{"WWW-Authenticate": "Bearer"},
            )
        numero = request.path_params["numero"]
        raw_version = request.path_params.get("versao")
        version: int | None = None
        if raw_version is not None:
            # isascii: isdigit alone admits "²", which int() refuses (a 500 instead of a 422).
            if not (raw_version.isascii() and raw_version.isdigit()) or len(raw_version) > 4:
                return _error(422, f"versao {raw_version!r} is not a number")
            version = int(raw_version)
        found = duimp_source(numero, version)
        if found is None:
            return _error(404, f"Duimp {numero} version {raw_version or '(in force)'} not found")
        return JSONResponse(found)

    return [
        Route(AUTH_PATH, autenticar, methods=["POST"], name="portal_autenticar"),
        Route(DUIMP_PATH, consultar_duimp, methods=["GET"], name="portal_duimp"),
        Route(DUIMP_VERSION_PATH, consultar_duimp, methods=["GET"], name="portal_duimp_versao"),
    ]


def create_portal_api_app(
    authority: PortalAuthority | None = None, *, duimp_source: DuimpSource = duimps.duimp
) -> Starlette:
    """The Portal API alone, for tests; ``app.state.portal_authority`` is its authority."""
    authority = authority if authority is not None else PortalAuthority()
    app = Starlette(routes=portal_api_routes(authority, duimp_source=duimp_source))
    app.state.portal_authority = authority
    return app
