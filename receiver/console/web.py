"""What every console page shares: the console's state, rendering a template (autoescaped, with
the user, the CSRF token and the mount point), and the checks before a page or an action runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import wraps
from typing import Any, Protocol

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from receiver.config import Settings
from receiver.console import audit
from receiver.console.auth import LoginLimiter, Operator
from receiver.console.security import csrf_ok, csrf_token, identify
from receiver.consolesettings import ConsoleSettings
from receiver.store import Store


class PortalView(Protocol):
    """What the Portal page shows, given by the runtime (which holds the Portal client and the
    watch's logic): subscriptions, failure records by day, failure streaks."""

    async def snapshot(self, days: int) -> Any: ...


@dataclass
class Console:
    settings: Settings
    store: Store
    limiter: LoginLimiter
    env: Environment
    portal: PortalView | None = None

    @property
    def config(self) -> ConsoleSettings:
        assert self.settings.console is not None
        return self.settings.console


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _age(value: timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = int(value.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def environment() -> Environment:
    # Autoescape everywhere: bodies, headers, events and errors are the senders' text.
    env = Environment(
        loader=PackageLoader("receiver.console", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["age"] = _age
    return env


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def base_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    console = console_of(request)
    who: Operator | None = getattr(request.state, "who", None)
    html = console.env.get_template(template).render(
        base=base_path(request),
        who=who,
        csrf=csrf_token(request),
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


Handler = Callable[[Request], Awaitable[Response]]


def page(handler: Handler) -> Handler:
    """A page anyone logged in may read; to the login page otherwise."""

    @wraps(handler)
    async def checked(request: Request) -> Response:
        who = identify(request, console_of(request).config)
        if who is None:
            return RedirectResponse(f"{base_path(request)}/login", status_code=303)
        request.state.who = who
        return await handler(request)

    return checked


def csrf_refused(request: Request) -> Response:
    """The answer to a POST without this session's CSRF token (403)."""
    return render(
        request,
        "refused.html",
        403,
        reason="The form's CSRF token is missing or wrong: reload the page and try again.",
    )


def action(handler: Handler) -> Handler:
    """A POST that changes something: a logged-in operator, with this session's CSRF token."""

    @wraps(handler)
    async def checked(request: Request) -> Response:
        console = console_of(request)
        who = identify(request, console.config)
        form = await request.form()
        request.state.form = form
        if not csrf_ok(request, form):
            request.state.who = who
            return csrf_refused(request)
        if who is None:
            return RedirectResponse(f"{base_path(request)}/login", status_code=303)
        request.state.who = who
        if not who.may_replay:
            return render(
                request, "refused.html", 403, reason="Only operators may replay; you are a viewer."
            )
        return await handler(request)

    return checked


async def audited(
    request: Request,
    action_name: str,
    target: str = "",
    *,
    operator: Operator | None = None,
    name: str = "(anonymous)",
) -> None:
    """One line of the audit log for this request: by ``operator`` (default: the request's
    logged-in operator), else by ``name`` (what a refused login gave), from the client's address."""
    console = console_of(request)
    who: Operator | None = operator or getattr(request.state, "who", None)
    await asyncio.to_thread(
        audit.record,
        console.store,
        who=who.name if who else name,
        role=who.role if who else "-",
        action=action_name,
        target=target,
        client_ip=request.client.host if request.client else "-",
    )
