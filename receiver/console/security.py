"""The console's defences that wrap every page: response headers (a strict Content-Security-Policy,
no framing, no sniffing, no caching), the CSRF token every POST must carry, and who is asking."""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from receiver.console.auth import Operator, from_proxy
from receiver.consolesettings import ConsoleSettings

# Scripts, styles and images only from the console itself: no inline script or style (a body
# shown in a page cannot run, even if escaping failed), no other origin, no framing, forms post
# only back here.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


class SecurityHeaders:
    """Adds ``HEADERS`` to every answer; pages (not the static files) are never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = "/static/" in scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
                if not static:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def csrf_token(request: Request) -> str:
    """This session's CSRF token, made on first use."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def csrf_ok(request: Request, form: Any) -> bool:
    expected = request.session.get("csrf")
    given = form.get("csrf")
    return (
        isinstance(expected, str)
        and isinstance(given, str)
        and hmac.compare_digest(expected.encode(), given.encode())
    )


def identify(request: Request, settings: ConsoleSettings) -> Operator | None:
    """The proxy's user (from a trusted proxy only), else the session's, looked up again in the
    settings each time: a user removed from receiver.yaml is out at once."""
    if settings.trusted_header is not None:
        peer = request.client.host if request.client else None
        found = from_proxy(settings, peer, request.headers.get(settings.trusted_header))
        if found is not None:
            return found
    name = request.session.get("user")
    if not isinstance(name, str):
        return None
    user = settings.user(name)
    if user is None:
        return None
    return Operator(user.name, user.role, "password")
