"""Logging in and out. Every attempt, failed ones too, is in the audit log; failures are limited
per client address and per user name (``LoginLimiter``)."""

from __future__ import annotations

import asyncio
import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from receiver.console.auth import check_password
from receiver.console.security import csrf_ok, identify
from receiver.console.web import audited, base_path, console_of, csrf_refused, render

MAX_FIELD = 200


async def login_form(request: Request) -> Response:
    console = console_of(request)
    who = identify(request, console.config)
    if who is not None:
        return RedirectResponse(f"{base_path(request)}/", status_code=303)
    return render(request, "login.html", error=None, name="")


async def login(request: Request) -> Response:
    console = console_of(request)
    form = await request.form()
    if not csrf_ok(request, form):
        return csrf_refused(request)
    name = str(form.get("name", ""))[:MAX_FIELD].strip()
    password = str(form.get("password", ""))[:1024]
    client = request.client.host if request.client else "-"
    wait = console.limiter.blocked(client, name)
    if wait > 0:
        await audited(request, "login refused (rate limit)", name=name or "(empty)")
        response = render(
            request,
            "login.html",
            429,
            error=f"Too many failed logins: try again in {int(wait) + 1} s.",
            name=name,
        )
        response.headers["retry-after"] = str(int(wait) + 1)
        return response
    who = await asyncio.to_thread(check_password, console.config, name, password)
    if who is None:
        console.limiter.failed(client, name)
        await audited(request, "login failed", name=name or "(empty)")
        return render(request, "login.html", 401, error="Wrong user name or password.", name=name)
    # A fresh session (and CSRF token) at login: nothing set before it carries over.
    request.session.clear()
    request.session["user"] = who.name
    request.session["csrf"] = secrets.token_urlsafe(32)
    await audited(request, "login", operator=who)
    return RedirectResponse(f"{base_path(request)}/", status_code=303)


async def logout(request: Request) -> Response:
    console = console_of(request)
    form = await request.form()
    if not csrf_ok(request, form):
        return csrf_refused(request)
    who = identify(request, console.config)
    if who is not None:
        await audited(request, "logout", operator=who)
    request.session.clear()
    return RedirectResponse(f"{base_path(request)}/login", status_code=303)
