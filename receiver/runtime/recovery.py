"""Recovery of notifications the Portal gave up on.

The Portal tries a delivery 3 times, 5 minutes apart, and never again; but it keeps a record of
every failed attempt, with the content it sent (``conteudo``), searchable by day. Recovery reads
those records and stores, through the same store and dedup key as ingest, every content the
receiver never acknowledged, marked ``recovered``. Contents already stored (acknowledged after
all, or recovered by an earlier run) are left alone, so running it twice stores nothing new.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Protocol

from sqlalchemy import insert

from receiver import metrics
from receiver.errors import ReceiverError
from receiver.portal.subscriptions import FailureRecord, format_date, portal_today
from receiver.sources import dedup_key
from receiver.store import RECOVERY_RUNS, Incoming, Store, utcnow

log = logging.getLogger("receiver.portal.recovery")

SOURCE = "pucomex"
CLIENT_ADDRESS = "portal-recovery"  # stored as the client address of recovered notifications
_MAX_EVENT = 120


class FailureSource(Protocol):
    async def failures(self, data: date | str | None = None) -> list[FailureRecord]: ...


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    date: str
    seen: int  # failure records read (one per failed attempt)
    distinct: int  # different contents among them
    already_stored: int  # contents the receiver had stored already
    recovered: int  # contents stored by this run
    ids: tuple[str, ...] = ()  # ids of the notifications stored by this run

    def summary(self) -> str:
        return (
            f"{self.date}: {self.seen} failure records, {self.distinct} distinct notifications, "
            f"{self.already_stored} already stored, {self.recovered} recovered"
        )


def _incoming(record: FailureRecord, body: bytes, key: str) -> Incoming:
    event = record.evento.strip() or None
    if event is not None and len(event) > _MAX_EVENT:
        event = None
    return Incoming(
        source=SOURCE,
        event=event,
        client_ip=CLIENT_ADDRESS,
        headers={
            "x-recovered-from": "portal failure search",
            "x-portal-failure-id": str(record.id),
            "x-portal-failure-date": record.data,
            "x-portal-failure-descricao": record.descricao[:500],
        },
        body=body,
        dedup_key=key,
        recovered=True,
    )


async def recover(
    portal: FailureSource, store: Store, day: date | str | None = None
) -> RecoveryReport:
    """Store every notification of ``day``'s failure records that the receiver never stored."""
    data = format_date(day)
    records = await portal.failures(data)
    # One record per failed attempt: the same content shows up to 3 times. Keep the first.
    by_key: dict[str, tuple[FailureRecord, bytes]] = {}
    for record in records:
        body = record.conteudo.encode("utf-8")
        by_key.setdefault(dedup_key(SOURCE, body), (record, body))
    keys = list(by_key)
    known = await asyncio.to_thread(store.known_keys, keys)
    missing = [_incoming(by_key[key][0], by_key[key][1], key) for key in keys if key not in known]
    receipts = await asyncio.to_thread(store.append_now, missing) if missing else []
    # A receipt that is a duplicate means ingest stored the same content meanwhile.
    stored = tuple(receipt.id for receipt in receipts if not receipt.duplicate)
    report = RecoveryReport(
        date=data,
        seen=len(records),
        distinct=len(keys),
        already_stored=len(keys) - len(stored),
        recovered=len(stored),
        ids=stored,
    )
    metrics.PORTAL_RECOVERED.inc(report.recovered)
    await asyncio.to_thread(record_run, store, report)
    log.info("recovery %s", report.summary())
    return report


def record_run(store: Store, report: RecoveryReport) -> None:
    """The run in ``recovery_runs``, for the console's Portal page: what it read and brought back."""
    with store.engine.begin() as conn:
        conn.execute(
            insert(RECOVERY_RUNS).values(
                at=utcnow(),
                day=report.date,
                seen=report.seen,
                distinct=report.distinct,
                already_stored=report.already_stored,
                recovered=report.recovered,
                ids=json.dumps(list(report.ids)),
            )
        )


async def recover_periodically(
    portal: FailureSource, store: Store, every_seconds: float, stop: asyncio.Event
) -> None:
    """For ``serve``: recover today and yesterday (deliveries failing around midnight) every
    ``every_seconds`` until ``stop`` is set. Failures are logged, never fatal."""
    while not stop.is_set():
        today = portal_today()
        for day in (today - timedelta(days=1), today):
            try:
                await recover(portal, store, day)
            except ReceiverError as error:
                log.error("recovery of %s failed: %s", format_date(day), error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_seconds)
