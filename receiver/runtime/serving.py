"""What ``serve`` and ``worker`` start besides their main work: the admin listener (one per
serving process, on the supervisor for ``serve --workers N``), the command line's overrides of
``receiver.yaml``, and the start-up line that says what is in effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from starlette.routing import BaseRoute

from receiver.config import Settings, parse_listen
from receiver.ingest.allowlist import Allowlist
from receiver.ingest.app import BackgroundService
from receiver.ingest.tls import server_context
from receiver.runtime.admin import AdminServer, admin_app, run_in_thread
from receiver.runtime.fleet import ADMIN_DIR_ENV, Fleet, process_socket
from receiver.store import Store

log = logging.getLogger("receiver.serve")


def with_command_line(
    settings: Settings,
    *,
    admin_listen: str | None = None,
    ssl_certfile: Path | None = None,
    ssl_keyfile: Path | None = None,
) -> Settings:
    """``settings`` with what the command line gave instead (it wins over the file), checked:
    a TLS pair that cannot be used is a ConfigError now, not in the middle of start-up."""
    changes: dict[str, Any] = {}
    if admin_listen is not None:
        changes["admin_listen"] = checked_listen(admin_listen)
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise_usage("--ssl-certfile and --ssl-keyfile go together")
    if ssl_certfile is not None and ssl_keyfile is not None:
        changes["server"] = settings.server.model_copy(
            update={"ssl_certfile": ssl_certfile.resolve(), "ssl_keyfile": ssl_keyfile.resolve()}
        )
    updated = settings.model_copy(update=changes) if changes else settings
    server = updated.server
    if server.ssl_certfile is not None and server.ssl_keyfile is not None:
        where = "--ssl-certfile" if ssl_certfile is not None else f"{settings.origin}: server"
        server_context(server.ssl_certfile, server.ssl_keyfile, where)
    return updated


def raise_usage(message: str) -> None:
    import click

    raise click.UsageError(message)


def checked_listen(value: str, option: str = "--admin-listen") -> str:
    """A HOST:PORT given on the command line; a usage error (exit 2) otherwise."""
    import click

    try:
        parse_listen(value)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=option) from None
    return value.strip()


def admin_extra_routes(settings: Settings, store: Store) -> list[BaseRoute]:
    """Routes and mounts the admin listener serves beside /healthz, /readyz and /metrics: the
    operator console at /console when receiver.yaml has a ``console:`` section."""
    if settings.console is None:
        return []
    from receiver.console import console_routes
    from receiver.runtime.consoleportal import portal_view

    return console_routes(settings, store, portal_view(settings, store))


def _store_ready(settings: Settings, store: Store) -> Callable[[], Any]:
    async def ready() -> bool:
        return await asyncio.to_thread(store.ready, settings.retry_after_seconds)

    return ready


def admin_service(
    settings: Settings,
    store: Store,
    *,
    sock: socket.socket | None = None,
    uds: str | None = None,
    extra: Sequence[BaseRoute] | None = None,
) -> BackgroundService:
    """This process's admin listener, on ``sock`` (bound by ``admin.bind``) or a Unix socket,
    for the life of the app or the worker."""
    routes = admin_extra_routes(settings, store) if extra is None else list(extra)
    app = admin_app(
        _store_ready(settings, store),
        retry_after_seconds=settings.retry_after_seconds,
        extra=routes,
    )
    server = AdminServer(app, sock=sock, uds=uds)

    @contextlib.asynccontextmanager
    async def service() -> AsyncIterator[None]:
        async with server.serving():
            yield

    return service


def serving_process_admin(settings: Settings, store: Store) -> BackgroundService | None:
    """A serving process of ``serve --workers N``: its admin app on its Unix socket, for the
    supervisor to ask (``receiver.runtime.fleet``); None outside ``--workers N``."""
    folder = os.environ.get(ADMIN_DIR_ENV)
    if not folder:
        return None
    return admin_service(settings, store, uds=process_socket(folder, os.getpid()), extra=[])


class SupervisorAdmin:
    """The admin listener of ``serve --workers N``, on the supervisor: a thread of its own
    answers for the serving processes (``receiver.runtime.fleet``). ``start`` makes the private
    folder of their Unix sockets and names it in the environment they inherit."""

    def __init__(self, settings: Settings, sock: socket.socket) -> None:
        self._settings = settings
        self._sock = sock
        self._folder = tempfile.mkdtemp(prefix="receiver-admin-")  # mode 0700
        self._stop: Callable[[], None] | None = None

    def start(self, pids: Callable[[], Sequence[int | None]]) -> None:
        os.environ[ADMIN_DIR_ENV] = self._folder
        fleet = Fleet(self._folder, pids)
        app = admin_app(
            fleet.ready,
            retry_after_seconds=self._settings.retry_after_seconds,
            metrics_text=fleet.metrics_text,
        )
        self._stop = run_in_thread(AdminServer(app, sock=self._sock))

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
        shutil.rmtree(self._folder, ignore_errors=True)


def startup_line(
    command: str,
    settings: Settings,
    *,
    admin: str,
    public: str | None = None,
    worker: str = "",
    allowlist: Allowlist | None = None,
    handlers: Sequence[str] = (),
) -> str:
    """What is in effect, in one line: the store (its URL without the password), the listeners
    (with TLS or not), the allowlist (its file and how many entries per source), the trusted
    proxies, the handlers and retention."""
    store = Store.from_settings(settings)
    try:
        where = store.safe_url
    finally:
        store.engine.dispose()
    parts = [f"store {where}"]
    if public is not None:
        server = settings.server
        tls = (
            f"https, TLS 1.2+ with {server.ssl_certfile}"
            if server.ssl_certfile is not None
            else "http, no TLS"
        )
        parts.append(f"webhooks on {public} ({tls})")
    parts.append(f"admin on http://{admin}")
    if allowlist is not None:
        sizes = ", ".join(f"{source} {count}" for source, count in allowlist.sizes().items())
        parts.append(f"allowlist {settings.allowlist} ({sizes or 'empty'})")
    parts.append(f"trusted proxies {', '.join(settings.trusted_proxies) or 'none'}")
    if worker:
        parts.append(worker)
    parts.append(f"handlers {', '.join(handlers) or 'none'}")
    kept = settings.retention.by_status()
    retention = ", ".join(f"{status} {days:g} d" for status, days in sorted(kept.items()))
    parts.append(f"retention {retention or 'off (everything kept)'}")
    return f"receiver {command}: " + "; ".join(parts)
