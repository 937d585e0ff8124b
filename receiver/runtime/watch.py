"""Watching the Portal's retry budget from ``serve``: are the subscriptions alive, and did the
Portal give up on anything we never stored?

The Portal tries a notification 3 times and never again, and cancels a subscription after 30 days
of only failed deliveries. Every ``portal.watch_every_seconds`` (default 600; 0 or null: never),
``watch_once``:

1. lists the subscriptions, cancelled ones included (``exibirInativos=true``), and checks that
   each one of ``subscriptions:`` in ``receiver.yaml`` is active: gauge
   ``receiver_portal_subscription_active{evento,endpoint}`` (1 or 0) and the count
   ``receiver_portal_subscriptions_not_active``, and a WARNING with the ``sync`` advice;
2. reads the failure search of today and yesterday (Brasília dates) and, when a failure's content
   is not in the store, runs recovery at once (``receiver_portal_recovered_total`` counts what
   only recovery brought back);
3. per subscribed event that failed today or yesterday, counts the consecutive days with only
   failed deliveries: walking back from today, a day with failure records for the event and no
   notification of it received (not counting recovered ones) is failing, a day with one received
   ends the run, and a quiet day (neither) counts only between failing days and today. The
   figure is the number of days from the oldest failing day of the run to today:
   ``receiver_portal_failure_streak_days{evento}``, so an operator sees the 30-day cancellation
   coming. Days before yesterday are read once (their records and receipts no longer change);
   today and yesterday every cycle.

4. counts the failure records of today and yesterday whose content the store still lacks
   (``receiver_portal_failures_unstored``; 0 unless recovery failed, or ``recover=False`` as in
   ``receiver alerts check``), and hands the report to ``on_report`` (the alerts' Portal facts).

Nothing here stops ``serve``: a Portal error is logged once when it starts and once when it ends,
and the next cycle tries again. Each state (a subscription inactive, a streak) is logged when it
changes, not every cycle.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Protocol

from sqlalchemy import func, select

from receiver import metrics
from receiver.config import SubscriptionSpec
from receiver.errors import ReceiverError
from receiver.ids import id_floor
from receiver.portal.subscriptions import (
    PORTAL_TIMEZONE,
    FailureRecord,
    Subscription,
    format_date,
    portal_today,
)
from receiver.runtime.recovery import recover
from receiver.sources import dedup_key
from receiver.store import NOTES, Store, received_since

log = logging.getLogger("receiver.portal.watch")

SOURCE = "pucomex"
MAX_STREAK_DAYS = 31  # the Portal cancels at 30: no need to look further back
STREAK_WARNING_DAYS = 3


class PortalView(Protocol):
    """What the watch asks the Portal (``SubscriptionAPI``)."""

    async def failures(self, data: date | str | None = None) -> list[FailureRecord]: ...

    async def list(self, inactive: bool = False) -> builtins.list[Subscription]: ...


@dataclass(frozen=True, slots=True)
class _Records:
    """A day's failure records already read, handed to ``recover`` without asking again."""

    records: list[FailureRecord]

    async def failures(self, data: date | str | None = None) -> list[FailureRecord]:
        return self.records


@dataclass
class WatchReport:
    not_active: list[tuple[SubscriptionSpec, str]] = field(default_factory=list)  # spec, why
    recovered: int = 0
    streaks: dict[str, int] = field(default_factory=dict)  # evento -> days
    # ddMMyyyy -> failure records' contents the store lacks after recovery (distinct contents)
    unstored: dict[str, int] = field(default_factory=dict)


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=PORTAL_TIMEZONE)
    return start, start + timedelta(days=1)


def received_by_event(store: Store, day: date) -> dict[str, int]:
    """PUCOMEX notifications received on the Brasília date ``day`` by event, recovered ones left
    out (they are what the Portal failed to deliver)."""
    start, end = _day_bounds(day)
    query = (
        select(NOTES.c.event, func.count())
        .where(
            received_since(start),
            NOTES.c.id < id_floor(end + timedelta(hours=1)),
            NOTES.c.received_at < end,
            NOTES.c.source == SOURCE,
            NOTES.c.recovered.is_(False),
        )
        .group_by(NOTES.c.event)
    )
    with store.reading() as conn:
        return {event: int(count) for event, count in conn.execute(query) if event is not None}


