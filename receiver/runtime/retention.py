"""Retention, run by ``serve`` in the background and by ``receiver inbox purge``.

A pass (``receiver.store.purge.Purger``) deletes in transactions of ``retention.batch_size``
notifications, and between two of them waits at least as long as the last one took (and 10 ms):
the purge holds SQLite's write lock at most half the time, so ingest's group commit, which waits
for that lock, gets it back within a batch's time. Then SQLite's free pages are returned to the
filesystem in steps paced the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from receiver.config import Settings
from receiver.retention import RetentionSettings
from receiver.store import Store
from receiver.store.purge import Purger, PurgeReport

log = logging.getLogger("receiver.retention")

MIN_PAUSE_SECONDS = 0.01
# serve's first pass, this long after it starts (not in the middle of start-up's own work).
FIRST_PASS_SECONDS = 5.0


def _pause(took: float) -> float:
    return max(MIN_PAUSE_SECONDS, took)


async def purge_pass(
    store: Store, retention: RetentionSettings, stop: asyncio.Event | None = None
) -> PurgeReport:
    """One pass, paced on the event loop (cut short between two steps once ``stop`` is set);
    what it deleted."""
    purger = Purger(store, retention)
    for step in (purger.step, purger.vacuum_step):
        while stop is None or not stop.is_set():
            started = time.monotonic()
            if not await asyncio.to_thread(step):
                break
            await asyncio.sleep(_pause(time.monotonic() - started))
    return purger.report


def purge_now(store: Store, retention: RetentionSettings, *, dry_run: bool = False) -> PurgeReport:
    """One pass from a command (``receiver inbox purge``), paced the same way with sleeps."""
    purger = Purger(store, retention, dry_run=dry_run)
    for step in (purger.step, purger.vacuum_step):
        while True:
            started = time.monotonic()
            if not step():
                break
            if not dry_run:
                time.sleep(_pause(time.monotonic() - started))
    return purger.report


def told(report: PurgeReport) -> str:
    notes = ", ".join(f"{status} {count}" for status, count in sorted(report.notes.items()))
    pages = f"; {report.pages_returned} free pages returned" if report.pages_returned else ""
    return f"notifications {notes or 'none'}; handler results {report.results}{pages}"


def retention_service(
    settings: Settings, store: Store
) -> Callable[[], contextlib.AbstractAsyncContextManager[None]] | None:
    """serve's background purge, every ``retention.every_seconds``; None when nothing is ever
    purged (every status kept for good)."""
    retention = settings.retention
    if not retention.by_status() and retention.results_days is None:
        return None

    async def run(stop: asyncio.Event) -> None:
        wait = min(FIRST_PASS_SECONDS, retention.every_seconds)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
                return
            wait = retention.every_seconds
            try:
                report = await purge_pass(store, retention, stop)
            except Exception as error:  # the next pass tries again; ingest never notices
                log.error(
                    "retention pass failed, trying again later: %s: %s", type(error).__name__, error
                )
                continue
            if report.notes or report.results or report.pages_returned:
                log.info("retention: deleted %s", told(report))

    @contextlib.asynccontextmanager
    async def service() -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(run(stop), name="retention")
        try:
            yield
        finally:
            stop.set()  # a step under way finishes (a short transaction), then the pass stops
            await task

    return service
