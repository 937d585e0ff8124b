"""The alert rules: each looks at the store, or at the Portal watch's last report, and says what
holds now (``Finding``s), or that it cannot tell (None).

``rules_from_settings`` builds the rules ``alerts:`` turns on. The store's rules read with the
indexes ingest already has (the primary key's id order, the jobs' status index), so an evaluation
costs a few small queries whatever the size of the inbox.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import false, func, select
from sqlalchemy.exc import SQLAlchemyError

from receiver.alert_settings import AlertSettings, SilenceSettings
from receiver.alerts import history
from receiver.alerts.model import Finding, PortalFactsSource, Rule
from receiver.store import JOBS, NOTES, JobStatus, NoteStatus, Store, received_since


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{name}: {count}" for name, count in sorted(counts.items()))


def _minutes(value: float) -> str:
    return f"{value:g} min"


class SubscriptionInactive:
    """A subscription of receiver.yaml that the Portal lists as cancelled, or not at all."""

    name = "subscription_inactive"

    def __init__(self, facts: PortalFactsSource) -> None:
        self._facts = facts

    async def check(self, now: datetime) -> list[Finding] | None:
        facts = await self._facts()
        if facts is None:
            return None
        return [
            Finding(
                self.name,
                f"subscription {evento} -> {endpoint} is not active at the Portal ({why}): its "
                "notifications are not sent; run `receiver portal subscriptions sync`",
                subject=f"{evento} -> {endpoint}",
            )
            for evento, endpoint, why in facts.not_active
        ]


class SubscriptionFailing:
    """An event whose deliveries have only failed for ``days`` consecutive days or more."""

    name = "subscription_failing"

    def __init__(self, facts: PortalFactsSource, days: int) -> None:
        self._facts = facts
        self._days = days

    async def check(self, now: datetime) -> list[Finding] | None:
        facts = await self._facts()
        if facts is None:
            return None
        return [
            Finding(
                self.name,
                f"{evento}: {streak} consecutive day(s) with only failed deliveries; the Portal "
                f"cancels the subscription at 30 ({30 - streak} left)",
                subject=evento,
            )
            for evento, streak in sorted(facts.streaks.items())
            if streak >= self._days
        ]


class UnstoredFailures:
    """Failure records (today's or yesterday's) whose content the store does not hold."""

    name = "unstored_failures"

    def __init__(self, facts: PortalFactsSource) -> None:
        self._facts = facts

    async def check(self, now: datetime) -> list[Finding] | None:
        facts = await self._facts()
        if facts is None:
            return None
        missing = {day: count for day, count in facts.unstored.items() if count}
        if not missing:
            return []
        total = sum(missing.values())
        return [
            Finding(
                self.name,
                f"{total} notification(s) the Portal failed to deliver are not stored "
                f"({_counted(missing)}): run `receiver portal recover --date DDMMYYYY`",
            )
        ]


class _StoreRule:
    """A rule answered by one read of the store, in a thread."""

    name = ""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def check(self, now: datetime) -> list[Finding] | None:
        try:
            return await asyncio.to_thread(self.read, now)
        except SQLAlchemyError:
            return None  # the store cannot be read: store_refusing_writes says so

    def read(self, now: datetime) -> list[Finding] | None:
        raise NotImplementedError


class NewDeadLetters(_StoreRule):
    """Handler jobs that went to the dead letters within the last ``minutes``."""

    name = "dead_letters"

    def __init__(self, store: Store, minutes: float) -> None:
        super().__init__(store)
        self._window = timedelta(minutes=minutes)
        self._minutes = minutes

    def read(self, now: datetime) -> list[Finding]:
        query = (
            select(JOBS.c.handler, func.count())
            .where(JOBS.c.status == JobStatus.DEAD, JOBS.c.updated_at >= now - self._window)
            .group_by(JOBS.c.handler)
        )
        with self._store.reading() as conn:
            counts = {handler: int(count) for handler, count in conn.execute(query)}
        if not counts:
            return []
        return [
            Finding(
                self.name,
                f"{sum(counts.values())} new dead letter(s) in the last "
                f"{_minutes(self._minutes)} (by handler: {_counted(counts)}): "
                "`receiver inbox list --status dead`, then `receiver replay --dead`",
            )
        ]


class NewQuarantined(_StoreRule):
    """Notifications received within the last ``minutes`` and quarantined (unreadable, or no
    handler for their event)."""

    name = "quarantined"

    def __init__(self, store: Store, minutes: float) -> None:
        super().__init__(store)
        self._window = timedelta(minutes=minutes)
        self._minutes = minutes

    def read(self, now: datetime) -> list[Finding]:
        query = (
            select(NOTES.c.source, func.count())
            .where(received_since(now - self._window), NOTES.c.status == NoteStatus.QUARANTINED)
            .group_by(NOTES.c.source)
        )
        with self._store.reading() as conn:
            counts = {source: int(count) for source, count in conn.execute(query)}
        if not counts:
            return []
        return [
            Finding(
                self.name,
                f"{sum(counts.values())} notification(s) quarantined in the last "
                f"{_minutes(self._minutes)} (by source: {_counted(counts)}): "
                "`receiver inbox list --status quarantined`",
            )
        ]


class IngestSilent(_StoreRule):
    """No notification received for ``silence.minutes`` within the business hours. Outside them
    the rule cannot tell (an alert open at the end of the day stays open until something comes);
    silence counts from the start of the day's hours, not from the evening before."""

    name = "ingest_silent"

    def __init__(self, store: Store, silence: SilenceSettings) -> None:
        super().__init__(store)
        self._silence = silence
        self._zone = silence.zone()
        self._days = silence.weekday_numbers()

    async def check(self, now: datetime) -> list[Finding] | None:
        local = now.astimezone(self._zone)
        hours = self._silence
        if local.weekday() not in self._days or not hours.start <= local.time() < hours.end:
            return None
        return await super().check(now)

    def read(self, now: datetime) -> list[Finding] | None:
        # The newest notification by id (ids are time-ordered): a walk down the primary key.
        query = (
            select(NOTES.c.received_at)
            .where(NOTES.c.recovered == false())
            .order_by(NOTES.c.id.desc())
            .limit(1)
        )
        with self._store.reading() as conn:
            last: datetime | None = conn.execute(query).scalar()
        local = now.astimezone(self._zone)
        opened = datetime.combine(local.date(), self._silence.start, tzinfo=self._zone)
        limit = timedelta(minutes=self._silence.minutes)
        if last is not None and last >= opened:
            quiet = now - last
            if quiet < limit:
                return []
        else:
            quiet = now - opened
            if quiet < limit:
                # Nothing yet today, too early to call it silence: an alert open since the
                # evening before stays open until something comes, or it is time to say so.
                return None

        last_text = "nothing ever" if last is None else last.strftime("%Y-%m-%d %H:%M UTC")
        return [
            Finding(
                self.name,
                f"no notification received for {int(quiet.total_seconds() // 60)} min within "
                f"business hours (last: {last_text}): check the subscriptions, the network "
                "path and the certificate",
            )
        ]


