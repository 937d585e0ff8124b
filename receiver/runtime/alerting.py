"""Running the alerts (``receiver.alerts``) inside ``serve`` or ``worker``, and once from
``receiver alerts check``.

``alerts.run_in`` names the command that evaluates them (serve by default). In
``serve --workers N`` every serving process starts the service, and the one that holds an
exclusive lock on a file in the fleet's private folder evaluates; when it dies the lock is free
and another takes over at its next try. (Two evaluators would still not fire an alert twice: the
episodes table admits one open episode per rule and subject; the lock spares the sinks' retries
and the Portal's calls.)

The Portal rules read the Portal watch's last report: in serve, the watch that runs anyway
(``portal.watch_every_seconds``) hands it over (``FactsBox``); in worker and in ``alerts check``,
the alerts run a watch of their own that never recovers anything (``WatchFacts``): recovery is
serve's job, and a check must not change the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import IO, TYPE_CHECKING

from receiver.alerts import (
    Evaluation,
    Evaluator,
    PortalFacts,
    PortalFactsSource,
    close_sinks,
    evaluate_periodically,
    rules_from_settings,
    sinks_from_settings,
)
from receiver.config import Settings
from receiver.ingest.app import BackgroundService
from receiver.runtime.fleet import ADMIN_DIR_ENV
from receiver.store import Store, utcnow

# The watch (and through it the Portal client and httpx) when portal: is configured: it is
# imported where a watch is made.
if TYPE_CHECKING:
    from receiver.runtime.watch import Watch, WatchReport

log = logging.getLogger("receiver.alerts")

LOCK_NAME = "alerts.lock"


def facts_of(report: WatchReport, checked_at: datetime) -> PortalFacts:
    return PortalFacts(
        checked_at=checked_at,
        not_active=tuple((spec.evento, spec.endpoint, why) for spec, why in report.not_active),
        streaks=dict(report.streaks),
        unstored=dict(report.unstored),
    )


class FactsBox:
    """The watch's latest report, handed to the alerts: ``put`` is the watch's ``on_report``."""

    def __init__(self, max_age: timedelta, clock: Callable[[], datetime] = utcnow) -> None:
        self._max_age = max_age
        self._clock = clock
        self._facts: PortalFacts | None = None

    def put(self, report: WatchReport) -> None:
        self._facts = facts_of(report, self._clock())

    async def facts(self) -> PortalFacts | None:
        facts = self._facts
        if facts is None or self._clock() - facts.checked_at > self._max_age:
            return None
        return facts


class WatchFacts:
    """A watch of the alerts' own (no recovery), asked again when its report is older than
    ``every``: ``receiver worker`` and ``receiver alerts check`` (``every`` 0: each time)."""

    def __init__(
        self, watch: Watch, every: timedelta, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._watch = watch
        self._every = every
        self._clock = clock
        self._facts: PortalFacts | None = None

    async def facts(self) -> PortalFacts | None:
        now = self._clock()
        if self._facts is None or now - self._facts.checked_at >= self._every:
            report = await self._watch.cycle()
            if report is not None:
                self._facts = facts_of(report, now)
            elif self._facts is not None and now - self._facts.checked_at > self._every * 3:
                self._facts = None
        return self._facts


def build_evaluator(
    settings: Settings,
    store: Store,
    *,
    name: str,
    portal: PortalFactsSource | None,
    commits_failing: Callable[[], bool] | None = None,
) -> Evaluator:
    alerts = settings.alerts
    rules = rules_from_settings(
        alerts, store, evaluator=name, portal=portal, commits_failing=commits_failing
    )
    return Evaluator(store, rules, sinks_from_settings(alerts))


@contextlib.asynccontextmanager
async def own_watch_facts(
    settings: Settings, store: Store, every: timedelta
) -> AsyncIterator[PortalFactsSource | None]:
    """The Portal's facts from a watch of the alerts' own, when ``portal:`` is configured."""
    if settings.portal is None:
        yield None
        return
    from receiver.portal.client import PortalClient
    from receiver.runtime.watch import Watch

    async with PortalClient(settings.portal) as portal:
        watch = Watch(
            portal.subscriptions,
            store,
            settings.subscriptions,
            aliases=settings.events.aliases.get("pucomex"),
            recover=False,
        )
        yield WatchFacts(watch, every).facts


async def check_once(settings: Settings, store: Store) -> Evaluation:
    """``receiver alerts check``: one evaluation, with a fresh look at the Portal."""
    async with own_watch_facts(settings, store, timedelta(0)) as portal:
        evaluator = build_evaluator(settings, store, name="check", portal=portal)
        try:
            return await evaluator.evaluate()
        finally:
            await close_sinks(evaluator.sinks)


def try_lock(folder: str) -> IO[bytes] | None:
    """The evaluator's lock in ``folder`` (the fleet's private folder), held until the handle is
    closed or its process dies; None when another process holds it."""
    handle = open(os.path.join(folder, LOCK_NAME), "ab")  # noqa: SIM115 (held while evaluating)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def alert_service(
    settings: Settings,
    store: Store,
    *,
    command: str,
    facts: FactsBox | None = None,
    commits_failing: Callable[[], bool] | None = None,
) -> BackgroundService | None:
    """The evaluator of ``command`` (serve or worker), every ``alerts.every_seconds``; None when
    alerts are off or run by the other command. ``facts``: the Portal watch's reports (serve);
    without them, and with ``portal:`` configured, the alerts run a watch of their own."""
    alerts = settings.alerts
    if not alerts.enabled or alerts.run_in != command:
        return None
    every = alerts.every_seconds
    fleet = os.environ.get(ADMIN_DIR_ENV) if command == "serve" else None

    async def run(stop: asyncio.Event) -> None:
        lock: IO[bytes] | None = None
        while fleet is not None and lock is None:
            lock = try_lock(fleet)
            if lock is None:  # another serving process evaluates; try again later
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=every)
                    return
        try:
            portal_every = (
                timedelta(seconds=settings.portal.watch_every_seconds or 600.0)
                if (settings.portal is not None)
                else timedelta(minutes=10)
            )
            async with contextlib.AsyncExitStack() as stack:
                source: PortalFactsSource | None
                if facts is not None:
                    source = facts.facts
                else:
                    source = await stack.enter_async_context(
                        own_watch_facts(settings, store, portal_every)
                    )
                evaluator = build_evaluator(
                    settings, store, name=command, portal=source, commits_failing=commits_failing
                )
                stack.push_async_callback(close_sinks, evaluator.sinks)
                log.info("alerts: evaluating %s every %g s", ", ".join(evaluator.rule_names), every)
                await evaluate_periodically(evaluator, every, stop, first_after=every)
        finally:
            if lock is not None:
                lock.close()

    @contextlib.asynccontextmanager
    async def service() -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(run(stop), name="alerts")
        try:
            yield
        finally:
            stop.set()
            await task

    return service
