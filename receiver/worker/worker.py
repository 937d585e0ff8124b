"""Runs handlers from the job queue: plan, claim, run with a timeout, retry or bury, stop cleanly.

At least once: a job is finished only after its handler returned, so a crash re-runs it when its
lease runs out; the notification's idempotency key lets the handler make its effect once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from receiver import logs, metrics, storable
from receiver.config import DownloadSettings, WorkerSettings
from receiver.errors import ParseError, Retry
from receiver.store import GroupedWrites, JobStatus, store_down, utcnow
from receiver.worker import failures
from receiver.worker.attempt import Attempted, Services, read_notification, run_attempt
from receiver.worker.failures import Attempt, AttemptOutcome
from receiver.worker.jobs import ClaimedJob, JobQueue, Outcome
from receiver.worker.retry import RetryPolicy
from receiver.worker.routing import PortalAPI, ResultStore, Routing

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("receiver.worker")

METRICS_EVERY_SECONDS = 2.0
PLAN_BACKOFF_MAX_SECONDS = 60.0
# Outcomes waiting for their commit beyond which no more jobs are claimed: a store that commits
# slowly must not let claimed jobs pile up in memory.
MAX_RECORDING = 1000

# How an attempt ended: the job's status, the error kept, seconds until the next attempt, and
# the attempt's own record (job_attempts).
Settled = tuple[JobStatus, str | None, float, Attempt | None]


class Worker:
    """Runs handlers from ``queue``: the store's (``StoreJobQueue``), or the in-memory twin.

    Built from its own settings sections and collaborators, as procrastinate's
    ``Worker(app, queues, concurrency, ...)`` is: ``settings`` is ``worker:``, ``retry`` is made
    from ``retry:``, ``downloads`` is ``downloads:`` and ``data_dir`` is ``store_dir``
    (``receiver.runtime.services.build_worker`` assembles one from ``receiver.yaml``).
    """

    def __init__(
        self,
        queue: JobQueue,
        routing: Routing,
        *,
        results: ResultStore,
        settings: WorkerSettings | None = None,
        retry: RetryPolicy | None = None,
        downloads: DownloadSettings | None = None,
        data_dir: Path = Path("data"),
        portal: PortalAPI | None = None,
        http: httpx.AsyncClient | None = None,
        resources: Mapping[str, Any] | None = None,
    ) -> None:
        """``resources``: what the handler modules' lifespans opened (``ctx.resources``)."""
        self._queue = queue
        self._routing = routing
        self._settings = settings if settings is not None else WorkerSettings()
        self._policy = retry if retry is not None else RetryPolicy()
        self._services = Services(
            results=results,
            portal=portal,
            data_dir=data_dir,
            http=http,
            downloads=downloads if downloads is not None else DownloadSettings(),
            resources=resources if resources is not None else {},
        )
        # True once recorded; False if the job's lease was lost to another worker.
        self._outcomes = GroupedWrites[Outcome, bool](queue.finish_many, name="outcome-writer")
        # Every job in hand: claimed, until its outcome is recorded. At most ``concurrency``
        # of them run their handler at once (``_slots``); the others were claimed ahead.
        self._running: dict[asyncio.Task[None], ClaimedJob] = {}
        self._started: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(self._settings.concurrency)
        # Handlers finished since the last claim: how many to claim ahead next time (at most
        # batch_size), so a worker whose handlers are quick claims dozens of jobs at a time and
        # one whose handlers are slow does not hoard jobs that another worker could run.
        self._finished_since_claim = 0
        # Jobs whose handler is done and whose outcome waits for its group's commit: not counted
        # against the claim, so the next claim overlaps that commit (bounded by MAX_RECORDING).
        self._recording = 0
        self._plan_backoff = 0.0  # seconds; grows while planning fails for a reason of its own
        self._plan_again_at = 0.0
        self._wake = asyncio.Event()
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.completed = 0
        self._outage = logs.OutageLog(log, "worker: the store cannot be reached")

    async def run(self, stop: asyncio.Event, grace_seconds: float | None = None) -> None:
        """Work until ``stop`` is set, then let running handlers finish for up to ``grace_seconds``
        (default: the handler timeout) and give back the jobs that did not finish."""
        log.info("worker %s started with %d handlers", self.name, len(self._routing.routes))
        last_metrics = 0.0
        while not stop.is_set():
            busy = False
            try:
                busy = await self._tick()
                if time.monotonic() - last_metrics > METRICS_EVERY_SECONDS:
                    last_metrics = time.monotonic()
                    await self._publish_metrics()
                self._outage.up()
            except Exception as error:  # keep trying, never die; and say what really happened
                if store_down(error):
                    # Once when it goes, once when it is back: not every poll_interval_seconds.
                    self._outage.down(f"{type(error).__name__}: {error}")
                else:
                    log.exception("worker step failed: %s: %s", type(error).__name__, error)
            if not busy:
                await self._sleep(stop, self._settings.poll_interval_seconds)
        await self._drain(grace_seconds)

    async def _tick(self) -> bool:
        # Jobs already due first (retries, and jobs planned beyond the last claim), oldest first;
        # then new notifications are planned, the room left leased with their jobs.
        room = self._room()
        claimed: list[ClaimedJob] = []
        if room > 0:
            await asyncio.to_thread(self._queue.bury_abandoned, self._policy.max_attempts)
            claimed = await asyncio.to_thread(self._queue.claim, room, self._settings.lease_seconds)
            self._finished_since_claim = 0
        planned, leased = await self._plan(max(0, room - len(claimed)))
        claimed.extend(leased)
        for job in claimed:
            task = asyncio.create_task(self._run_job(job), name=f"job-{job.job_id}")
            self._running[task] = job
            task.add_done_callback(self._job_done)
        return bool(planned or claimed) and self._room() > 0

    def _room(self) -> int:
        """How many jobs to claim now: free handler slots, and as many ahead as handlers finished
        since the last claim. Claiming only the free slots (8 by default) capped a no-op handler
        near 700 jobs/s on SQLite and 230 on PostgreSQL: a claim, a plan and a commit for every 8
        jobs (loadtests/worker_bench.py)."""
        ahead = min(self._settings.batch_size, self._finished_since_claim)
        if self._recording > MAX_RECORDING:
            return 0
        return self._settings.concurrency + ahead - (len(self._running) - self._recording)

    async def _plan(self, lease: int) -> tuple[int, list[ClaimedJob]]:
        """Route new notifications, leasing up to ``lease`` of their jobs to this worker; a
        planning failure that is not the store's must not stop the claiming of jobs already
        planned: it is logged, and planning is tried again later."""
        if time.monotonic() < self._plan_again_at:
            return 0, []
        try:
            planned = await asyncio.to_thread(
                self._queue.plan_leasing,
                self._routing,
                self._settings.batch_size,
                lease,
                self._settings.lease_seconds,
            )
        except Exception as error:
            if store_down(error):
                raise
            self._plan_backoff = min(PLAN_BACKOFF_MAX_SECONDS, self._plan_backoff * 2 or 1.0)
            self._plan_again_at = time.monotonic() + self._plan_backoff
            log.exception(
                "routing new notifications failed (%s: %s); jobs are still claimed, and routing "
                "is tried again in %.0f s",
                type(error).__name__,
                storable.safe(str(error), 500),
                self._plan_backoff,
            )
            return 0, []
        self._plan_backoff = 0.0
        return planned

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._started.discard(task)
        self._wake.set()

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        self._wake.clear()
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _drain(self, grace_seconds: float | None) -> None:
        if not self._running:
            await self._outcomes.flush()
            return
        grace = self._settings.handler_timeout_seconds if grace_seconds is None else grace_seconds
        # Jobs claimed ahead whose handler has not started are given back at once, not run:
        # cancelled now, before a handler that finishes frees a slot for one of them.
        jobs = dict(self._running)
        waiting = {task for task in jobs if task not in self._started}
        for task in waiting:
            task.cancel()
        started = set(jobs) - waiting
        log.info("worker stopping: waiting up to %.0f s for %d handlers", grace, len(started))
        unfinished: set[asyncio.Task[None]] = set(waiting)
        if started:
            _, still_running = await asyncio.wait(started, timeout=grace)
            unfinished |= still_running
        if unfinished:
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
            await self._outcomes.flush()
            await asyncio.to_thread(self._queue.release, [jobs[task] for task in unfinished])
            log.info("worker released %d unfinished jobs", len(unfinished))
        await self._outcomes.flush()

    async def _run_job(self, job: ClaimedJob) -> None:
        async with self._slots:
            task = asyncio.current_task()
            assert task is not None
            self._started.add(task)
            status, error, delay, attempt = await self._outcome_of(job)
        # The slot is free while the outcome waits for its group's commit.
        self._finished_since_claim += 1
        self._recording += 1
        try:
            await self._finish(job, status, error, delay, attempt=attempt)
        finally:
            self._recording -= 1

    async def _outcome_of(self, job: ClaimedJob) -> Settled:
        """Run the job's handler; its outcome: status, error kept, delay until the next attempt,
        and the attempt's record."""
        # Every line written while this job runs (a task of its own) carries these fields.
        logs.job_fields.set(
            {
                "notification_id": job.note_id,
                "source": job.source,
                "event": job.event,
                "handler": job.handler,
                "attempt": job.attempt,
            }
        )
        started = utcnow()
        route = self._routing.route(job.handler)
        if route is None:
            why = f"handler {job.handler} is not configured any more; restore it, then replay"
            return JobStatus.DEAD, why, 0.0, _not_run(started, "HandlerNotConfigured", why)
        try:
            note = job.notification or read_notification(
                note_id=job.note_id,
                source=job.source,
                event=job.event,
                received_at=job.received_at,
                body=job.body,
                headers=job.headers,
                dedup_key=job.dedup_key,
                recovered=job.recovered,
            )
        except ParseError as error:  # routed once, so only a changed parser or model gets here
            why = storable.safe(f"unreadable: {error}", 4000)
            return JobStatus.DEAD, why, 0.0, _not_run(started, failures.error_type(error), why)
        attempted = await run_attempt(
            route,
            note,
            self._services.context(route, job.attempt),
            default_timeout=self._settings.handler_timeout_seconds,
            policy=self._policy,
            error_hooks=self._routing.error_hooks,
        )
        record = attempt_record(attempted)
        if attempted.outcome is JobStatus.DONE:
            self.completed += 1
            return JobStatus.DONE, None, 0.0, record
        # What a handler raised is kept as the job's last error: escaped and cut, so that the
        # record of its attempt can always be written (PostgreSQL text refuses NUL). The attempt's
        # own record keeps the traceback too, even for a Retry or a GiveUp.
        return attempted.outcome, storable.safe(attempted.reason, 4000), attempted.delay, record

    async def _finish(
        self,
        job: ClaimedJob,
        status: JobStatus,
        error: str | None,
        delay: float = 0.0,
        *,
        attempt: Attempt | None = None,
    ) -> None:
        # Shielded: a stop request must not lose the record of a handler that already ran. The
        # attempt's row goes with the outcome, in the same batch and transaction.
        outcome = Outcome(job, status, error, delay, attempt)
        kept = await asyncio.shield(self._outcomes.submit(outcome))
        if kept and status is JobStatus.DEAD:
            metrics.DEAD_LETTERS.labels(job.handler).inc()
        if not kept:
            log.warning("job %d: lease lost before it finished; another worker owns it", job.job_id)

    async def _publish_metrics(self) -> None:
        counts, oldest = await asyncio.to_thread(self._queue.counts)
        for status in JobStatus:
            metrics.QUEUE_DEPTH.labels(status.value).set(counts.get(status.value, 0))
        metrics.OLDEST_PENDING.set(oldest)


