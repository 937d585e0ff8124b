"""The Portal API client: mutual TLS, the ``autenticar`` token flow, bounded retries, and the
Duimp consultation. Handlers reach it as ``ctx.portal``.

Authentication, as the Portal's public clients do it: with the certificate, ``POST
/portal/api/autenticar`` with ``Role-Type``; with ``portal.client_id``, ``POST
/portal/api/autenticar/chave-acesso`` with ``Client-Id``, ``Client-Secret`` and ``Role-Type``.
Each answer's fresh ``X-CSRF-Token`` is sent on the next call.

Retries: connection errors and 5xx answers are tried again, up to ``max_retries`` more times with
exponential backoff and jitter (a 503's ``Retry-After`` is honoured, within the cap). A request
that is not idempotent (a POST that creates something) is retried only when it certainly never
reached the Portal (the connection could not be made). A 401 or 403 renews the session once.
Every failure is a ``PortalError`` naming the method, endpoint and status.

Duimp consultation paths (the Portal's ``duimp-api``; the simulator in
``receiver.simulator.portal_api`` serves the same):

- ``GET /duimp-api/api/ext/duimp/{numero}/{versao}``: that version of the Duimp (the path of the
  Portal's own documentation example);
- ``GET /duimp-api/api/ext/duimp/{numero}/versoes``: the Duimp's versions, asked first when the
  version is not known. Its answer's shape is not published: a JSON array of version numbers, or
  of objects with ``versao`` (or ``numeroVersao``/``versaoDuimp``), or an object holding such an
  array under ``versoes``, is read, and the highest version is taken.
"""

from __future__ import annotations

import asyncio
import random
import re
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from receiver import metrics
from receiver.config import PortalSettings
from receiver.errors import ConfigError, PortalAuthError, PortalError
from receiver.outbound import PooledTransport
from receiver.portal.certificates import client_ssl_context
from receiver.portal.session import (
    AUTH_PATH,
    CHAVE_ACESSO_PATH,
    Token,
    TokenKeeper,
    token_from_answer,
)
from receiver.portal.subscriptions import SubscriptionAPI

DUIMP_VERSIONS_PATH = "/duimp-api/api/ext/duimp/{numero}/versoes"
DUIMP_VERSION_PATH = "/duimp-api/api/ext/duimp/{numero}/{versao}"
_VERSION_FIELDS = ("versao", "numeroVersao", "versaoDuimp", "versaoDeclaracao")
# Matched whole (fullmatch): "$" also matches before a trailing newline, which would then travel
# in the request's path.
_DUIMP_NUMBER = re.compile(r"[0-9]{2}[A-Z]{2}[0-9]{6,16}")
_DUIMP_VERSION = re.compile(r"[0-9]{1,4}")
# Connection errors for which the request certainly never reached the Portal.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_EXCERPT = 200


_NUMBERED = re.compile(r"[^/]*[0-9][^/]*")


def endpoint_label(path: str) -> str:
    """``path`` with every segment holding a digit as ``{n}`` (a Duimp number, a version, a
    subscription id): the endpoint label of receiver_portal_errors_total, so that its series stay
    as few as the API's endpoints."""
    return _NUMBERED.sub("{n}", path.split("?", 1)[0])


