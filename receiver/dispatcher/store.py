"""The dispatcher's store: subscriptions, events and their deliveries, failure records.

Same engine as the receiver (SQLite WAL + synchronous=FULL, or PostgreSQL), its own tables. Every
method is synchronous and short; the async side calls them through ``asyncio.to_thread``. The
sending side (claims, leases, attempt results) is ``store.outbox`` (``outbox.py``).
``owner=None`` means an operator (the command line), who may act on any subscription.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import SQLModel

from receiver.dispatcher.outbox import DUE_PENDING, Outbox
from receiver.dispatcher.records import (
    DeliveryState,
    EmitResult,
    Subscription,
    UnknownSubscription,
    auth_columns,
    subscription_from_row,
)
from receiver.dispatcher.tables import (
    DELIVERIES,
    DISPATCH_TABLES,
    EVENTS,
    FAILURES,
    SUBSCRIPTIONS,
    DeliveryStatus,
)
from receiver.dispatcher.validation import OutboundAuth, SubscriptionInput
from receiver.errors import ConfigError, StoreUnavailable
from receiver.ids import new_id
from receiver.store import make_engine

log = logging.getLogger("receiver.dispatcher.store")


class DispatchStore:
    """The dispatcher's tables on one engine; ``create_schema`` first, ``close`` when done."""

    IDS_PER_QUERY = 10_000

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        self.engine: Engine = make_engine(url, pool_size=pool_size)
        self.outbox = Outbox(self.engine)

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def create_schema(self) -> None:
        try:
            SQLModel.metadata.create_all(self.engine, tables=DISPATCH_TABLES)
            self._check_durability()
        except SQLAlchemyError as error:
            raise StoreUnavailable(
                f"cannot reach the dispatcher store at {self.safe_url}: {error.__class__.__name__}"
            ) from error

    def _check_durability(self) -> None:
        # An outbox that forgets a stored delivery breaks the promise that it will be sent.
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "sqlite":
                if self.engine.url.database in (None, "", ":memory:"):
                    return
                mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
                sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
                if str(mode).lower() != "wal" or sync != 2:
                    raise ConfigError(f"{self.safe_url}: SQLite is not WAL + synchronous=FULL")
            else:
                for setting in ("fsync", "synchronous_commit"):
                    value = conn.exec_driver_sql(f"SHOW {setting}").scalar()
                    if str(value).lower() not in ("on", "remote_write", "remote_apply"):
                        raise ConfigError(f"{self.safe_url}: PostgreSQL {setting} is {value}")

    def close(self) -> None:
        self.engine.dispose()

    def _reading(self) -> Connection:
        return self.engine.connect().execution_options(sqlite_readonly=True)

    # --- subscriptions ----------------------------------------------------------------------

    def add_subscription(self, owner: str, data: SubscriptionInput, now: datetime) -> Subscription:
        auth = data.auth or OutboundAuth()
        values = {
            "owner": owner,
            "evento": data.evento,
            "endpoint": data.endpoint,
            **auth_columns(auth),
            "deleted": False,
            "created_at": now,
            "updated_at": now,
        }
        with self.engine.begin() as conn:
            new = conn.execute(insert(SUBSCRIPTIONS).returning(SUBSCRIPTIONS.c.id), values)
            return Subscription(new.scalar_one(), owner, data.evento, data.endpoint, auth)

    def subscriptions(self, owner: str | None) -> list[Subscription]:
        query = select(SUBSCRIPTIONS).where(SUBSCRIPTIONS.c.deleted.is_(False))
        if owner is not None:
            query = query.where(SUBSCRIPTIONS.c.owner == owner)
        with self._reading() as conn:
            return [
                subscription_from_row(row) for row in conn.execute(query.order_by("id")).mappings()
            ]

    def subscription(self, subscription_id: int, owner: str | None) -> Subscription:
        with self._reading() as conn:
            return self._active(conn, subscription_id, owner)

    @staticmethod
    def _active(conn: Connection, subscription_id: int, owner: str | None) -> Subscription:
        query = select(SUBSCRIPTIONS).where(
            SUBSCRIPTIONS.c.id == subscription_id, SUBSCRIPTIONS.c.deleted.is_(False)
        )
        row = conn.execute(query).mappings().first()
        # Someone else's subscription answers exactly like a missing one: ids are not disclosed.
        if row is None or (owner is not None and row["owner"] != owner):
            raise UnknownSubscription(f"no subscription with id {subscription_id}")
        return subscription_from_row(row)

    def update_subscription(
        self, subscription_id: int, owner: str | None, data: SubscriptionInput, now: datetime
    ) -> Subscription:
        with self.engine.begin() as conn:
            current = self._active(conn, subscription_id, owner)
            auth = data.auth if data.auth is not None else current.auth
            conn.execute(
                update(SUBSCRIPTIONS)
                .where(SUBSCRIPTIONS.c.id == subscription_id)
                .values(
                    evento=data.evento,
                    endpoint=data.endpoint,
                    updated_at=now,
                    **auth_columns(auth),
                )
            )
            return Subscription(subscription_id, current.owner, data.evento, data.endpoint, auth)

    def delete_subscription(self, subscription_id: int, owner: str | None, now: datetime) -> None:
        """Soft delete (its failure records stay searchable); what it still had to send is dropped."""
        with self.engine.begin() as conn:
            self._active(conn, subscription_id, owner)
            conn.execute(
                update(SUBSCRIPTIONS)
                .where(SUBSCRIPTIONS.c.id == subscription_id)
                .values(deleted=True, updated_at=now)
            )
            conn.execute(
                update(DELIVERIES)
                .where(DELIVERIES.c.subscription_id == subscription_id, DUE_PENDING)
                .values(status=DeliveryStatus.CANCELLED, updated_at=now)
            )

    # --- emitting -------------------------------------------------------------------------

    def record_event(
        self,
        evento: str,
        body: bytes,
        content_type: str,
        now: datetime,
        idempotency_key: str | None = None,
    ) -> EmitResult:
        """The event and one delivery per matching subscription, in one transaction."""
        if idempotency_key is not None:
            seen = self._event_by_key(idempotency_key)
            if seen is not None:
                return seen
        event_id = new_id()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(EVENTS),
                    {
                        "id": event_id,
                        "evento": evento,
                        "emitted_at": now,
                        "body": body,
                        "content_type": content_type,
                        "idempotency_key": idempotency_key,
                    },
                )
                targets = conn.execute(
                    select(SUBSCRIPTIONS.c.id).where(
                        SUBSCRIPTIONS.c.evento == evento, SUBSCRIPTIONS.c.deleted.is_(False)
                    )
                ).scalars()
                ids = self._insert_deliveries(conn, event_id, list(targets), now)
        except IntegrityError:
            # Another emit with the same key won the race; answer with what it stored.
            seen = self._event_by_key(idempotency_key) if idempotency_key else None
            if seen is None:
                raise
            return seen
        return EmitResult(event_id, tuple(ids))

    def _event_by_key(self, key: str) -> EmitResult | None:
        with self._reading() as conn:
            event_id = conn.execute(
                select(EVENTS.c.id).where(EVENTS.c.idempotency_key == key)
            ).scalar()
            if event_id is None:
                return None
            ids = conn.execute(
                select(DELIVERIES.c.id).where(DELIVERIES.c.event_id == event_id).order_by("id")
            ).scalars()
            return EmitResult(event_id, tuple(ids), duplicate=True)

    @staticmethod
    def _insert_deliveries(
        conn: Connection, event_id: str, subscription_ids: Sequence[int], now: datetime
    ) -> list[int]:
        ids: list[int] = []
        for subscription_id in subscription_ids:
            new = conn.execute(
                insert(DELIVERIES).returning(DELIVERIES.c.id),
                {
                    "event_id": event_id,
                    "subscription_id": subscription_id,
                    "status": DeliveryStatus.PENDING,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            ids.append(new.scalar_one())
        return ids

    # --- failures and operator actions -----------------------------------------------------

    def failures(self, owner: str | None, data: str) -> list[dict[str, Any]]:
        """The seed's failure search: ``id, data, descricao, evento, conteudo`` of one day."""
        query = (
            select(
                FAILURES.c.id,
                FAILURES.c.data,
                FAILURES.c.descricao,
                FAILURES.c.evento,
                FAILURES.c.conteudo,
            )
            .join(SUBSCRIPTIONS, SUBSCRIPTIONS.c.id == FAILURES.c.subscription_id)
            .where(FAILURES.c.data == data)
            .order_by(FAILURES.c.id)
        )
        if owner is not None:
            query = query.where(SUBSCRIPTIONS.c.owner == owner)
        with self._reading() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def resend_pending(self, subscription_id: int, owner: str | None, now: datetime) -> list[int]:
        """SINtegre's "Reenviar Pendentes": what is waiting or failed goes out now, with fresh attempts."""
        with self.engine.begin() as conn:
            self._active(conn, subscription_id, owner)
            result = conn.execute(
                update(DELIVERIES)
                .where(
                    DELIVERIES.c.subscription_id == subscription_id,
                    DELIVERIES.c.status.in_([DeliveryStatus.PENDING, DeliveryStatus.FAILED]),
                )
                .values(
                    status=DeliveryStatus.PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    lease_until=None,
                    updated_at=now,
                )
                .returning(DELIVERIES.c.id)
            )
            return sorted(result.scalars())

    def send_latest(self, subscription_id: int, owner: str | None, now: datetime) -> list[int]:
        """SINtegre's "Enviar Tudo": the latest notification of the subscription's event, again."""
        with self.engine.begin() as conn:
            subscription = self._active(conn, subscription_id, owner)
            latest = conn.execute(
                select(EVENTS.c.id)
                .where(EVENTS.c.evento == subscription.evento)
                .order_by(EVENTS.c.emitted_at.desc(), EVENTS.c.id.desc())
                .limit(1)
            ).scalar()
            if latest is None:
                return []
            return self._insert_deliveries(conn, latest, [subscription_id], now)

    def deliveries(
        self,
        *,
        ids: Collection[int] | None = None,
        subscription_id: int | None = None,
        owner: str | None = None,
    ) -> list[DeliveryState]:
        """Deliveries in id order: these ``ids``, or those of one subscription, or all."""
        query = select(DELIVERIES, EVENTS.c.evento).join(
            EVENTS, EVENTS.c.id == DELIVERIES.c.event_id
        )
        with self._reading() as conn:
            if subscription_id is not None:
                self._active(conn, subscription_id, owner)
                query = query.where(DELIVERIES.c.subscription_id == subscription_id)
            if ids is None:
                return _delivery_states(conn, query)
            # SQLite binds at most 32,766 parameters per statement: a long list goes in chunks.
            wanted = sorted(ids)
            step = self.IDS_PER_QUERY
            return [
                state
                for start in range(0, len(wanted), step)
                for state in _delivery_states(
                    conn, query.where(DELIVERIES.c.id.in_(wanted[start : start + step]))
                )
            ]


def _delivery_states(conn: Connection, query: Select[Any]) -> list[DeliveryState]:
    return [
        DeliveryState(
            id=row["id"],
            subscription_id=row["subscription_id"],
            event_id=row["event_id"],
            evento=row["evento"],
            status=row["status"],
            attempts=row["attempts"],
            next_attempt_at=row["next_attempt_at"],
            delivered_at=row["delivered_at"],
        )
        for row in conn.execute(query.order_by(DELIVERIES.c.id)).mappings()
    ]