class Watch:
    """One watcher's memory: past days' failure records, and the states last logged."""

    def __init__(
        self,
        portal: PortalView,
        store: Store,
        wanted: Sequence[SubscriptionSpec],
        aliases: Mapping[str, str] | None = None,
        *,
        recover: bool = True,
        on_report: Callable[[WatchReport], None] | None = None,
    ) -> None:
        self._portal = portal
        self._recovers = recover
        self._on_report = on_report
        self._store = store
        self._wanted = list(dict.fromkeys(wanted))
        self._aliases = dict(aliases or {})
        # Days before yesterday no longer change: their failure records and receipts are kept.
        self._past: dict[date, list[FailureRecord]] = {}
        self._past_received: dict[date, dict[str, int]] = {}
        self._logged_inactive: dict[tuple[str, str], str] = {}
        self._logged_streak: dict[str, int] = {}
        self._failing: str | None = None  # the Portal error last logged

    async def run(self, every_seconds: float, stop: asyncio.Event) -> None:
        """``watch_once`` every ``every_seconds`` until ``stop`` is set; never raises."""
        while not stop.is_set():
            await self.cycle()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_seconds)

    async def cycle(self, today: date | None = None) -> WatchReport | None:
        """One check; None when the Portal or the store could not be asked (logged once)."""
        try:
            report = await self.watch_once(today)
        except (ReceiverError, OSError) as error:
            metrics.PORTAL_WATCH_UP.set(0)
            problem = f"{type(error).__name__}: {error}"
            if problem != self._failing:
                log.error("watching the Portal failed (trying again next cycle): %s", problem)
                self._failing = problem
            return None
        metrics.PORTAL_WATCH_UP.set(1)
        if self._on_report is not None:
            self._on_report(report)
        if self._failing is not None:
            log.info("watching the Portal works again")
            self._failing = None
        return report

    async def watch_once(self, today: date | None = None) -> WatchReport:
        today = today or portal_today()
        report = WatchReport()
        await self._check_subscriptions(report)
        days: dict[date, list[FailureRecord]] = {}
        for day in (today - timedelta(days=1), today):
            days[day] = await self._portal.failures(day)
            if self._recovers:
                report.recovered += await self._recover(day, days[day])
            report.unstored[format_date(day)] = await self._unstored(days[day])
        metrics.PORTAL_FAILURES_UNSTORED.set(sum(report.unstored.values()))
        await self._streaks(today, days, report)
        return report

    async def _unstored(self, records: list[FailureRecord]) -> int:
        """How many distinct contents of ``records`` the store does not hold."""
        keys = list({dedup_key(SOURCE, record.conteudo.encode("utf-8")) for record in records})
        if not keys:
            return 0
        known = await asyncio.to_thread(self._store.known_keys, keys)
        return len(keys) - len(known)

    async def _check_subscriptions(self, report: WatchReport) -> None:
        listed = await self._portal.list(inactive=True)
        active = {(s.evento, s.endpoint) for s in listed if s.ativo}
        cancelled = {(s.evento, s.endpoint): s for s in listed if not s.ativo}
        for spec in self._wanted:
            key = (spec.evento, spec.endpoint)
            up = key in active
            metrics.PORTAL_SUBSCRIPTION_ACTIVE.labels(*key).set(1 if up else 0)
            if up:
                if self._logged_inactive.pop(key, None) is not None:
                    log.info("subscription %s -> %s is active again", *key)
                continue
            lost = cancelled.get(key)
            why = (
                f"cancelled by the Portal: {lost.motivo_inativacao or 'no reason given'}"
                if lost is not None
                else "not subscribed"
            )
            report.not_active.append((spec, why))
            if self._logged_inactive.get(key) != why:
                log.warning(
                    "subscription %s -> %s is not active at the Portal (%s): its notifications "
                    "are not sent; run `receiver portal subscriptions sync`",
                    spec.evento,
                    spec.endpoint,
                    why,
                )
                self._logged_inactive[key] = why
        metrics.PORTAL_SUBSCRIPTIONS_NOT_ACTIVE.set(len(report.not_active))

    async def _recover(self, day: date, records: list[FailureRecord]) -> int:
        if not records:
            return 0
        recovered = (await recover(_Records(records), self._store, day)).recovered
        if recovered:
            log.warning(
                "recovered %d notification(s) of %s that the Portal failed to deliver and the "
                "receiver never stored",
                recovered,
                format_date(day),
            )
        return recovered

    async def _records(
        self, day: date, fresh: Mapping[date, list[FailureRecord]]
    ) -> list[FailureRecord]:
        if day in fresh:
            return fresh[day]
        if day not in self._past:
            self._past[day] = await self._portal.failures(day)
        return self._past[day]

    async def _received(self, day: date, fresh: Mapping[date, object]) -> dict[str, int]:
        if day in fresh:
            return await asyncio.to_thread(received_by_event, self._store, day)
        if day not in self._past_received:
            self._past_received[day] = await asyncio.to_thread(received_by_event, self._store, day)
        return self._past_received[day]

    async def _streaks(
        self, today: date, fresh: Mapping[date, list[FailureRecord]], report: WatchReport
    ) -> None:
        # Past days older than the window are forgotten.
        oldest = today - timedelta(days=MAX_STREAK_DAYS)
        self._past = {day: records for day, records in self._past.items() if day >= oldest}
        self._past_received = {d: r for d, r in self._past_received.items() if d >= oldest}
        # A run counts only while it goes on: the event failed today or yesterday.
        recent = {record.evento for records in fresh.values() for record in records}
        pending = {spec.evento for spec in self._wanted} & recent
        oldest_failing: dict[str, int] = {}
        for back in range(MAX_STREAK_DAYS):
            if not pending:
                break
            day = today - timedelta(days=back)
            failed = {record.evento for record in await self._records(day, fresh)}
            received = await self._received(day, fresh)
            for evento in sorted(pending):
                names = {evento, self._aliases.get(evento, evento)}
                if any(received.get(name) for name in names):
                    pending.discard(evento)  # a day with a receipt ends the run
                elif evento in failed:
                    oldest_failing[evento] = back + 1
        for spec in self._wanted:
            days = oldest_failing.get(spec.evento, 0)
            report.streaks[spec.evento] = days
            metrics.PORTAL_FAILURE_STREAK.labels(spec.evento).set(days)
            if days >= STREAK_WARNING_DAYS and self._logged_streak.get(spec.evento) != days:
                log.warning(
                    "%s: %d consecutive day(s) with only failed deliveries; the Portal cancels a "
                    "subscription after 30. Check the endpoint, then `receiver portal recover`",
                    spec.evento,
                    days,
                )
            self._logged_streak[spec.evento] = days