def attempt_record(attempted: Attempted) -> Attempt:
    """What ``job_attempts`` keeps of an attempt: its outcome and, when it failed, the error's
    type, message and bounded traceback."""
    started = attempted.started_at or utcnow()
    finished = attempted.finished_at or started
    error = attempted.error
    if error is None:
        return Attempt(started, finished, AttemptOutcome.DONE)
    if attempted.outcome is JobStatus.DEAD:
        ended = AttemptOutcome.DEAD
    elif isinstance(error, TimeoutError):
        ended = AttemptOutcome.TIMEOUT
    elif isinstance(error, Retry):
        ended = AttemptOutcome.RETRY
    else:
        ended = AttemptOutcome.FAILED
    return Attempt(
        started,
        finished,
        ended,
        error_type=failures.error_type(error),
        message=storable.safe(attempted.reason, failures.MESSAGE_CHARS)
        if isinstance(error, TimeoutError)
        else failures.message(error),
        traceback=failures.bounded_traceback(error),
    )


def _not_run(started: datetime, kind: str, why: str) -> Attempt:
    """The record of an attempt that could not run the handler at all: a dead letter."""
    return Attempt(started, utcnow(), AttemptOutcome.DEAD, error_type=kind, message=why)


@contextlib.asynccontextmanager
async def running_worker(worker: Worker) -> AsyncIterator[Worker]:
    """Run ``worker`` in the background for the duration of the block (used in serve's lifespan)."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop), name="worker")
    try:
        yield worker
    finally:
        stop.set()
        await task
