"""The console's Portal page: what the runtime reads for it (``receiver.console.PortalView``).

Per page view: the subscriptions (cancelled ones too, with the Portal's reason) against those of
``receiver.yaml``; the failure search of the last days, each content marked stored or not (the
same dedup key as ingest and recovery); per subscribed event, the run of days with only failed
deliveries, as the watch counts it (``receiver.runtime.watch``), and the days left before the
Portal's 30-day cancellation; and the latest recovery runs (the ``recovery_runs`` table). Nothing
is changed: recovery stays with serve's watch and ``receiver portal recover``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select

from receiver.config import Settings
from receiver.portal.subscriptions import FailureRecord, Subscription, portal_today
from receiver.runtime.recovery import SOURCE
from receiver.runtime.watch import MAX_STREAK_DAYS, received_by_event
from receiver.sources import dedup_key
from receiver.store import RECOVERY_RUNS, Store

CANCEL_AFTER_DAYS = 30
RUNS_SHOWN = 20


@dataclass(frozen=True, slots=True)
class Wanted:
    evento: str
    endpoint: str
    state: str  # "active", "cancelled: <reason>", "not subscribed"
    streak_days: int
    days_left: int | None  # before the Portal cancels, while the streak goes on


@dataclass(frozen=True, slots=True)
class FailedContent:
    record: FailureRecord  # the latest failed attempt with this content
    attempts: int  # failure records with this content that day
    stored: bool


@dataclass(frozen=True, slots=True)
class FailureDay:
    day: date
    contents: list[FailedContent]

    @property
    def missing(self) -> int:
        return sum(1 for content in self.contents if not content.stored)


@dataclass(frozen=True, slots=True)
class PortalSnapshot:
    subscriptions: list[Subscription]
    wanted: list[Wanted]
    days: list[FailureDay]
    runs: list[dict[str, Any]]


class ConsolePortal:
    """Asks the Portal through the configured ``portal:`` client, a new one per page view (the
    console may stay open for days; a client's token and connections do not have to)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self._settings = settings
        self._store = store
        self._past: dict[date, list[FailureRecord]] = {}  # days before yesterday do not change

    async def snapshot(self, days: int) -> PortalSnapshot:
        from receiver.portal.client import PortalClient

        assert self._settings.portal is not None
        today = portal_today()
        async with PortalClient(self._settings.portal) as client:
            api = client.subscriptions
            listed = await api.list(inactive=True)
            records: dict[date, list[FailureRecord]] = {}
            for back in range(days):
                day = today - timedelta(days=back)
                records[day] = await self._failures(api, day, today)
            streaks = await self._streaks(api, today, records)
        shown = [await self._day(day, records[day]) for day in sorted(records, reverse=True)]
        runs = await asyncio.to_thread(self._runs)
        return PortalSnapshot(listed, self._wanted(listed, streaks), shown, runs)

    async def _failures(self, api: Any, day: date, today: date) -> list[FailureRecord]:
        if day >= today - timedelta(days=1):
            found: list[FailureRecord] = await api.failures(day)
            return found
        if day not in self._past:
            self._past[day] = await api.failures(day)
        return self._past[day]

    async def _day(self, day: date, records: list[FailureRecord]) -> FailureDay:
        by_key: dict[str, tuple[FailureRecord, int]] = {}
        for record in records:
            key = dedup_key(SOURCE, record.conteudo.encode("utf-8"))
            count = by_key[key][1] if key in by_key else 0
            by_key[key] = (record, count + 1)  # the latest attempt's record describes it
        known = await asyncio.to_thread(self._store.known_keys, list(by_key))
        return FailureDay(
            day,
            [FailedContent(last, count, key in known) for key, (last, count) in by_key.items()],
        )

    async def _streaks(
        self, api: Any, today: date, recent: dict[date, list[FailureRecord]]
    ) -> dict[str, int]:
        """The watch's count: walking back from today, a day with failure records of the event
        and none of it received is failing; a day with one received ends the run."""
        aliases = self._settings.events.aliases.get(SOURCE, {})

        async def of(day: date) -> list[FailureRecord]:
            return recent[day] if day in recent else await self._failures(api, day, today)

        failed_lately = {r.evento for r in await of(today)} | {
            r.evento for r in await of(today - timedelta(days=1))
        }
        pending = {spec.evento for spec in self._settings.subscriptions} & failed_lately
        oldest: dict[str, int] = {}
        for back in range(MAX_STREAK_DAYS):
            if not pending:
                break
            day = today - timedelta(days=back)
            failed = {r.evento for r in await of(day)}
            received = await asyncio.to_thread(received_by_event, self._store, day)
            for evento in sorted(pending):
                if any(received.get(name) for name in {evento, aliases.get(evento, evento)}):
                    pending.discard(evento)
                elif evento in failed:
                    oldest[evento] = back + 1
        return oldest

    def _wanted(self, listed: list[Subscription], streaks: dict[str, int]) -> list[Wanted]:
        found: list[Wanted] = []
        for spec in self._settings.subscriptions:
            matching = [s for s in listed if (s.evento, s.endpoint) == (spec.evento, spec.endpoint)]
            if any(s.ativo for s in matching):
                state = "active"
            elif matching:
                state = f"cancelled: {matching[0].motivo_inativacao or 'no reason given'}"
            else:
                state = "not subscribed"
            days = streaks.get(spec.evento, 0)
            left = max(CANCEL_AFTER_DAYS - days, 0) if days else None
            found.append(Wanted(spec.evento, spec.endpoint, state, days, left))
        return found

    def _runs(self) -> list[dict[str, Any]]:
        with self._store.reading() as conn:
            rows = conn.execute(
                select(RECOVERY_RUNS).order_by(RECOVERY_RUNS.c.id.desc()).limit(RUNS_SHOWN)
            ).mappings()
            runs = [dict(row) for row in rows]
        for run in runs:
            run["id_list"] = json.loads(run["ids"])
        return runs


def portal_view(settings: Settings, store: Store) -> ConsolePortal | None:
    """The console's Portal view when ``portal:`` is configured."""
    return ConsolePortal(settings, store) if settings.portal is not None else None
