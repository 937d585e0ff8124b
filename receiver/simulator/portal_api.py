"""The Portal API stand-in: authentication and the Duimp consultation.

Authentication, as the Portal's public clients call it: ``POST /portal/api/autenticar`` with a
certificate our CA verified (see ``receiver.dispatcher.tls``) and a ``Role-Type`` header, or
``POST /portal/api/autenticar/chave-acesso`` with ``Client-Id`` and ``Client-Secret`` headers that
match a configured client. The answer is 200 with the session in ``Set-Token`` (sent back as
``Authorization``), ``X-CSRF-Token`` and ``X-CSRF-Expiration`` (epoch milliseconds). Sessions
expire after ``token_lifetime_seconds``; any other route that needs one answers 401 without it.
Every answer to a call made with a live session carries a fresh ``X-CSRF-Token``
(``CsrfRenewal``); the session accepts its latest ``CSRF_KEPT`` tokens, so calls in flight with
an older one still pass, and a client that never takes the fresh ones is refused in the end.

Duimp consultation (same paths as ``receiver.portal.client``):
``GET /duimp-api/api/ext/duimp/{numero}/versoes`` (``[{"numero", "versao"}, ...]``, our shape: the
Portal's is not published) and ``GET /duimp-api/api/ext/duimp/{numero}/{versao}``, with data from
``receiver.simulator.duimps`` and the situation the emitted events gave the Duimp.

The subscription API can reuse the sessions: ``authority.identity_of(request)`` names the client
that authenticated, or None.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from receiver.dispatcher.portal_events import SituationChange
from receiver.dispatcher.tls import client_identity
from receiver.simulator import duimps

AUTH_PATH = "/portal/api/autenticar"
CHAVE_ACESSO_PATH = "/portal/api/autenticar/chave-acesso"
DUIMP_VERSIONS_PATH = "/duimp-api/api/ext/duimp/{numero}/versoes"
DUIMP_VERSION_PATH = "/duimp-api/api/ext/duimp/{numero}/{versao}"
CSRF_KEPT = 256
# The consultation's canalSelecao for the channel a Duimp event names.
CHANNELS: Mapping[str, int] = {"VERDE": 1, "AMARELO": 2, "VERMELHO": 3, "CINZA": 4}

# (numero, versao) -> the consultation's answer, or None when there is no such Duimp.
DuimpSource = Callable[[str, int | None], dict[str, Any] | None]


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


class _RecentDigests:
    """The digests of a session's latest ``CSRF_KEPT`` tokens. Looked up by hash: comparing the
    one given with each in constant time cost 245 comparisons per call in a burst (e2e, 19,000
    calls), and a lookup of a SHA-256 digest tells a timing attacker nothing of the token."""

    def __init__(self, first: bytes) -> None:
        self._order: deque[bytes] = deque([first])
        self._kept = {first}

    def add(self, digest: bytes) -> None:
        if len(self._order) == CSRF_KEPT:
            self._kept.discard(self._order.popleft())
        self._order.append(digest)
        self._kept.add(digest)

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._kept


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
        # Each session's latest CSRF tokens (digests), newest last.
        self._csrf: dict[str, _RecentDigests] = {}
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
        self._csrf = {t: kept for t, kept in self._csrf.items() if t in self._sessions}
        token = "Bearer " + secrets.token_urlsafe(32)
        session = Session(
            identity=identity,
            role=role,
            csrf=secrets.token_urlsafe(24),
            expires_at=now + self.token_lifetime_seconds,
            expires_wall=self._wall() + self.token_lifetime_seconds,
        )
        self._sessions[token] = session
        self._csrf[token] = _RecentDigests(_digest(session.csrf))
        return token, session

    def session_of(self, request: Request) -> Session | None:
        """The live session a request carries (``Authorization`` and ``X-CSRF-Token``), or None."""
        token = request.headers.get("authorization", "")
        session = self._sessions.get(token)
        if session is None or session.expires_at <= self._clock():
            return None
        kept = self._csrf.get(token)
        given = _digest(request.headers.get("x-csrf-token", ""))
        return session if kept is not None and given in kept else None

    def fresh_csrf(self, request: Request) -> str | None:
        """A new CSRF token for the session the request carries (None without a live one).
        Call it once the request has been answered: the oldest token may make room for it."""
        if self.session_of(request) is None:
            return None
        csrf = secrets.token_urlsafe(24)
        self._csrf[request.headers["authorization"]].add(_digest(csrf))
        return csrf

    def identity_of(self, request: Request) -> str | None:
        session = self.session_of(request)
        return session.identity if session is not None else None

    def revoke_all(self) -> None:
        """Forget every session, as a Portal restart would (clients must renew after a 401)."""
        self._sessions.clear()
        self._csrf.clear()


class CsrfRenewal:
    """ASGI middleware: every answer to a call with a live session carries a fresh
    ``X-CSRF-Token``, as the Portal's answers do."""

    def __init__(self, app: ASGIApp, authority: PortalAuthority) -> None:
        self.app = app
        self.authority = authority

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self.authority.session_of(request) is None:
            await self.app(scope, receive, send)
            return

        async def send_with_token(message: Message) -> None:
            if message["type"] == "http.response.start":
                # The app has checked the request by now (with the token it came with).
                fresh = self.authority.fresh_csrf(request)
                if fresh is not None:
                    headers = [
                        (k, v) for k, v in message.get("headers", []) if k != b"x-csrf-token"
                    ]
                    message = {**message, "headers": [*headers, (b"x-csrf-token", fresh.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_token)


class SimulatedDuimps:
    """The Duimps the consultation answers: ``receiver.simulator.duimps``' data, with the
    situation the emitted events gave each one (``situation``: numero -> what they said)."""

    def __init__(self, situation: Callable[[str], SituationChange | None] | None = None) -> None:
        self._situation = situation

    def _known(self, numero: str) -> SituationChange | None:
        return self._situation(numero) if self._situation is not None else None

    def duimp(self, numero: str, versao: int | None) -> dict[str, Any] | None:
        known = self._known(numero)
        if versao is None:
            versao = self._latest(numero, known)
        found = duimps.duimp(numero, versao)
        return None if found is None else with_situation(found, known)

    def versions(self, numero: str) -> list[int] | None:
        if not duimps.is_duimp_number(numero):
            return None
        return list(range(1, self._latest(numero, self._known(numero)) + 1))

    @staticmethod
    def _latest(numero: str, known: SituationChange | None) -> int:
        emitted = known.versao if known is not None and known.versao is not None else 0
        return min(duimps.MAX_VERSION, max(duimps.latest_version(numero), emitted))


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status, headers=headers or None)


def portal_api_routes(
    authority: PortalAuthority, *, duimps_source: SimulatedDuimps | None = None
) -> list[Route]:
    """The Portal API routes, to mount in the dispatcher's Starlette app (with ``CsrfRenewal``
    around it, as ``create_simulator_app`` does)."""
    source = duimps_source if duimps_source is not None else SimulatedDuimps()

    def _session(role: str, identity: str) -> Response:
        token, session = authority.issue(identity, role or "CLIENT")
        return Response(
            status_code=200,
            headers={
                "Set-Token": token,
                "X-CSRF-Token": session.csrf,
                "X-CSRF-Expiration": str(int(session.expires_wall * 1000)),
            },
        )

    async def autenticar(request: Request) -> Response:
        role = request.headers.get("role-type", "").strip()
        subject = client_identity(request.scope)
        if subject is None:
            return _error(
                401,
                "a client certificate is required (Client-Id and Client-Secret go to "
                f"{CHAVE_ACESSO_PATH})",
            )
        if not role:
            return _error(422, "the Role-Type header is required")
        return _session(role, f"cert:{subject}")

    async def chave_acesso(request: Request) -> Response:
        role = request.headers.get("role-type", "").strip()
        client_id = request.headers.get("client-id")
        if client_id is None:
            return _error(401, "the Client-Id and Client-Secret headers are required")
        identity = authority.client_id_identity(client_id, request.headers.get("client-secret", ""))
        if identity is None:
            return _error(401, "Client-Id/Client-Secret not recognised")
        return _session(role, identity)

    def _refused() -> Response:
        return _error(
            401,
            "missing or expired session: POST /portal/api/autenticar first",
            **{"WWW-Authenticate": "Bearer"},
        )

    async def versoes(request: Request) -> Response:
        if authority.session_of(request) is None:
            return _refused()
        numero = request.path_params["numero"]
        found = source.versions(numero)
        if found is None:
            return _error(404, f"Duimp {numero} not found")
        return JSONResponse([{"numero": numero, "versao": version} for version in found])

    async def consultar_duimp(request: Request) -> Response:
        if authority.session_of(request) is None:
            return _refused()
        numero = request.path_params["numero"]
        raw_version = request.path_params["versao"]
        if not raw_version.isascii() or not raw_version.isdigit() or len(raw_version) > 4:
            return _error(422, f"versao {raw_version!r} is not a number")
        found = await asyncio.to_thread(source.duimp, numero, int(raw_version))
        if found is None:
            return _error(404, f"Duimp {numero} version {raw_version} not found")
        return JSONResponse(found)

    return [
        Route(AUTH_PATH, autenticar, methods=["POST"], name="portal_autenticar"),
        Route(CHAVE_ACESSO_PATH, chave_acesso, methods=["POST"], name="portal_chave_acesso"),
        # Before {versao}, which would take "versoes" for a version.
        Route(DUIMP_VERSIONS_PATH, versoes, methods=["GET"], name="portal_duimp_versoes"),
        Route(DUIMP_VERSION_PATH, consultar_duimp, methods=["GET"], name="portal_duimp_versao"),
    ]


def create_portal_api_app(
    authority: PortalAuthority | None = None, *, duimps_source: SimulatedDuimps | None = None
) -> Starlette:
    """The Portal API alone, for tests; ``app.state.portal_authority`` is its authority."""
    authority = authority if authority is not None else PortalAuthority()
    app = Starlette(routes=portal_api_routes(authority, duimps_source=duimps_source))
    app.add_middleware(CsrfRenewal, authority=authority)
    app.state.portal_authority = authority
    return app


def with_situation(duimp: dict[str, Any], known: SituationChange | None) -> dict[str, Any]:
    """The consultation's answer, with the situation and channel the events gave the Duimp."""
    if known is None:
        return duimp
    if known.situacao is not None:
        duimp["situacaoDeclaracao"] = known.situacao
    if known.canal is not None and known.canal in CHANNELS:
        duimp["canalSelecao"] = CHANNELS[known.canal]
    return duimp
