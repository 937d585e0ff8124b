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

from receiver.dispatcher.outbox import DUE_PENDING, Outbox
from receiver.dispatcher.portal_events import record_situations, situation_change
from receiver.dispatcher.records import (
    DeliveryState,
    EmitRequest,
    EmitResult,
    Subscription,
    auth_columns,
    subscription_from_row,
)
from receiver.dispatcher.schema import DISPATCH_SCHEMA
from receiver.dispatcher.tables import (
    DELIVERIES,
    EVENTS,
    FAILURES,
    SUBSCRIPTIONS,
    DeliveryStatus,
)
from receiver.dispatcher.validation import OutboundAuth, SubscriptionInput
from receiver.errors import ConfigError, StoreUnavailable, UnknownSubscription
from receiver.ids import new_id
from receiver.store import make_engine
from receiver.store.migrate import Upgraded, check, upgrade

log = logging.getLogger("receiver.dispatcher.store")


class DispatchStore:
    """The dispatcher's tables on one engine; ``upgrade_schema`` (or ``check_schema``) first, ``close`` when done."""

    IDS_PER_QUERY = 10_000

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        self.engine: Engine = make_engine(url, pool_size=pool_size)
        self.outbox = Outbox(self.engine)

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def upgrade_schema(self) -> Upgraded:
        """Bring the tables to this release's revision (``receiver dispatcher db upgrade``;
        ``Dispatcher.start`` too, for a dispatcher embedded in a program)."""
        try:
            upgraded = upgrade(self.engine, DISPATCH_SCHEMA)
            self._check_durability()
        except SQLAlchemyError as error:
            raise StoreUnavailable(
                f"cannot reach the dispatcher store at {self.safe_url}: {error.__class__.__name__}"
            ) from error
        return upgraded

    def check_schema(self) -> None:
        """Refuse (SchemaNotCurrent, one line) tables that are not at this release's revision:
        what the ``receiver dispatcher`` commands do before they start."""
        try:
            check(self.engine, DISPATCH_SCHEMA)
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
        request = EmitRequest(evento, body, content_type, now, idempotency_key)
        return self.record_events([request])[0]

    def record_events(self, requests: Sequence[EmitRequest]) -> list[EmitResult]:
        """Many events and their deliveries in one transaction (one fsync), a result for each.

        An idempotency key already stored, or earlier in ``requests``, is answered with that
        event's result, marked duplicate, and stores nothing.
        """
        try:
            with self.engine.begin() as conn:
                return self._record(conn, requests)
        except IntegrityError:
            # Another process stored one of these keys meanwhile. Its commit is visible to a new
            # transaction, which answers that key with what it stored and records the rest.
            with self.engine.begin() as conn:
                return self._record(conn, requests)

    def _record(self, conn: Connection, requests: Sequence[EmitRequest]) -> list[EmitResult]:
        keys = {r.idempotency_key for r in requests if r.idempotency_key is not None}
        seen = self._events_by_keys(conn, keys)
        targets: dict[str, list[int]] = {}
        results: list[EmitResult] = []
        changes = []
        for request in requests:
            key = request.idempotency_key
            if key is not None and key in seen:
                results.append(seen[key])
                continue
            change = situation_change(request.evento, request.body)
            if change is not None:
                changes.append(change)
            if request.evento not in targets:
                targets[request.evento] = list(
                    conn.execute(
                        select(SUBSCRIPTIONS.c.id).where(
                            SUBSCRIPTIONS.c.evento == request.evento,
                            SUBSCRIPTIONS.c.deleted.is_(False),
                        )
                    ).scalars()
                )
            event_id = new_id()
            conn.execute(
                insert(EVENTS),
                {
                    "id": event_id,
                    "evento": request.evento,
                    "emitted_at": request.emitted_at,
                    "body": request.body,
                    "content_type": request.content_type,
                    "idempotency_key": key,
                },
            )
            ids = self._insert_deliveries(
                conn, event_id, targets[request.evento], request.emitted_at
            )
            results.append(EmitResult(event_id, tuple(ids)))
            if key is not None:
                seen[key] = EmitResult(event_id, tuple(ids), duplicate=True)
        if changes:
            # In the same transaction: the consultation never answers ahead of the events.
            record_situations(conn, changes, max(r.emitted_at for r in requests))
        return results

    @staticmethod
    def _events_by_keys(conn: Connection, keys: Collection[str]) -> dict[str, EmitResult]:
        """The stored events with these idempotency keys, as a repeated emit is answered."""
        if not keys:
            return {}
        events: dict[str, str] = {
            key: event_id
            for key, event_id in conn.execute(
                select(EVENTS.c.idempotency_key, EVENTS.c.id).where(
                    EVENTS.c.idempotency_key.in_(list(keys))
                )
            )
        }
        deliveries: dict[str, list[int]] = {event_id: [] for event_id in events.values()}
        if deliveries:
            rows = conn.execute(
                select(DELIVERIES.c.event_id, DELIVERIES.c.id)
                .where(DELIVERIES.c.event_id.in_(list(deliveries)))
                .order_by(DELIVERIES.c.id)
            )
            for event_id, delivery_id in rows:
                deliveries[event_id].append(delivery_id)
        return {
            key: EmitResult(event_id, tuple(deliveries[event_id]), duplicate=True)
            for key, event_id in events.items()
        }

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