class StoreRefusingWrites:
    """The store does not take a write (the evaluation's own record, ``alert_checks``) within
    ``timeout_seconds``, or ingest's latest commits failed (``commits_failing``: in serve,
    ``Store.commits_failing``)."""

    name = "store_refusing_writes"

    def __init__(
        self,
        store: Store,
        evaluator: str,
        timeout_seconds: float = history.WRITE_TIMEOUT_SECONDS,
        commits_failing: Callable[[], bool] | None = None,
    ) -> None:
        self._store = store
        self._evaluator = evaluator
        self._timeout = timeout_seconds
        self._commits_failing = commits_failing

    async def check(self, now: datetime) -> list[Finding] | None:
        try:
            await asyncio.to_thread(
                history.record_check, self._store, self._evaluator, now, self._timeout
            )
        except SQLAlchemyError as error:
            why = type(getattr(error, "orig", None) or error).__name__
            return [self._finding(f"a write failed ({why}: {_first_line(error)})")]
        if self._commits_failing is not None and self._commits_failing():
            return [self._finding("ingest's latest commits failed")]
        return []

    def _finding(self, why: str) -> Finding:
        return Finding(
            self.name,
            f"the store refuses writes: {why}; ingest answers 503 and the Portal's three tries "
            "run out (check the disk, the database server, locks)",
        )


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0][:200] if text else "no message"


class OldestPending(_StoreRule):
    """The oldest handler job waiting to run (pending or to be retried), or the oldest
    notification not yet given its jobs, is older than ``minutes``: the worker is stopped,
    stuck or too slow."""

    name = "oldest_pending"

    def __init__(self, store: Store, minutes: float) -> None:
        super().__init__(store)
        self._limit = timedelta(minutes=minutes)

    def read(self, now: datetime) -> list[Finding]:
        jobs = select(func.min(JOBS.c.created_at)).where(
            JOBS.c.status.in_((JobStatus.PENDING, JobStatus.FAILED))
        )
        # Spelled as the partial index's condition (routed = false), as the planner does.
        unrouted = select(func.min(NOTES.c.id)).where(
            NOTES.c.routed == false(), NOTES.c.duplicate_of.is_(None)
        )
        with self._store.reading() as conn:
            oldest_job: datetime | None = conn.execute(jobs).scalar()
            first_id = conn.execute(unrouted).scalar()
            oldest_note: datetime | None = (
                conn.execute(select(NOTES.c.received_at).where(NOTES.c.id == first_id)).scalar()
                if first_id is not None
                else None
            )
        oldest = min((when for when in (oldest_job, oldest_note) if when is not None), default=None)
        if oldest is None or now - oldest < self._limit:
            return []
        age = int((now - oldest).total_seconds() // 60)
        return [
            Finding(
                self.name,
                f"the oldest notification waiting for its handlers is {age} min old: is the "
                "worker running (`receiver worker`, or serve without --no-worker)?",
            )
        ]


def rules_from_settings(
    settings: AlertSettings,
    store: Store,
    *,
    evaluator: str,
    portal: PortalFactsSource | None = None,
    commits_failing: Callable[[], bool] | None = None,
) -> list[Rule]:
    """The rules ``alerts:`` turns on; the Portal's only when ``portal`` gives its facts."""
    rules: list[Rule] = []
    if portal is not None:
        if settings.subscription_inactive:
            rules.append(SubscriptionInactive(portal))
        if settings.subscription_failing_days is not None:
            rules.append(SubscriptionFailing(portal, settings.subscription_failing_days))
        if settings.unstored_failures:
            rules.append(UnstoredFailures(portal))
    if settings.store_refusing_writes:
        rules.append(StoreRefusingWrites(store, evaluator, commits_failing=commits_failing))
    if settings.dead_letters_minutes is not None:
        rules.append(NewDeadLetters(store, settings.dead_letters_minutes))
    if settings.quarantined_minutes is not None:
        rules.append(NewQuarantined(store, settings.quarantined_minutes))
    if settings.silence is not None:
        rules.append(IngestSilent(store, settings.silence))
    if settings.oldest_pending_minutes is not None:
        rules.append(OldestPending(store, settings.oldest_pending_minutes))
    return rules
