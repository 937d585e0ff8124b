"""A subscription's life cycle at the Portal: automatic cancellation, and the inactive listing.

The Portal's webhook page: "a exclusão automática das assinaturas se dará quando, em um período de
30 dias, houver apenas ocorrências de erro na entrega", and ``GET /portal/api/ext/webhook
?exibirInativos=true`` lists the cancelled ones with the reason. Here a subscription is cancelled
when its first failed attempt since its last successful one (or since it began) is at least
``period`` old at ``now``, and nothing succeeded since: every attempt of the period failed. The
subscription row is soft-deleted (it receives nothing more, its pending deliveries are cancelled,
its failure records stay searchable) and ``dispatch_cancellations`` keeps when and why.

The listing's extra fields are not published; ours are ``ativo`` (false) and ``motivoInativacao``
(the reason), with ``dataInativacao`` (ISO-8601).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, insert, or_, select, update

from receiver.dispatcher.outbox import DUE_PENDING
from receiver.dispatcher.records import Subscription, subscription_from_row
from receiver.dispatcher.tables import (
    ATTEMPTS,
    CANCELLATIONS,
    DELIVERIES,
    SUBSCRIPTIONS,
    DeliveryStatus,
)
from receiver.dispatcher.validation import BRASILIA


@dataclass(frozen=True, slots=True)
class Cancelled:
    subscription: Subscription
    cancelled_at: datetime
    motivo: str

    def public(self) -> dict[str, Any]:
        return {
            **self.subscription.public(),
            "ativo": False,
            "motivoInativacao": self.motivo,
            "dataInativacao": self.cancelled_at.isoformat(),
        }


def failing_since(engine: Engine) -> dict[int, datetime]:
    """For each active subscription whose latest attempts failed: the first failed attempt since
    its last successful one (or since it began)."""
    last_ok = (
        select(
            DELIVERIES.c.subscription_id.label("subscription_id"),
            func.max(ATTEMPTS.c.finished_at).label("at"),
        )
        .select_from(ATTEMPTS.join(DELIVERIES, DELIVERIES.c.id == ATTEMPTS.c.delivery_id))
        .where(ATTEMPTS.c.ok.is_(True))
        .group_by(DELIVERIES.c.subscription_id)
        .subquery()
    )
    query = (
        select(DELIVERIES.c.subscription_id, func.min(ATTEMPTS.c.finished_at))
        .select_from(
            ATTEMPTS.join(DELIVERIES, DELIVERIES.c.id == ATTEMPTS.c.delivery_id)
            .join(SUBSCRIPTIONS, SUBSCRIPTIONS.c.id == DELIVERIES.c.subscription_id)
            .outerjoin(last_ok, last_ok.c.subscription_id == DELIVERIES.c.subscription_id)
        )
        .where(
            SUBSCRIPTIONS.c.deleted.is_(False),
            ATTEMPTS.c.ok.is_(False),
            or_(last_ok.c.at.is_(None), ATTEMPTS.c.finished_at > last_ok.c.at),
        )
        .group_by(DELIVERIES.c.subscription_id)
    )
    with engine.connect() as conn:
        return {sid: first for sid, first in conn.execute(query)}


def cancel_failing(engine: Engine, now: datetime, period: timedelta) -> list[int]:
    """Cancel every active subscription whose deliveries have only failed for ``period``; the ids
    cancelled."""
    due = {sid: first for sid, first in failing_since(engine).items() if first <= now - period}
    if not due:
        return []
    days = period / timedelta(days=1)
    cancelled: list[int] = []
    with engine.begin() as conn:
        for sid, first in sorted(due.items()):
            changed = conn.execute(
                update(SUBSCRIPTIONS)
                .where(SUBSCRIPTIONS.c.id == sid, SUBSCRIPTIONS.c.deleted.is_(False))
                .values(deleted=True, updated_at=now)
            ).rowcount
            if not changed:
                continue  # deleted meanwhile
            motivo = (
                f"Cancelada automaticamente: apenas erros na entrega por {days:g} dias "
                f"(desde {first.astimezone(BRASILIA):%d/%m/%Y %H:%M})"
            )
            conn.execute(
                insert(CANCELLATIONS),
                {"subscription_id": sid, "cancelled_at": now, "motivo": motivo},
            )
            conn.execute(
                update(DELIVERIES)
                .where(DELIVERIES.c.subscription_id == sid, DUE_PENDING)
                .values(status=DeliveryStatus.CANCELLED, updated_at=now)
            )
            cancelled.append(sid)
    return cancelled


def cancelled_subscriptions(engine: Engine, owner: str | None) -> list[Cancelled]:
    """The subscriptions the Portal cancelled by itself (not those its client deleted)."""
    query = (
        select(SUBSCRIPTIONS, CANCELLATIONS.c.cancelled_at, CANCELLATIONS.c.motivo)
        .join(CANCELLATIONS, CANCELLATIONS.c.subscription_id == SUBSCRIPTIONS.c.id)
        .where(SUBSCRIPTIONS.c.deleted.is_(True))
        .order_by(SUBSCRIPTIONS.c.id)
    )
    if owner is not None:
        query = query.where(SUBSCRIPTIONS.c.owner == owner)
    with engine.connect() as conn:
        return [
            Cancelled(subscription_from_row(row), row["cancelled_at"], row["motivo"])
            for row in conn.execute(query).mappings()
        ]
