"""What the dispatcher's store hands out: plain frozen records, no session attached."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import RowMapping

from receiver.dispatcher.tables import AuthType
from receiver.dispatcher.validation import OutboundAuth


@dataclass(frozen=True, slots=True)
class Subscription:
    id: int
    owner: str
    evento: str
    endpoint: str
    auth: OutboundAuth

    def public(self) -> dict[str, Any]:
        """The seed's answer: id, evento, endpoint (credentials are never answered back)."""
        return {"id": self.id, "evento": self.evento, "endpoint": self.endpoint}


@dataclass(frozen=True, slots=True)
class DueDelivery:
    id: int
    subscription_id: int
    event_id: str
    evento: str
    endpoint: str
    auth: OutboundAuth
    body: bytes
    content_type: str
    attempts: int


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    ok: bool
    status_code: int | None
    description: str
    started_at: datetime
    finished_at: datetime
    response_excerpt: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryState:
    id: int
    subscription_id: int
    event_id: str
    evento: str
    status: str
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subscription": self.subscription_id,
            "event": self.event_id,
            "evento": self.evento,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at.isoformat(),
            "delivered_at": self.delivered_at.isoformat() if self.delivered_at else None,
        }


@dataclass(frozen=True, slots=True)
class EmitRequest:
    """An event to store with its deliveries (``DispatchStore.record_events``)."""

    evento: str
    body: bytes
    content_type: str
    emitted_at: datetime
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class EmitResult:
    event_id: str
    delivery_ids: tuple[int, ...]
    duplicate: bool = False  # the idempotency key was seen before: nothing new was stored


def subscription_from_row(row: RowMapping) -> Subscription:
    auth = OutboundAuth(AuthType(row["auth_type"]), row["auth_username"], row["auth_secret"])
    return Subscription(row["id"], row["owner"], row["evento"], row["endpoint"], auth)


def auth_columns(auth: OutboundAuth) -> dict[str, Any]:
    return {
        "auth_type": auth.type.value,
        "auth_username": auth.username,
        "auth_secret": auth.secret,
    }