def _tls_failure(error: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def describe(response: httpx.Response) -> str:
    """A short, single-line excerpt of an error answer (the Portal's JSON ``message`` if any)."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("message", "mensagem", "detail", "error"):
            if isinstance(data.get(key), str):
                return str(data[key])[:_EXCERPT]
    return " ".join(response.text.split())[:_EXCERPT]


class PortalClient:
    """Async client of the Portal API. One per process; safe to share between handlers.

    ``transport`` replaces the network (``httpx.MockTransport`` in tests); ``ssl_context``
    replaces the one built from ``settings`` (certificate, ``ca_file``).
    """

    def __init__(
        self,
        settings: PortalSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        ssl_context: ssl.SSLContext | None = None,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 8.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._clock = clock
        self._wall = wall_clock
        if transport is None:
            # httpx's own pool, on sockets that answer its is-readable question cheaply: one
            # Duimp fetched per notification, 16 at once, asked 49 of them per fetch.
            context = ssl_context if ssl_context is not None else client_ssl_context(settings)
            transport = PooledTransport(ssl_context=context)
        self._http = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/"),
            transport=transport,
            timeout=httpx.Timeout(settings.timeout_seconds),
            follow_redirects=False,
            trust_env=False,
            headers={"Accept": "application/json"},
        )
        # The session: tokens renewed before they expire and once after a refusal.
        self.tokens = TokenKeeper(self._authenticate, clock=clock)
        self._subscriptions: SubscriptionAPI | None = None

    async def __aenter__(self) -> PortalClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def authentications(self) -> int:
        """How many times this client has called ``autenticar`` (for metrics and tests)."""
        return self.tokens.authentications

    @property
    def subscriptions(self) -> SubscriptionAPI:
        """The subscription API (seed ``pucomex-push-events-api.txt``) on this session."""
        if self._subscriptions is None:
            secret = self.settings.chave_secreta
            self._subscriptions = SubscriptionAPI(
                self, secret.get_secret_value() if secret is not None else None
            )
        return self._subscriptions

    # --- authentication -------------------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        headers = {"Role-Type": self.settings.role_type}
        if self.settings.client_id is not None:
            secret = self.settings.client_secret
            headers["Client-Id"] = self.settings.client_id
            headers["Client-Secret"] = secret.get_secret_value() if secret else ""
        for name, value in headers.items():
            if not value.isascii():
                # HTTP header values are ASCII; never send a mangled secret.
                raise ConfigError(f"portal: the {name} value must be ASCII text")
        return headers

    @property
    def auth_path(self) -> str:
        """Where this client authenticates: ``chave-acesso`` with a Client-Id, else the
        certificate's ``autenticar``."""
        return CHAVE_ACESSO_PATH if self.settings.client_id is not None else AUTH_PATH

    async def _authenticate(self, generation: int) -> Token:
        path = self.auth_path
        response = await self._send("POST", path, headers=self._auth_headers(), retry_5xx=True)
        if response.status_code in (401, 403):
            raise PortalAuthError(
                f"POST {path} answered {response.status_code}: {describe(response)}; check "
                "the certificate, portal.role_type, or portal.client_id/client_secret",
                endpoint=path,
                status=response.status_code,
            )
        if not response.is_success:
            raise PortalAuthError(
                f"POST {path} answered {response.status_code}: {describe(response)}",
                endpoint=path,
                status=response.status_code,
            )
        return token_from_answer(
            response,
            lifetime=self.settings.token_lifetime_seconds,
            generation=generation,
            now=self._clock(),
            now_wall=self._wall(),
            path=path,
        )

    async def authenticate(self) -> None:
        """Start a new session now (normally done on demand)."""
        self.tokens.forget()
        await self.tokens.current()

    # --- requests -------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """An authenticated call. Returns the answer whatever its status, except that a refused
        session (401/403) is renewed once and then raises ``PortalAuthError``."""
        retry_5xx = method.upper() != "POST" if idempotent is None else idempotent
        token = await self.tokens.current()
        for renewed in (False, True):
            response = await self._send(
                method, path, headers=token.headers(), json=json, params=params, retry_5xx=retry_5xx
            )
            if response.status_code not in (401, 403):
                fresh = response.headers.get("x-csrf-token")
                if fresh:
                    self.tokens.renew_csrf(token, fresh)
                return response
            if renewed:
                break
            token = await self.tokens.refused(token)
        raise PortalAuthError(
            f"{method} {path} answered {response.status_code} even with a new session: "
            f"{describe(response)}; the certificate's profile may lack access to it",
            endpoint=path,
            status=response.status_code,
        )

    async def _send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        retry_5xx: bool,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        attempts = self.settings.max_retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = await self._http.request(
                    method, path, headers=headers, json=json, params=params
                )
            except httpx.TransportError as error:
                tls = _tls_failure(error)
                failure = "tls" if tls is not None else "transport"
                metrics.PORTAL_ERRORS.labels(endpoint_label(path), failure).inc()
                if tls is not None:
                    raise PortalAuthError(
                        f"{method} {path}: TLS handshake failed ({tls.reason or tls}); check the "
                        "client certificate and portal.ca_file",
                        endpoint=path,
                    ) from None
                if last or not (retry_5xx or isinstance(error, _NOT_SENT)):
                    raise PortalError(
                        f"{method} {path}: {type(error).__name__} after {attempt + 1} "
                        f"attempt(s): {error}{self._hint()}",
                        endpoint=path,
                    ) from None
                await asyncio.sleep(self._delay(attempt, None))
                continue
            if response.status_code >= 400:
                metrics.PORTAL_ERRORS.labels(endpoint_label(path), str(response.status_code)).inc()
            if response.status_code >= 500 and retry_5xx and not last:
                await asyncio.sleep(self._delay(attempt, response.headers.get("retry-after")))
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _hint(self) -> str:
        s = self.settings
        if s.pfx_file is None and s.cert_file is None and s.client_id is None:
            # A TLS 1.3 server that wants a certificate just hangs up on a client without one.
            return " (no client certificate is configured: set portal.pfx_file or cert_file)"
        return ""

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None and retry_after.strip().isdigit():
            return min(float(retry_after.strip()), self._max_backoff)
        ceiling = min(self._max_backoff, self._backoff * (2**attempt))
        return random.uniform(ceiling / 2, ceiling)

    async def json(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        error: type[PortalError] = PortalError,
        idempotent: bool | None = None,
    ) -> Any:
        """An authenticated call whose 2xx answer is JSON (None for an empty body); anything
        else raises ``error`` naming the endpoint and status."""
        response = await self.request(method, path, json=json, params=params, idempotent=idempotent)
        if not response.is_success:
            raise error(
                f"{method} {path} answered {response.status_code}: {describe(response)}",
                endpoint=path,
                status=response.status_code,
            )
        if not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            raise PortalError(
                f"{method} {path} answered {response.status_code} with a body that is not JSON",
                endpoint=path,
                status=response.status_code,
            ) from None

    # --- Duimp ----------------------------------------------------------------------------

    async def duimp(self, numero: str, versao: str | int | None = None) -> dict[str, Any]:
        """The Duimp consultation: every field of the Portal's answer, as a dict. Without
        ``versao``, the Duimp's versions are asked first and the latest is fetched."""
        numero = str(numero).strip().upper()
        if not _DUIMP_NUMBER.fullmatch(numero):
            raise PortalError(f"{numero!r} is not a Duimp number (like 24BR0000012345)")
        if versao is None:
            versao = await self.duimp_versions(numero)
        else:
            versao = str(versao).strip()
            if not _DUIMP_VERSION.fullmatch(versao):
                raise PortalError(f"{versao!r} is not a Duimp version (a number)")
        path = DUIMP_VERSION_PATH.format(numero=numero, versao=versao)
        data = await self.json("GET", path)
        if not isinstance(data, dict):
            raise PortalError(f"GET {path}: expected a JSON object", endpoint=path, status=200)
        return data

    async def duimp_versions(self, numero: str) -> str:
        """The latest version of Duimp ``numero``, from ``GET .../duimp/{numero}/versoes``."""
        path = DUIMP_VERSIONS_PATH.format(numero=numero)
        data = await self.json("GET", path)
        latest = latest_version(data)
        if latest is None:
            raise PortalError(
                f"GET {path}: no version number in the answer", endpoint=path, status=200
            )
        return str(latest)


def latest_version(data: Any) -> int | None:
    """The highest version a ``versoes`` answer names (see the module docstring), or None."""
    if isinstance(data, dict):
        data = data.get("versoes")
    if not isinstance(data, list):
        return None
    found: list[int] = []
    for item in data:
        if isinstance(item, dict):
            item = next((item[k] for k in _VERSION_FIELDS if item.get(k) is not None), None)
        if isinstance(item, int) and not isinstance(item, bool):
            found.append(item)
        elif isinstance(item, str) and _DUIMP_VERSION.fullmatch(item.strip()):
            found.append(int(item.strip()))
    return max(found, default=None)
