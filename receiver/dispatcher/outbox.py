"""The sending side of the store: due deliveries, exclusive claims with leases, attempt results.

A delivery is claimed by one conditional UPDATE, which is atomic on SQLite (BEGIN IMMEDIATE) and on
PostgreSQL (the row lock re-checks the condition), so several dispatcher processes can share one
outbox without sending the same attempt twice. A lease that runs out means its holder stopped
mid-attempt; the delivery is then due again.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, insert, or_, select, update
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

DUE_PENDING = DELIVERIES.c.status == DeliveryStatus.PENDING
DESCRIPTION_CHARS = 2000  # an attempt's description (and a failure's), at most
LEASED = DELIVERIES.c.status == DeliveryStatus.SENDING


def due_condition(now: datetime) -> Any:
    # A 'sending' row whose lease ran out belongs to a dispatcher that stopped mid-attempt.
    return or_(
        and_(DUE_PENDING, DELIVERIES.c.next_attempt_at <= now),
        and_(LEASED, DELIVERIES.c.lease_until < now),
    )


@dataclass(frozen=True, slots=True)
class Claim:
    """Take ``delivery_id`` for one attempt if it is due at ``now``, until ``lease_until``."""

    delivery_id: int
    now: datetime
    lease_until: datetime


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
            .where(due_condition(now), SUBSCRIPTIONS.c.deleted.is_(False))
            .order_by(DELIVERIES.c.next_attempt_at, DELIVERIES.c.id)
            .limit(limit)
        )
        if exclude:
            query = query.where(DELIVERIES.c.id.not_in(list(exclude)))
        with self.engine.connect().execution_options(sqlite_readonly=True) as conn:
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
                for row in conn.execute(query).mappings()
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

    def claim(self, delivery_id: int, now: datetime, lease_until: datetime) -> bool:
        """Take the delivery for one attempt; False when it is not due or another process has it."""
        return self.claim_many([Claim(delivery_id, now, lease_until)])[0]

    def claim_many(self, claims: Sequence[Claim]) -> list[bool]:
        """``claim`` for each, in one transaction."""
        with self.engine.begin() as conn:
            return [
                conn.execute(
                    update(DELIVERIES)
                    .where(DELIVERIES.c.id == claim.delivery_id, due_condition(claim.now))
                    .values(
                        status=DeliveryStatus.SENDING,
                        lease_until=claim.lease_until,
                        updated_at=claim.now,
                    )
                ).rowcount
                == 1
                for claim in claims
            ]

    def release(self, delivery_id: int, now: datetime) -> None:
        """Give back an attempt we interrupted ourselves (shutdown); it is due again at once."""
        with self.engine.begin() as conn:
            conn.execute(
                update(DELIVERIES)
                .where(DELIVERIES.c.id == delivery_id, LEASED)
                .values(
                    status=DeliveryStatus.PENDING,
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
        max_attempts: int,
        interval: timedelta,
    ) -> DeliveryStatus:
        """The attempt, a failure record if it failed, and what the delivery does next."""
        return self.record_attempts([(delivery, outcome)], max_attempts, interval)[0]

    def record_attempts(
        self,
        attempts: Sequence[tuple[DueDelivery, AttemptOutcome]],
        max_attempts: int,
        interval: timedelta,
    ) -> list[DeliveryStatus]:
        """``record_attempt`` for each, in one transaction."""
        with self.engine.begin() as conn:
            return [
                self._record_attempt(conn, delivery, outcome, max_attempts, interval)
                for delivery, outcome in attempts
            ]

    def _record_attempt(
        self,
        conn: Connection,
        delivery: DueDelivery,
        outcome: AttemptOutcome,
        max_attempts: int,
        interval: timedelta,
    ) -> DeliveryStatus:
        state = conn.execute(
            select(DELIVERIES.c.attempts, SUBSCRIPTIONS.c.deleted)
            .join(SUBSCRIPTIONS, SUBSCRIPTIONS.c.id == DELIVERIES.c.subscription_id)
            .where(DELIVERIES.c.id == delivery.id)
        ).one()
        number = state.attempts + 1
        # What the subscriber answered is anything at all (a NUL, which PostgreSQL text refuses):
        # kept escaped, so that the attempt is always counted.
        excerpt = outcome.response_excerpt
        conn.execute(
            insert(ATTEMPTS),
            {
                "delivery_id": delivery.id,
                "number": number,
                "started_at": outcome.started_at,
                "finished_at": outcome.finished_at,
                "status_code": outcome.status_code,
                "ok": outcome.ok,
                "outcome": storable.safe(outcome.description, DESCRIPTION_CHARS),
                "response_excerpt": None if excerpt is None else storable.safe(excerpt),
            },
        )
        changes: dict[str, Any] = {
            "attempts": number,
            "lease_until": None,
            "updated_at": outcome.finished_at,
        }
        if outcome.ok:
            status = DeliveryStatus.DELIVERED
            changes["delivered_at"] = outcome.finished_at
        else:
            conn.execute(insert(FAILURES), self._failure(delivery, outcome, number, max_attempts))
            if number >= max_attempts:
                status = DeliveryStatus.FAILED
            elif state.deleted:
                status = DeliveryStatus.CANCELLED
            else:
                status = DeliveryStatus.PENDING
                # Attempts are spaced start to start, like the Portal's "one every 5 minutes".
                changes["next_attempt_at"] = max(outcome.started_at + interval, outcome.finished_at)
        conn.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.id == delivery.id)
            .values(status=status, **changes)
        )
        return status

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
