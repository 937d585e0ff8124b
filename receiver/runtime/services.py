"""Assembles the long-running pieces from settings: the routing table, the worker, the Portal
client, recovery and the Portal watch.

This is where configuration meets code: ``receiver serve`` and ``receiver worker`` both come
here, so the handler list is loaded and checked the same way by each, and each component is given
its own section of ``receiver.yaml``, not the whole of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from receiver.config import Settings
from receiver.errors import ConfigError, HandlerError
from receiver.ingest.app import BackgroundService
from receiver.store import Store
from receiver.worker.jobs import StoreJobQueue
from receiver.worker.resources import open_resources
from receiver.worker.results import StoreResults
from receiver.worker.retry import RetryPolicy
from receiver.worker.routing import PortalAPI, Routing, load_routers
from receiver.worker.worker import Worker, running_worker

if TYPE_CHECKING:  # imported when portal: is configured: serve never loads it otherwise
    import httpx

    from receiver.portal.client import PortalClient
    from receiver.runtime.watch import WatchReport

# The alerts judge the Portal by the watch's report until it is this many watch periods old.
STALE_WATCH_PERIODS = 3

log = logging.getLogger("receiver.services")


def build_routing(settings: Settings) -> Routing:
    """Import the configured handler modules and check them: a ConfigError naming the settings
    file and the module or handler when one cannot be loaded, registers something invalid, or
    needs the Portal (``needs=("portal",)``) while ``portal:`` is absent."""
    try:
        routing = Routing(
            load_routers(settings.handlers),
            settings.sources,
            strict=settings.worker.strict_events,
            aliases=settings.events.aliases,
        )
    except HandlerError as error:
        raise ConfigError(f"{settings.origin}: {error}") from None
    needing = routing.needing("portal")
    if needing and settings.portal is None:
        more = f" (and {len(needing) - 1} more)" if len(needing) > 1 else ""
        raise ConfigError(
            f"{settings.origin}: portal: no such section, but handler {needing[0]}{more} needs "
            "the Portal API (ctx.portal): add it (base_url, certificate, role_type), or leave "
            "that module out of handlers"
        )
    return routing


def build_worker(
    settings: Settings,
    store: Store,
    routing: Routing,
    portal: PortalAPI | None = None,
    http: httpx.AsyncClient | None = None,
    resources: Mapping[str, Any] | None = None,
) -> Worker:
    """The worker ``receiver.yaml`` describes, on the store's job queue: its own sections
    (``worker:``, ``retry:``, ``downloads:``, ``store_dir``), not the whole settings."""
    return Worker(
        StoreJobQueue(store),
        routing,
        results=StoreResults(store),
        settings=settings.worker,
        retry=RetryPolicy.from_settings(settings.retry),
        downloads=settings.downloads,
        data_dir=settings.store_dir,
        portal=portal,
        http=http,
        resources=resources,
    )


@contextlib.asynccontextmanager
async def portal_client(settings: Settings) -> AsyncIterator[PortalClient | None]:
    """The Portal API client when ``portal:`` is configured, else None (handlers get a clear error)."""
    if settings.portal is None:
        yield None
        return
    from receiver.portal.client import PortalClient

    async with PortalClient(settings.portal) as client:
        yield client


def outbound_client(settings: Settings) -> httpx.AsyncClient:
    """The guarded client handlers get as ``ctx.http``, from the ``outbound:`` section."""
    # Here, not at the top: `serve --no-worker` and the writer process never need httpx (5 MiB).
    import httpx

    from receiver.outbound import guarded_client

    outbound = settings.outbound
    return guarded_client(
        outbound.allowed_networks,
        allow_http=outbound.allow_http,
        extra_ca_file=str(outbound.ca_file) if outbound.ca_file is not None else None,
        # Per step (connect, each read, each write), not for a whole download.
        timeout=httpx.Timeout(outbound.timeout_seconds),
        max_redirects=outbound.max_redirects,
    )


def worker_service(settings: Settings, store: Store, routing: Routing) -> BackgroundService:
    @contextlib.asynccontextmanager
    async def service() -> AsyncIterator[None]:
        async with (
            open_resources(routing.routers) as resources,
            portal_client(settings) as portal,
            outbound_client(settings) as http,
        ):
            worker = build_worker(settings, store, routing, portal, http, resources)
            async with running_worker(worker):
                yield

    return service


def recovery_service(settings: Settings, store: Store) -> BackgroundService | None:
    """Periodic recovery of the Portal's failed deliveries, when ``portal.recover_every_seconds``
    is set: what the Portal gave up on is read back from its failure search and stored."""
    if settings.portal is None or settings.portal.recover_every_seconds is None:
        return None
    every = settings.portal.recover_every_seconds

    @contextlib.asynccontextmanager
    async def service() -> AsyncIterator[None]:
        from receiver.runtime.recovery import recover_periodically

        async with portal_client(settings) as portal:
            assert portal is not None  # recovery is only offered with a portal: section
            stop = asyncio.Event()
            task = asyncio.create_task(
                recover_periodically(portal.subscriptions, store, every, stop)
            )
            try:
                yield
            finally:
                stop.set()
                await task

    return service


def watch_service(
    settings: Settings, store: Store, on_report: Callable[[WatchReport], None] | None = None
) -> BackgroundService | None:
    """The Portal watch (``receiver.runtime.watch``), on by default when ``portal:`` is configured:
    subscriptions active, nothing the Portal gave up on left unstored, failure streaks; each
    report handed to ``on_report`` (the alerts)."""
    if settings.portal is None or not settings.portal.watch_every_seconds:
        return None
    every = settings.portal.watch_every_seconds

    @contextlib.asynccontextmanager
    async def service() -> AsyncIterator[None]:
        from receiver.runtime.watch import Watch

        async with portal_client(settings) as portal:
            assert portal is not None  # the watch is only offered with a portal: section
            watch = Watch(
                portal.subscriptions,
                store,
                settings.subscriptions,
                aliases=settings.events.aliases.get("pucomex"),
                on_report=on_report,
            )
            stop = asyncio.Event()
            task = asyncio.create_task(watch.run(every, stop))
            try:
                yield
            finally:
                stop.set()
                await task

    return service


def serve_services(settings: Settings, store: Store, *, worker: bool) -> list[BackgroundService]:
    """What ``receiver serve`` runs beside ingest: the worker (unless --no-worker), recovery,
    the Portal watch, retention, the alerts."""
    from receiver.runtime.alerting import FactsBox, alert_service
    from receiver.runtime.retention import retention_service

    services = [worker_service(settings, store, build_routing(settings))] if worker else []
    portal = settings.portal
    watch_every = portal.watch_every_seconds if portal is not None else None
    # The alerts read the watch's reports; without a watch in serve, they run their own.
    box = FactsBox(timedelta(seconds=watch_every * STALE_WATCH_PERIODS)) if watch_every else None
    optionals = (
        recovery_service(settings, store),
        watch_service(settings, store, box.put if box is not None else None),
        retention_service(settings, store),
        alert_service(
            settings, store, command="serve", facts=box, commits_failing=store.commits_failing
        ),
    )
    for optional in optionals:
        if optional is not None:
            services.append(optional)
    return services


async def run_worker(
    settings: Settings, store: Store, routing: Routing, admin: socket.socket | None = None
) -> None:
    """``receiver worker``: handlers only, until SIGTERM or SIGINT, then a graceful stop; its
    admin listener (/healthz, /readyz, /metrics) on ``admin`` meanwhile."""
    from receiver.runtime.alerting import alert_service
    from receiver.runtime.serving import admin_service

    await asyncio.to_thread(store.check_schema)
    async with contextlib.AsyncExitStack() as stack:
        if admin is not None:
            await stack.enter_async_context(admin_service(settings, store, sock=admin)())
        alerts = alert_service(settings, store, command="worker")
        if alerts is not None:
            await stack.enter_async_context(alerts())
        await _work(settings, store, routing)


async def _work(settings: Settings, store: Store, routing: Routing) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # Python's default for SIGHUP would kill the worker without a line; it has nothing to reload.
    loop.add_signal_handler(
        signal.SIGHUP,
        lambda: log.warning("SIGHUP: receiver worker reloads nothing; restart it to apply changes"),
    )
    # The handler modules' resources are opened before the first job and closed after the last,
    # on SIGTERM too (the loop's handler sets ``stop``; nothing is cut short).
    async with (
        open_resources(routing.routers) as resources,
        portal_client(settings) as portal,
        outbound_client(settings) as http,
    ):
        worker = build_worker(settings, store, routing, portal, http, resources)
        await worker.run(stop)
    log.info("worker stopped after %d completed jobs", worker.completed)
