"""The dispatcher's tables, kept apart from the receiver's (created with ``tables=DISPATCH_TABLES``).

subscriptions ─┐
               ├─< deliveries (one per matching subscription, written before anything is sent)
events ────────┘        ├─< attempts  (every try, whatever its outcome)
                        └─< failures  (every failed try: what ``GET .../webhook/falhas`` returns)
subscriptions ──── cancellations (the Portal's automatic cancellation, with its reason)
duimp_situations   (the latest situation the emitted events gave each Duimp, for its consultation)

They are made by the migrations in ``receiver/dispatcher/migrations`` (``receiver dispatcher db
upgrade``), which must match these models.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, Text
from sqlmodel import Field, SQLModel

from receiver.store.tables import UTCDateTime


def _utc(nullable: bool = False, index: bool = False) -> Column[datetime]:
    return Column(UTCDateTime(), nullable=nullable, index=index)


def _number10_id() -> Column[int]:
    # Number(10) in the seed passes 2**31, so BIGINT on PostgreSQL; SQLite autoincrements only a
    # column declared exactly INTEGER PRIMARY KEY (which is 64-bit there anyway).
    return Column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )


class AuthType(StrEnum):
    """How the sender authenticates to an endpoint, like InvoiCy's ``Tipo Autenticação``."""

    NONE = "none"
    BASIC = "basic"
    BEARER = "bearer"
    # The Portal's way: the subscription's chaveSecreta in a ``secret`` header, no Authorization.
    SECRET = "secret"  # noqa: S105 (the kind's name, not a secret)


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    SENDING = "sending"  # an attempt holds the lease
    DELIVERED = "delivered"  # an endpoint answered 200: the receipt
    FAILED = "failed"  # every attempt failed; only an operator resend sends it again
    CANCELLED = "cancelled"  # its subscription was deleted before it was delivered


FINAL_STATUSES = frozenset(
    {DeliveryStatus.DELIVERED, DeliveryStatus.FAILED, DeliveryStatus.CANCELLED}
)


class SubscriptionRow(SQLModel, table=True):
    __tablename__ = "dispatch_subscriptions"
    __table_args__ = (Index("ix_dispatch_subscriptions_owner_evento", "owner", "evento"),)

    # Number(10) in the seed.
    id: int | None = Field(default=None, sa_column=_number10_id())
    owner: str = Field(max_length=200)
    evento: str = Field(max_length=40, index=True)
    endpoint: str = Field(max_length=500)
    auth_type: str = Field(default=AuthType.NONE, max_length=8)
    auth_username: str | None = Field(default=None, max_length=200)
    # The dispatcher must present it on every delivery, so it is kept; it is never answered back.
    auth_secret: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    deleted: bool = Field(default=False)
    created_at: datetime = Field(sa_column=_utc())
    updated_at: datetime = Field(sa_column=_utc())


class EventRow(SQLModel, table=True):
    __tablename__ = "dispatch_events"

    id: str = Field(primary_key=True, max_length=26)
    evento: str = Field(max_length=40, index=True)
    emitted_at: datetime = Field(sa_column=_utc(index=True))
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    content_type: str = Field(max_length=100)
    # A caller that may emit twice (a handler run again) names the event; the second emit is a no-op.
    idempotency_key: str | None = Field(default=None, max_length=200, unique=True)


class DeliveryRow(SQLModel, table=True):
    __tablename__ = "dispatch_deliveries"
    __table_args__ = (Index("ix_dispatch_deliveries_due", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=26, foreign_key="dispatch_events.id", index=True)
    subscription_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    status: str = Field(default=DeliveryStatus.PENDING, max_length=16)
    attempts: int = 0  # attempts whose outcome is known
    next_attempt_at: datetime = Field(sa_column=_utc())
    lease_until: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    created_at: datetime = Field(sa_column=_utc())
    updated_at: datetime = Field(sa_column=_utc())
    delivered_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))


class AttemptRow(SQLModel, table=True):
    __tablename__ = "dispatch_attempts"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(foreign_key="dispatch_deliveries.id", index=True)
    number: int
    started_at: datetime = Field(sa_column=_utc())
    finished_at: datetime = Field(sa_column=_utc())
    status_code: int | None = None
    ok: bool
    outcome: str = Field(sa_column=Column(Text, nullable=False))
    response_excerpt: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class FailureRow(SQLModel, table=True):
    """One failed attempt, as the seed's failure search returns it."""

    __tablename__ = "dispatch_failures"
    __table_args__ = (Index("ix_dispatch_failures_data", "subscription_id", "data"),)

    id: int | None = Field(default=None, sa_column=_number10_id())
    subscription_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    delivery_id: int = Field(foreign_key="dispatch_deliveries.id")
    data: str = Field(max_length=8)  # ddMMyyyy, Brasília date of the attempt
    recorded_at: datetime = Field(sa_column=_utc())
    descricao: str = Field(sa_column=Column(Text, nullable=False))
    evento: str = Field(max_length=40)
    conteudo: str = Field(sa_column=Column(Text, nullable=False))


class CancellationRow(SQLModel, table=True):
    """A subscription the Portal cancelled by itself (its row is soft-deleted as well)."""

    __tablename__ = "dispatch_cancellations"

    subscription_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    cancelled_at: datetime = Field(sa_column=_utc())
    motivo: str = Field(sa_column=Column(Text, nullable=False))


class DuimpSituationRow(SQLModel, table=True):
    """What the Duimp events emitted so far say about one Duimp."""

    __tablename__ = "dispatch_duimp_situations"

    numero: str = Field(primary_key=True, max_length=20)
    versao: int | None = None
    situacao: str | None = Field(default=None, max_length=60)
    canal: str | None = Field(default=None, max_length=20)
    updated_at: datetime = Field(sa_column=_utc())


SUBSCRIPTIONS = SubscriptionRow.__table__  # type: ignore[attr-defined]
EVENTS = EventRow.__table__  # type: ignore[attr-defined]
DELIVERIES = DeliveryRow.__table__  # type: ignore[attr-defined]
ATTEMPTS = AttemptRow.__table__  # type: ignore[attr-defined]
FAILURES = FailureRow.__table__  # type: ignore[attr-defined]
CANCELLATIONS = CancellationRow.__table__  # type: ignore[attr-defined]
DUIMP_SITUATIONS = DuimpSituationRow.__table__  # type: ignore[attr-defined]
DISPATCH_TABLES = [
    SUBSCRIPTIONS,
    EVENTS,
    DELIVERIES,
    ATTEMPTS,
    FAILURES,
    CANCELLATIONS,
    DUIMP_SITUATIONS,
]
