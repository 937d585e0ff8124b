"""The console as an ASGI app, mounted at ``/console``: under ``receiver console`` on its own
listener, or under ``serve`` on the admin listener (never on the webhook listener, whose app
serves only ``/webhooks/...``)."""

from __future__ import annotations

import secrets

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from receiver.config import Settings
from receiver.console import actions, login, pages
from receiver.console.auth import LoginLimiter
from receiver.console.security import SecurityHeaders
from receiver.console.web import Console, PortalView, environment
from receiver.store import Store

MOUNT = "/console"
SESSION_COOKIE = "receiver_console"


def console_app(settings: Settings, store: Store, portal: PortalView | None = None) -> Starlette:
    """The console's pages, to be mounted at ``MOUNT``; ``settings.console`` must be given."""
    config = settings.console
    if config is None:
        raise ValueError("the console needs a console: section in receiver.yaml")
    secret = (
        config.session_secret.get_secret_value()
        if config.session_secret is not None
        else secrets.token_urlsafe(48)  # sessions end with this process
    )
    routes: list[BaseRoute] = [
        Route("/", pages.home, methods=["GET"]),
        Route("/login", login.login_form, methods=["GET"]),
        Route("/login", login.login, methods=["POST"]),
        Route("/logout", login.logout, methods=["POST"]),
        Route("/inbox", pages.inbox, methods=["GET"]),
        Route("/notes/{note_id}", pages.notification, methods=["GET"]),
        Route("/notes/{note_id}/replay", actions.replay_note, methods=["POST"]),
        Route("/notes/{note_id}/replay-handler", actions.replay_handler, methods=["POST"]),
        Route("/dead", pages.dead, methods=["GET"]),
        Route("/dead/group", pages.dead_group, methods=["GET"]),
        Route("/dead/confirm", actions.dead_confirm, methods=["POST"]),
        Route("/dead/replay", actions.dead_replay, methods=["POST"]),
        Route("/quarantine", pages.quarantine, methods=["GET"]),
        Route("/quarantine/group", pages.quarantine_group, methods=["GET"]),
        Route("/quarantine/confirm", actions.quarantine_confirm, methods=["POST"]),
        Route("/quarantine/replay", actions.quarantine_replay, methods=["POST"]),
        Route("/portal", pages.portal, methods=["GET"]),
        Route("/alerts", pages.alerts, methods=["GET"]),
        Route("/audit", pages.audit_log, methods=["GET"]),
        Mount("/static", StaticFiles(packages=[("receiver.console", "static")]), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=secret,
                session_cookie=SESSION_COOKIE,
                max_age=int(config.session_hours * 3600),
                path=MOUNT,
                same_site="strict",
                https_only=True,  # Secure; browsers accept it from http://localhost too
            ),
        ],
    )
    app.state.console = Console(
        settings=settings,
        store=store,
        limiter=LoginLimiter(config.login_attempts, config.login_window_seconds),
        env=environment(),
        portal=portal,
    )
    return app


def console_routes(
    settings: Settings, store: Store, portal: PortalView | None = None
) -> list[BaseRoute]:
    """``/console`` and a redirect to it from ``/console`` without the slash."""

    async def to_console(request: Request) -> Response:
        return RedirectResponse(f"{MOUNT}/", status_code=307)

    return [
        Route(MOUNT, to_console, methods=["GET"]),
        Mount(MOUNT, app=console_app(settings, store, portal)),
    ]


def standalone_app(settings: Settings, store: Store, portal: PortalView | None = None) -> Starlette:
    """``receiver console``'s app: the console, and ``/`` sending there."""

    async def root(request: Request) -> Response:
        return RedirectResponse(f"{MOUNT}/", status_code=307)

    return Starlette(
        routes=[Route("/", root, methods=["GET"]), *console_routes(settings, store, portal)],
        middleware=[Middleware(SecurityHeaders)],
    )
