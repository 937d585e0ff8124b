"""``run_handlers``: a router's handlers run on one notification exactly as the worker runs them.

The same steps, from the same code: the planner's decision (``planner.decide``: the handlers
that match, aliases applied, or the quarantine reason: no handler, a body that cannot be read or
that does not fit its event's model), the typed payload (``note.parsed``), the router's lifespan
and start-up hooks (``ctx.resources``), then each handler through ``run_attempt`` (the worker's
timeout, ``Retry``, ``GiveUp``, other errors, the retry decision, the error hooks, the log line).
What each did comes back as a ``HandlerRun``; nothing is stored, and a failed run is not retried:
call again with ``attempt=2`` to see the next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from receiver import logs
from receiver.catalog import CATALOGS
from receiver.config import DownloadSettings, WorkerSettings
from receiver.payloads import validate_payload
from receiver.store import JobStatus
from receiver.worker import planner
from receiver.worker.attempt import Attempted, Services, run_attempt
from receiver.worker.memory import MemoryResults
from receiver.worker.resources import open_resources
from receiver.worker.retry import RetryPolicy
from receiver.worker.routing import Notification, PortalAPI, ResultStore, Router, Routing

HandlerRun = Attempted


class Quarantined(AssertionError):
    """The worker would not run any handler on this notification: it would be quarantined with
    ``reason`` (no handler matches, the body cannot be read, or it does not fit its model)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def run_handlers(
    router: Router,
    notification: Notification,
    *,
    portal: PortalAPI | Any = None,
    results: ResultStore | None = None,
    attempt: int = 1,
    settings: WorkerSettings | None = None,
    retry: RetryPolicy | None = None,
    data_dir: Path | None = None,
    http: httpx.AsyncClient | None = None,
    downloads: DownloadSettings | None = None,
    aliases: Mapping[str, Mapping[str, str]] | None = None,
) -> list[HandlerRun]:
    """Run every handler of ``router`` that the worker would run on ``notification``; what each
    did (``outcome``: done, failed or dead; ``error``; ``delay`` before the next attempt).

    ``portal``: a ``FakePortal`` (its client is opened and closed here), or any ``PortalAPI``.
    ``results``: where ``ctx.save`` keeps results (a new ``MemoryResults`` if not given: pass
    your own to read them after). Raises ``Quarantined`` when the worker would run nothing.
    """
    settings = settings if settings is not None else WorkerSettings()
    routing = Routing(
        [router], sorted({*CATALOGS, notification.source}), strict=False, aliases=aliases
    )
    decided = planner.decide(
        routing, notification.id, notification.source, notification.event, notification.body
    )
    (status, event, reason), names = decided.outcome, decided.handlers
    if status != JobStatus.PENDING.value:
        raise Quarantined(reason or "quarantined")
    if notification.parsed is None and event is not None:
        parsed = validate_payload(notification.source, event, notification.payload)
        notification = dataclasses.replace(notification, event=event, parsed=parsed)
    async with contextlib.AsyncExitStack() as stack:
        if portal is not None and hasattr(portal, "client") and callable(portal.client):
            portal = await stack.enter_async_context(portal.client())
        resources = await stack.enter_async_context(open_resources([router]))
        services = Services(
            results=results if results is not None else MemoryResults(),
            portal=portal,
            data_dir=data_dir,  # None: a handler that needs a folder says so (pass tmp_path)
            http=http,
            downloads=downloads if downloads is not None else DownloadSettings(),
            resources=resources,
        )
        runs: list[HandlerRun] = []
        for name in names:
            route = routing.route(name)
            assert route is not None
            runs.append(
                await _run_one(
                    routing, route.name, notification, services, attempt, settings, retry
                )
            )
        return runs


async def _run_one(
    routing: Routing,
    name: str,
    note: Notification,
    services: Services,
    attempt: int,
    settings: WorkerSettings,
    retry: RetryPolicy | None,
) -> HandlerRun:
    route = routing.route(name)
    assert route is not None

    async def one() -> HandlerRun:
        # As the worker: every line written meanwhile carries the job's fields (own task, own
        # context, so the fields do not leak into the caller's).
        logs.job_fields.set(
            {
                "notification_id": note.id,
                "source": note.source,
                "event": note.event,
                "handler": route.name,
                "attempt": attempt,
            }
        )
        return await run_attempt(
            route,
            note,
            services.context(route, attempt),
            default_timeout=settings.handler_timeout_seconds,
            policy=retry if retry is not None else RetryPolicy(),
            error_hooks=routing.error_hooks,
        )

    return await asyncio.create_task(one())


def run_handlers_sync(
    router: Router, notification: Notification, **options: Any
) -> list[HandlerRun]:
    """``run_handlers`` from a plain (not async) test: runs it in a new event loop."""
    return asyncio.run(run_handlers(router, notification, **options))


def outcomes(runs: Iterable[HandlerRun]) -> dict[str, str]:
    """Handler name (its last part) -> outcome, for short assertions."""
    return {run.handler.rsplit(".", 1)[-1]: run.outcome.value for run in runs}
