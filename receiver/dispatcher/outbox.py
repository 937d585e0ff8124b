"""The sending side of the store: due deliveries, exclusive claims with leases, attempt results.

A claim takes a delivery for one attempt and counts that attempt, in one conditional UPDATE
(atomic on SQLite, BEGIN IMMEDIATE, and on PostgreSQL, where the row lock re-checks the condition):
the attempt number is the claim's, so the Portal's 3 attempts are 3 claims at most, whatever
happens to the attempts themselves. A lease that runs out means its holder stopped, or is too slow:
the delivery is due again, and the next claim is the next attempt, never one more than allowed.
Before the number was claimed with the lease, an attempt whose lease ran out while it waited for
its answer was sent again by another dispatcher, and both recorded "one more": a fourth attempt.

An outcome is recorded against the number its claim returned: the attempt row and failure record
always (the attempt was made), the delivery's next state only while that claim is still the
delivery's latest (compare-and-set on ``attempts``), so a late answer never undoes a takeover.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from receiver import storable
from receiver.dispatcher.records import AttemptOutcome, DueDelivery
from receiver.dispatcher.tables import (
    ATTEMPTS,
    DELIVERIES,
    EVENTS,
    FAILURES,
    SUBSCRIPTIONS,
    AuthType,
    DeliveryStatus,
)
from receiver.dispatcher.validation import OutboundAuth, brasilia_date
from receiver.store.tables import utcnow

log = logging.getLogger("receiver.dispatcher.outbox")

DUE_PENDING = DELIVERIES.c.status == DeliveryStatus.PENDING
DESCRIPTION_CHARS = 2000  # an attempt's description (and a failure's), at most
LEASED = DELIVERIES.c.status == DeliveryStatus.SENDING
# SQLite binds at most 32,766 parameters per statement; a batch of claims stays far below.
IDS_PER_STATEMENT = 1000


def due_condition(now: datetime) -> Any:
    # A 'sending' row whose lease ran out belongs to a dispatcher that stopped mid-attempt.
    return or_(
        and_(DUE_PENDING, DELIVERIES.c.next_attempt_at <= now),
        and_(LEASED, DELIVERIES.c.lease_until < now),
    )


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """The outcome of attempt ``number`` (what its claim returned) of ``delivery``."""

    delivery: DueDelivery
    number: int
    outcome: AttemptOutcome


# What the sender writes: a delivery id to claim, or the outcome of an attempt to record.
OutboxWrite = int | AttemptRecord


class Outbox:
    """Claims and results on the dispatcher's engine (``DispatchStore.outbox``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def due(self, now: datetime, limit: int, exclude: Collection[int] = ()) -> list[DueDelivery]:
        query = (
            select(
                DELIVERIES.c.id,
                DELIVERIES.c.subscription_id,
                DELIVERIES.c.event_id,
                DELIVERIES.c.attempts,
                EVENTS.c.evento,
                EVENTS.c.body,
                EVENTS.c.content_type,
                SUBSCRIPTIONS.c.endpoint,
                SUBSCRIPTIONS.c.auth_type,
                SUBSCRIPTIONS.c.auth_username,
                SUBSCRIPTIONS.c.auth_secret,
            )
            .join(EVENTS, EVENTS.c.id == DELIVERIES.c.event_id)
            .join(SUBSCRIPTIONS, SUBSCRIPTIONS.c.id == DELIVERIES.c.subscription_id)
            .where(SUBSCRIPTIONS.c.deleted.is_(False))
            .limit(limit)
        )
        if exclude:
            query = query.where(DELIVERIES.c.id.not_in(list(exclude)))
        # Two queries, each served by the (status, next_attempt_at) index in its order. One
        # query with both conditions OR-ed sorted every waiting delivery to return the first
        # few: 1.7 ms per look with 2,000 waiting, and growing with the backlog.
        expired = query.where(LEASED, DELIVERIES.c.lease_until < now).order_by(DELIVERIES.c.id)
        waiting = query.where(DUE_PENDING, DELIVERIES.c.next_attempt_at <= now).order_by(
            DELIVERIES.c.next_attempt_at, DELIVERIES.c.id
        )
        with self.engine.connect().execution_options(sqlite_readonly=True) as conn:
            rows = list(conn.execute(expired).mappings())
            if len(rows) < limit:
                rows.extend(conn.execute(waiting.limit(limit - len(rows))).mappings())
            return [
                DueDelivery(
                    id=row["id"],
                    subscription_id=row["subscription_id"],
                    event_id=row["event_id"],
                    evento=row["evento"],
                    endpoint=row["endpoint"],
                    auth=OutboundAuth(
                        AuthType(row["auth_type"]), row["auth_username"], row["auth_secret"]
                    ),
                    body=row["body"],
                    content_type=row["content_type"],
                    attempts=row["attempts"],
                )
                for row in rows
            ]

    def next_due_at(self) -> datetime | None:
        """When the earliest waiting delivery (or expiring lease) falls due."""
        with self.engine.connect().execution_options(sqlite_readonly=True) as conn:
            pending = conn.execute(
                select(func.min(DELIVERIES.c.next_attempt_at)).where(DUE_PENDING)
            ).scalar()
            leased = conn.execute(select(func.min(DELIVERIES.c.lease_until)).where(LEASED)).scalar()
        found = [moment for moment in (pending, leased) if moment is not None]
        return min(found) if found else None

    def claim(
        self, delivery_id: int, now: datetime, lease_until: datetime, max_attempts: int = 3
    ) -> int | None:
        """Take the delivery for one attempt: its number, or None when it is not due, another
        process has it, or it has had its ``max_attempts`` (it is then failed for good)."""
        with self.engine.begin() as conn:
            return self._claim(conn, [delivery_id], now, lease_until, max_attempts).get(delivery_id)

    @staticmethod
    def _claim(
        conn: Connection,
        delivery_ids: Sequence[int],
        now: datetime,
        lease_until: datetime,
        max_attempts: int,
    ) -> dict[int, int]:
        wanted = [*dict.fromkeys(delivery_ids)]
        mine = and_(DELIVERIES.c.id.in_(wanted), due_condition(now))
        # Due, but every attempt already taken: its last holder's lease ran out (it died), or the
        # limit was lowered since. Failed for good, not claimed again and again.
        exhausted = conn.execute(
            update(DELIVERIES)
            .where(mine, DELIVERIES.c.attempts >= max_attempts)
            .values(status=DeliveryStatus.FAILED, lease_until=None, updated_at=now)
            .returning(DELIVERIES.c.id, DELIVERIES.c.attempts)
        ).all()
        for delivery_id, attempts in exhausted:
            log.warning(
                "delivery %s failed: its attempt %s of %s was never recorded (its dispatcher "
                "stopped holding it)",
                delivery_id,
                attempts,
                max_attempts,
            )
        claimed = conn.execute(
            update(DELIVERIES)
            .where(mine, DELIVERIES.c.attempts < max_attempts)
            .values(
                status=DeliveryStatus.SENDING,
                attempts=DELIVERIES.c.attempts + 1,
                lease_until=lease_until,
                updated_at=now,
            )
            .returning(DELIVERIES.c.id, DELIVERIES.c.attempts)
        )
        return {delivery_id: number for delivery_id, number in claimed}

    def write_many(
        self,
        writes: Sequence[OutboxWrite],
        lease: timedelta,
        max_attempts: int,
        interval: timedelta,
    ) -> list[int | DeliveryStatus | None]:
        """Outcomes to record and deliveries to claim, in one transaction (one commit, one
        fsync): the outcomes first, so a claim sees what they changed. For each, in order: its
        status (``record_attempts``), or its attempt number or None (``claim``), each claim
        leased for ``lease`` from the moment it is written."""
        records = [write for write in writes if isinstance(write, AttemptRecord)]
        claims = [write for write in writes if not isinstance(write, AttemptRecord)]
        now = utcnow()
        numbers: dict[int, int] = {}
        with self.engine.begin() as conn:
            statuses = iter(self._record(conn, records, max_attempts, interval) if records else [])
            for start in range(0, len(claims), IDS_PER_STATEMENT):
                chunk = claims[start : start + IDS_PER_STATEMENT]
                numbers.update(self._claim(conn, chunk, now, now + lease, max_attempts))
        return [
            next(statuses) if isinstance(write, AttemptRecord) else numbers.get(write)
            for write in writes
        ]

    def release(self, delivery_id: int, number: int, now: datetime) -> None:
        """Give back attempt ``number``, which we interrupted ourselves (shutdown): it does not
        count, and the delivery is due again at once."""
        with self.engine.begin() as conn:
            conn.execute(
                update(DELIVERIES)
                .where(
                    DELIVERIES.c.id == delivery_id,
                    LEASED,
                    DELIVERIES.c.attempts == number,
                )
                .values(
                    status=DeliveryStatus.PENDING,
                    attempts=number - 1,
                    lease_until=None,
                    next_attempt_at=now,
                    updated_at=now,
                )
            )

    def record_attempt(
        self,
        delivery: DueDelivery,
        outcome: AttemptOutcome,
        *,
        number: int,
        max_attempts: int,
        interval: timedelta,
    ) -> DeliveryStatus:
        """The attempt, a failure record if it failed, and what the delivery does next."""
        record = AttemptRecord(delivery, number, outcome)
        return self.record_attempts([record], max_attempts, interval)[0]

    def record_attempts(
        self, records: Sequence[AttemptRecord], max_attempts: int, interval: timedelta
    ) -> list[DeliveryStatus]:
        """``record_attempt`` for each, in one transaction: one read of the deliveries, then
        one statement for all the attempt rows, one for the failures, one for the deliveries."""
        with self.engine.begin() as conn:
            return self._record(conn, records, max_attempts, interval)

    def _record(
        self,
        conn: Connection,
        records: Sequence[AttemptRecord],
        max_attempts: int,
        interval: timedelta,
    ) -> list[DeliveryStatus]:
        ids = list({record.delivery.id for record in records})
        query = (
            select(
                DELIVERIES.c.id,
                DELIVERIES.c.attempts,
                DELIVERIES.c.status,
                DELIVERIES.c.next_attempt_at,
                SUBSCRIPTIONS.c.deleted,
            )
            .join(SUBSCRIPTIONS, SUBSCRIPTIONS.c.id == DELIVERIES.c.subscription_id)
            .where(DELIVERIES.c.id.in_(ids))
        )
        if conn.dialect.name == "postgresql":
            # Held until commit, so no claim slips between this read and the writes below.
            query = query.with_for_update(of=DELIVERIES)
        current = {row.id: row for row in conn.execute(query)}
        attempt_rows: list[dict[str, Any]] = []
        failure_rows: list[dict[str, Any]] = []
        changes: list[dict[str, Any]] = []
        statuses: list[DeliveryStatus] = []
        for record in records:
            delivery, number, outcome = record.delivery, record.number, record.outcome
            row = current[delivery.id]
            attempt_rows.append(self._attempt_row(record))
            if not outcome.ok:
                failure_rows.append(self._failure(delivery, outcome, number, max_attempts))
            # Still this claim's delivery: the latest attempt, leased, or failed for good when
            # its lease ran out before this (late) answer. Otherwise another dispatcher took it
            # over since (a later attempt is under way or done), or an operator reset it.
            latest = row.attempts == number and row.status in (
                DeliveryStatus.SENDING,
                DeliveryStatus.FAILED,
            )
            if not latest:
                log.warning(
                    "delivery %s: attempt %s answered after another took its place (%s)",
                    delivery.id,
                    number,
                    outcome.description,
                )
                statuses.append(DeliveryStatus(row.status))
                continue
            next_attempt_at = row.next_attempt_at
            delivered_at = None
            if outcome.ok:
                status = DeliveryStatus.DELIVERED
                delivered_at = outcome.finished_at
            elif number >= max_attempts:
                status = DeliveryStatus.FAILED
            elif row.deleted:
                status = DeliveryStatus.CANCELLED
            else:
                status = DeliveryStatus.PENDING
                # Attempts are spaced start to start, like the Portal's "one every 5 minutes".
                next_attempt_at = max(outcome.started_at + interval, outcome.finished_at)
            changes.append(
                {
                    "b_id": delivery.id,
                    "b_number": number,
                    "b_status": status,
                    "b_next": next_attempt_at,
                    "b_delivered": delivered_at,
                    "b_updated": outcome.finished_at,
                }
            )
            statuses.append(status)
        conn.execute(insert(ATTEMPTS), attempt_rows)
        if failure_rows:
            conn.execute(insert(FAILURES), failure_rows)
        if changes:
            conn.execute(
                update(DELIVERIES)
                .where(
                    DELIVERIES.c.id == bindparam("b_id"),
                    DELIVERIES.c.attempts == bindparam("b_number"),
                )
                .values(
                    status=bindparam("b_status"),
                    next_attempt_at=bindparam("b_next"),
                    delivered_at=bindparam("b_delivered"),
                    lease_until=None,
                    updated_at=bindparam("b_updated"),
                ),
                changes,
            )
        return statuses

    @staticmethod
    def _attempt_row(record: AttemptRecord) -> dict[str, Any]:
        outcome = record.outcome
        # What the subscriber answered is anything at all (a NUL, which PostgreSQL text refuses):
        # kept escaped, so that the attempt is always counted.
        excerpt = outcome.response_excerpt
        return {
            "delivery_id": record.delivery.id,
            "number": record.number,
            "started_at": outcome.started_at,
            "finished_at": outcome.finished_at,
            "status_code": outcome.status_code,
            "ok": outcome.ok,
            "outcome": storable.safe(outcome.description, DESCRIPTION_CHARS),
            "response_excerpt": None if excerpt is None else storable.safe(excerpt),
        }

    @staticmethod
    def _failure(
        delivery: DueDelivery, outcome: AttemptOutcome, number: int, max_attempts: int
    ) -> dict[str, Any]:
        return {
            "subscription_id": delivery.subscription_id,
            "delivery_id": delivery.id,
            "data": brasilia_date(outcome.finished_at),
            "recorded_at": outcome.finished_at,
            "descricao": storable.safe(
                f"attempt {number} of {max_attempts}: {outcome.description}", DESCRIPTION_CHARS
            ),
            "evento": delivery.evento,
            "conteudo": storable.safe(delivery.body.decode("utf-8", errors="replace")),
        }
