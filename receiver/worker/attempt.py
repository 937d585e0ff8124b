"""One handler attempt, as the worker runs it: the notification read from its stored row, the
context, the timeout, ``Retry``/``GiveUp``/errors, the error hooks, the log line and the retry
decision.

The worker (``receiver.worker.worker``) and ``receiver.testing.run_handlers`` both run handlers
through ``run_attempt``, so a handler's test sees exactly what the worker would do with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from receiver import metrics, payloads
from receiver.config import DownloadSettings
from receiver.errors import GiveUp, ParseError, Retry
from receiver.sources import parse
from receiver.store import JobStatus, utcnow
from receiver.worker.retry import Decision, RetryPolicy
from receiver.worker.routing import (
    Context,
    ErrorHook,
    Notification,
    PortalAPI,
    ResultStore,
    Route,
)

if TYPE_CHECKING:  # annotations only: the handler worker must not need httpx to start
    import httpx

log = logging.getLogger("receiver.worker")


def read_notification(
    *,
    note_id: str,
    source: str,
    event: str | None,
    received_at: datetime,
    body: bytes,
    headers: Mapping[str, str],
    dedup_key: str,
    recovered: bool = False,
) -> Notification:
    """The ``Notification`` a handler gets for a stored row: its payload parsed, and validated as
    its event's model (``note.parsed``). ``ParseError`` when either fails (the planner has
    quarantined such a body already; only a changed parser or model gets here)."""
    read = parse(source, body, event)
    try:
        typed = payloads.validate_payload(source, read.event, read.payload)
    except payloads.ValidationError as error:
        raise ParseError(f"payload {payloads.describe(error)}") from None
    return Notification(
        id=note_id,
        source=source,
        event=read.event,
        received_at=received_at,
        payload=read.payload,
        body=body,
        headers=headers,
        idempotency_key=dedup_key,
        recovered=recovered,
        parsed=typed,
    )


@dataclass(frozen=True, slots=True)
class Services:
    """What every context of one worker shares."""

    results: ResultStore
    portal: PortalAPI | None = None
    data_dir: Path | None = Path("data")
    http: httpx.AsyncClient | None = None
    downloads: DownloadSettings = field(default_factory=DownloadSettings)
    resources: Mapping[str, Any] = field(default_factory=dict)

    def context(self, route: Route, attempt: int) -> Context:
        return Context(
            handler=route.name,
            attempt=attempt,
            # The job's fields are on every line already (logs.job_fields).
            logger=logging.getLogger(f"receiver.handler.{route.name}"),
            results=self.results,
            portal_client=self.portal,
            data_dir=self.data_dir,
            http_client=self.http,
            downloads=self.downloads,
            resources=self.resources,
        )


@dataclass(frozen=True, slots=True)
class Attempted:
    """What one attempt did: ``outcome`` is done, failed (tried again after ``delay`` seconds) or
    dead; ``error`` is what the handler raised, ``reason`` the line kept with the job."""

    handler: str
    outcome: JobStatus
    error: BaseException | None = None
    reason: str = ""
    delay: float = 0.0
    # When the handler was called and when it returned or raised (UTC).
    started_at: datetime | None = None
    finished_at: datetime | None = None


async def run_attempt(
    route: Route,
    note: Notification,
    context: Context,
    *,
    default_timeout: float,
    policy: RetryPolicy,
    error_hooks: Sequence[ErrorHook] = (),
) -> Attempted:
    """Run ``route``'s handler once, within ``timeout`` (the route's own, when it has one): a
    ``Retry`` is tried again when it asks, a ``GiveUp`` goes to the dead letters at once, any
    other exception (or the timeout) is retried with the policy's backoff until the dead letters.
    A failure is logged with the notification id, handler, attempt and, unless it was a ``Retry``
    or a ``GiveUp`` (raised on purpose), its traceback."""
    timeout = route.timeout or default_timeout
    started_at = utcnow()
    started = time.perf_counter()
    requested_after: float | None = None
    gave_up = False
    error: BaseException | None
    try:
        async with asyncio.timeout(timeout):
            await route.handler(note, context)
    except Retry as retry:
        error = retry
        requested_after = retry.after
        reason = f"handler asked to retry: {retry}"
    except GiveUp as given_up:  # no attempt can succeed: straight to the dead letters
        error = given_up
        gave_up = True
        reason = f"{type(given_up).__name__}: {given_up}"
    except TimeoutError as timed_out:
        error = timed_out
        reason = f"timed out after {timeout:g} s"
    except Exception as failure:
        error = failure
        reason = f"{type(failure).__name__}: {failure}"
    else:
        error = None
        reason = ""
    metrics.HANDLER_SECONDS.labels(route.name).observe(time.perf_counter() - started)
    finished_at = utcnow()
    if error is None:
        metrics.JOBS.labels(route.name, "done").inc()
        return Attempted(route.name, JobStatus.DONE, started_at=started_at, finished_at=finished_at)
    await _call_error_hooks(error_hooks, note, context, error)
    decision = (
        Decision(dead=True, delay=0.0)
        if gave_up
        else policy.decide(context.attempt, requested_after)
    )
    outcome = JobStatus.DEAD if decision.dead else JobStatus.FAILED
    metrics.JOBS.labels(route.name, outcome.value).inc()
    log.log(
        logging.ERROR if decision.dead else logging.WARNING,
        "handler %s on notification %s attempt %d: %s%s",
        route.name,
        note.id,
        context.attempt,
        reason,
        " (dead letter)" if decision.dead else f" (retry in {decision.delay:.1f} s)",
        # Where it failed: not for a Retry or a GiveUp, which the handler raised on purpose.
        exc_info=None if isinstance(error, Retry | GiveUp) else error,
    )
    return Attempted(route.name, outcome, error, reason, decision.delay, started_at, finished_at)


async def _call_error_hooks(
    hooks: Sequence[ErrorHook], note: Notification, context: Context, error: BaseException
) -> None:
    for hook in hooks:
        try:
            await hook(note, context, error)
        except Exception:
            log.exception("error hook %r failed", hook)
