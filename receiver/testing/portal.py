"""``FakePortal``: the Portal API in memory, for handler tests.

It is the simulator's Portal API (``receiver.simulator.portal_api``: authentication, the Duimp
consultation in the documented shape of ``duimp-consulta-response.example.json``, with realistic
data) behind ``httpx.ASGITransport``, and ``ctx.portal`` is the real ``PortalClient`` over it: a
handler's test goes through the same client, paths, token flow and errors as in production. It
records every call, answers a Duimp of your own with ``set_duimp``, and fails on demand
(``fail(status=503)``, ``fail(timeout=True)``).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any

import httpx

from receiver.config import PortalSettings
from receiver.portal.client import PortalClient
from receiver.simulator.portal_api import PortalAuthority, create_portal_api_app

CLIENT_ID = "receiver-testing"
CLIENT_SECRET = "receiver-testing-secret"  # noqa: S105 - the fake's own, known to nobody else
BASE_URL = "https://portal.test"
_DUIMP_PATH = re.compile(r"^/duimp-api/api/ext/duimp/(?P<numero>[^/]+)/(?P<versao>[0-9]+)$")


@dataclass(frozen=True, slots=True)
class PortalCall:
    """One request the handler's client made, and the status it got (None: timed out)."""

    method: str
    path: str
    status: int | None


@dataclass(frozen=True, slots=True)
class _Failure:
    status: int
    timeout: bool
    path_contains: str


class FakePortal(httpx.AsyncBaseTransport):
    """The Portal API in memory. ``client()`` is the ``PortalClient`` a handler gets as
    ``ctx.portal`` (``run_handlers(..., portal=FakePortal())`` makes it for you)."""

    def __init__(self) -> None:
        self.authority = PortalAuthority(clients={CLIENT_ID: CLIENT_SECRET})
        self._app = httpx.ASGITransport(app=create_portal_api_app(self.authority))
        self.calls: list[PortalCall] = []
        self._failures: deque[_Failure] = deque()
        self._duimps: dict[tuple[str, int], dict[str, Any]] = {}

    # --- what a test sets up ----------------------------------------------------------------

    def set_duimp(self, numero: str, versao: int, answer: dict[str, Any]) -> None:
        """Answer this consultation with ``answer`` instead of the simulator's data."""
        self._duimps[(numero, versao)] = answer

    def fail(
        self, status: int = 503, *, timeout: bool = False, times: int = 1, path_contains: str = ""
    ) -> None:
        """The next ``times`` calls (whose path contains ``path_contains``) fail: answered with
        ``status`` (a 5xx is what the Portal sends when it is down), or never answered
        (``timeout``: the client's read timeout)."""
        for _ in range(times):
            self._failures.append(_Failure(status, timeout, path_contains))

    # --- what a test reads ------------------------------------------------------------------

    def duimps_fetched(self) -> list[tuple[str, int]]:
        """The Duimps consulted with success, (numero, versao), in order."""
        found = []
        for call in self.calls:
            match = _DUIMP_PATH.match(call.path)
            if match and call.status == 200:
                found.append((match["numero"], int(match["versao"])))
        return found

    @property
    def authentications(self) -> int:
        return self.authority.authentications

    # --- the client -------------------------------------------------------------------------

    def settings(self, **changes: Any) -> PortalSettings:
        """``portal:`` settings that reach this fake (client id and secret, no retries)."""
        values: dict[str, Any] = {
            "base_url": BASE_URL,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "max_retries": 0,
            "timeout_seconds": 5,
        }
        values.update(changes)
        return PortalSettings(**values)

    def client(self, **changes: Any) -> PortalClient:
        """The real Portal client over this fake; use it as ``async with``."""
        return PortalClient(self.settings(**changes), transport=self, backoff_seconds=0.01)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        failure = self._next_failure(path)
        if failure is not None:
            if failure.timeout:
                self.calls.append(PortalCall(request.method, path, None))
                raise httpx.ReadTimeout(
                    "the Portal did not answer (FakePortal.fail)", request=request
                )
            self.calls.append(PortalCall(request.method, path, failure.status))
            return httpx.Response(
                failure.status, json={"message": "FakePortal.fail"}, request=request
            )
        match = _DUIMP_PATH.match(path)
        response = await self._app.handle_async_request(request)
        if match and response.status_code == 200:
            own = self._duimps.get((match["numero"], int(match["versao"])))
            if own is not None:
                await response.aclose()
                response = httpx.Response(200, json=own, headers=response.headers, request=request)
                del response.headers["content-length"]
        self.calls.append(PortalCall(request.method, path, response.status_code))
        return response

    def _next_failure(self, path: str) -> _Failure | None:
        for failure in self._failures:
            if failure.path_contains in path:
                self._failures.remove(failure)
                return failure
        return None
