"""The sender: the Portal's delivery rule, run from the durable outbox.

``Dispatcher.emit`` stores the event and one delivery per matching subscription, then wakes the
loop; nothing is sent before that commit. The loop takes due deliveries from the store and sends
each one in its own task, at most ``per_endpoint_concurrency`` at a time per endpoint origin. An
attempt succeeds only on HTTP 200 (the Portal's receipt); anything else, a timeout or a connection
error is a failed attempt, recorded with the content; after ``attempts`` failures the delivery is
failed for good, as the Portal does. A restarted dispatcher resumes whatever is still due.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from receiver import storable
from receiver.dispatcher.attempt import USER_AGENT, attempt_delivery, origin_of, where
from receiver.dispatcher.config import DispatcherSettings, load_dispatcher_settings
from receiver.dispatcher.lifecycle import cancel_failing
from receiver.dispatcher.outbox import AttemptRecord, OutboxWrite
from receiver.dispatcher.portal_events import pucomex_body
from receiver.dispatcher.records import (
    AttemptOutcome,
    DeliveryState,
    DueDelivery,
    EmitRequest,
    EmitResult,
)
from receiver.dispatcher.store import DispatchStore
from receiver.dispatcher.tables import EVENTS, FINAL_STATUSES, DeliveryStatus
from receiver.dispatcher.validation import BRASILIA, parse_evento
from receiver.outbound import (
    AddressPolicy,
    GuardedTransport,
    Resolver,
    outbound_ssl_context,
    system_resolver,
)
from receiver.store.faults import store_down
from receiver.store.grouped import GroupedWrites
from receiver.store.tables import utcnow

WAIT_FOR_COALESCE_SECONDS = 0.02
REFILL_PAUSE_SECONDS = 0.005
# How often the loop looks for subscriptions to cancel (only failures for cancel_after_days).
CANCEL_CHECK_SECONDS = 60.0

log = logging.getLogger("receiver.dispatcher")

CONTENT_TYPE_CHARS: int = EVENTS.c.content_type.type.length
IDEMPOTENCY_KEY_CHARS: int = EVENTS.c.idempotency_key.type.length


class Dispatcher:
    """Emits events into the outbox and delivers them; use ``async with`` or ``start``/``close``."""

    def __init__(
        self,
        settings: DispatcherSettings,
        store: DispatchStore | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool | None = None,
        resolver: Resolver = system_resolver,
        clock: Callable[[], datetime] = utcnow,
        lease: timedelta | None = None,
    ) -> None:
        self.settings = settings
        # What automatic cancellation judges by; tests move it forward instead of waiting 30 days.
        self.clock = clock
        self._cancel_checked = -CANCEL_CHECK_SECONDS
        self.store = store if store is not None else DispatchStore(settings.database_url)
        self._owns_store = store is None
        self._interval = timedelta(seconds=settings.interval_seconds)
        # Long enough for one bounded attempt and its commit; a lease outliving us means we died
        # (or were too slow: the next claim is then the next attempt, counted like this one).
        self._lease = lease or timedelta(seconds=settings.attempt_timeout_seconds + 5)
        # One client per endpoint origin, made on its first delivery, its pool as large as the
        # origin's concurrency, so its connections stay open and are reused: a pool shared by
        # every origin kept a quarter of its size alive, and httpcore's pool looks at each of
        # its connections (twice, and quadratically for idle ones) on every request.
        self._shared_transport = transport
        if transport is None and verify is None:
            extra = settings.outbound_ca_file
            verify = outbound_ssl_context(extra_ca_file=str(extra) if extra else None)
        self._verify: ssl.SSLContext | bool = True if verify is None else verify
        self._policy = AddressPolicy(settings.allowed_networks)
        self._resolver = resolver
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._refill_room = max(1, settings.max_in_flight // 4)
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._attempts: dict[int, asyncio.Task[AttemptOutcome]] = {}
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()  # set whenever a delivery reaches a new state
        # Emits made together (a burst) are stored together: one transaction for all that
        # queued while the previous one was written.
        self._emits = GroupedWrites[EmitRequest, EmitResult](self.store.record_events, "emits")
        # Likewise the claims and the records of attempts, together: one transaction (one fsync)
        # for all that queued meanwhile, and no wait for SQLite's write lock between them. Apart,
        # they made two commits of 2-3 items each per 5 deliveries (2,000 deliveries, 16 at once).
        self._writes = GroupedWrites[OutboxWrite, int | DeliveryStatus | None](
            functools.partial(
                self.store.outbox.write_many,
                lease=self._lease,
                max_attempts=settings.attempts,
                interval=self._interval,
            ),
            "outbox-writes",
        )
        self._loop_task: asyncio.Task[None] | None = None
        self._closed = False
        self._schema_ready = False

    @classmethod
    def from_config(cls, path: str | Path | None = None) -> Dispatcher:
        """A dispatcher for the ``dispatcher:`` section of ``path``, else ``$RECEIVER_CONFIG``."""
        return cls(load_dispatcher_settings(path))

    # --- life cycle -------------------------------------------------------------------------

    async def start(self, *, deliver: bool = True) -> None:
        """Upgrade the tables if needed and start delivering whatever is due (idempotent).

        ``deliver=False`` only opens the outbox: emits are stored, and another process sends them.
        """
        if not self._schema_ready:
            # Embedded in a program (a handler, a test, the demo), the dispatcher keeps its own
            # tables current, as create_all did; its commands check instead (simulator.cli).
            await asyncio.to_thread(self.store.upgrade_schema)
            self._schema_ready = True
        if deliver and self._loop_task is None:
            self._loop_task = asyncio.create_task(self._run(), name="dispatcher-loop")

    async def close(self) -> None:
        """Stop sending; attempts cut short are given back, so a restart resends them at once.

        Only the HTTP part of an attempt is cancelled: a store call is always waited for, so no
        thread is left writing to a store that is being closed.
        """
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        for attempt in list(self._attempts.values()):
            attempt.cancel()
        await asyncio.gather(*self._in_flight.values(), return_exceptions=True)
        for writes in (self._emits, self._writes):
            await writes.flush()
        for client in self._clients.values():
            await client.aclose()
        if self._owns_store:
            await asyncio.to_thread(self.store.close)

    async def __aenter__(self) -> Dispatcher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def kick(self) -> None:
        """Look at the outbox now instead of at the next poll."""
        self._wake.set()

    # --- emitting and operator actions -----------------------------------------------------

    async def emit(
        self,
        evento: str,
        dados: Mapping[str, Any],
        *,
        data_hora: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> EmitResult:
        """Emit a PUCOMEX-style event ``{"evento", "dataHora", "dados"}`` to its subscribers."""
        # The Portal's clock is Brasília's: "2026-11-22T10:00:00-03:00", as in DESIGN.md.
        moment = data_hora or utcnow().astimezone(BRASILIA)
        return await self.emit_body(
            evento, pucomex_body(evento, dados, moment), idempotency_key=idempotency_key
        )

    async def emit_body(
        self,
        evento: str,
        body: bytes,
        *,
        content_type: str = "application/json",
        idempotency_key: str | None = None,
    ) -> EmitResult:
        """Emit ``body`` as is (a forwarded notification keeps the sender's bytes).

        A content type or idempotency key the outbox cannot hold is a ValueError here, in the
        caller's own call, not a failure of the emits stored with it."""
        parse_evento(evento)
        storable.require(content_type, CONTENT_TYPE_CHARS, "content type")
        if idempotency_key is not None:
            storable.require(idempotency_key, IDEMPOTENCY_KEY_CHARS, "idempotency key")
        request = EmitRequest(evento, body, content_type, utcnow(), idempotency_key)
        result = await self._emits.submit(request)
        self.kick()
        return result

    async def resend_pending(self, subscription_id: int, owner: str | None = None) -> list[int]:
        ids = await asyncio.to_thread(self.store.resend_pending, subscription_id, owner, utcnow())
        self.kick()
        return ids

    async def send_latest(self, subscription_id: int, owner: str | None = None) -> list[int]:
        ids = await asyncio.to_thread(self.store.send_latest, subscription_id, owner, utcnow())
        self.kick()
        return ids

    async def wait_for(
        self, delivery_ids: Collection[int], within: float | None = None
    ) -> list[DeliveryState]:
        """Wait until every one of these deliveries is delivered, failed or cancelled.

        Their states in the order of ``delivery_ids``; ids the store does not know are left out.
        """
        order = list(dict.fromkeys(delivery_ids))
        settled: dict[int, DeliveryState] = {}
        pending = set(order)
        async with asyncio.timeout(within):
            while True:
                self._settled.clear()
                # Only the ones still open are read again: in a burst, deliveries settle every
                # millisecond, and re-reading all of them on each wake-up was quadratic.
                began = time.monotonic()
                states = await asyncio.to_thread(self.store.deliveries, ids=pending)
                reading = time.monotonic() - began
                pending = set()
                for state in states:
                    if state.status in FINAL_STATUSES:
                        settled[state.id] = state
                    else:
                        pending.add(state.id)
                if not pending:
                    return [settled[i] for i in order if i in settled]
                # Another process may be the one sending: look again now and then regardless.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.poll_seconds):
                        await self._settled.wait()
                # Many settle at once: one read for all of them, not one per wake-up, and reading
                # (longer while thousands are open) takes at most a tenth of the time.
                await asyncio.sleep(max(WAIT_FOR_COALESCE_SECONDS, 9 * reading))

    # --- the loop ---------------------------------------------------------------------------

    async def cancel_failing(self) -> list[int]:
        """Cancel the subscriptions whose deliveries only failed for ``cancel_after_days``, as the
        Portal does; their ids."""
        period = timedelta(days=self.settings.cancel_after_days)
        cancelled = await asyncio.to_thread(cancel_failing, self.store.engine, self.clock(), period)
        for subscription_id in cancelled:
            log.warning(
                "subscription %s cancelled: only failed deliveries for %g days",
                subscription_id,
                self.settings.cancel_after_days,
            )
        return cancelled

    async def _run(self) -> None:
        while not self._closed:
            try:
                if time.monotonic() - self._cancel_checked >= CANCEL_CHECK_SECONDS:
                    self._cancel_checked = time.monotonic()
                    await self.cancel_failing()
                busy = await self._dispatch_due()
                # Full: the next delivery to finish wakes us, no need to ask when one falls due.
                delay = self.settings.poll_seconds if busy else await self._delay()
            except Exception:
                log.exception("dispatcher loop: store error; trying again shortly")
                delay = self.settings.poll_seconds
            # Cleared before the check, so a close() between them still wakes the wait below.
            self._wake.clear()
            if self._closed:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
                # Deliveries finish one by one, a few hundred microseconds apart in a burst: a
                # short pause makes one look at the outbox fill the room of all that finished
                # meanwhile (2,000 deliveries took 4,422 looks, each two or three queries).
                await asyncio.sleep(REFILL_PAUSE_SECONDS)

    async def _dispatch_due(self) -> bool:
        """Start what is due, as far as there is room; True when there is no room left."""
        room = self.settings.max_in_flight - len(self._in_flight)
        if room <= 0:
            return True
        due = await asyncio.to_thread(self.store.outbox.due, utcnow(), room, set(self._in_flight))
        if self._closed:
            return True
        for delivery in due:
            task = asyncio.create_task(self._deliver(delivery), name=f"delivery-{delivery.id}")
            self._in_flight[delivery.id] = task
            origin = origin_of(delivery.endpoint)
            task.add_done_callback(functools.partial(self._done, delivery.id, origin))
        return len(due) >= room

    def _done(self, delivery_id: int, origin: str, _task: asyncio.Task[None]) -> None:
        self._in_flight.pop(delivery_id, None)
        self._settled.set()
        # Look for more when a quarter of the room is free (one look for many deliveries, not
        # one per delivery), or when this origin has nothing left waiting (it would sit idle).
        room = self.settings.max_in_flight - len(self._in_flight)
        semaphore = self._semaphores.get(origin)
        if room >= self._refill_room or semaphore is None or not semaphore.locked():
            self.kick()

    async def _delay(self) -> float:
        poll = self.settings.poll_seconds
        next_due = await asyncio.to_thread(self.store.outbox.next_due_at)
        if next_due is None:
            return poll
        return min(poll, max(0.0, (next_due - utcnow()).total_seconds()))

    async def _deliver(self, delivery: DueDelivery) -> None:
        try:
            await self._deliver_once(delivery)
        except Exception:
            # Its lease runs out and the delivery is taken again; nothing is lost.
            log.exception("delivery %s: could not record the attempt", delivery.id)

    async def _deliver_once(self, delivery: DueDelivery) -> None:
        origin = origin_of(delivery.endpoint)
        semaphore = self._semaphores.setdefault(
            origin, asyncio.Semaphore(self.settings.per_endpoint_concurrency)
        )
        async with semaphore:
            if self._closed:
                return
            number = await self._writes.submit(delivery.id)
            if not isinstance(number, int):
                return
            client = self._client_for(origin)
            attempt = asyncio.create_task(attempt_delivery(client, delivery, self.settings))
            self._attempts[delivery.id] = attempt
            if self._closed:
                attempt.cancel()
            try:
                outcome = await attempt
            except asyncio.CancelledError:
                # Cut short by close() (or the loop going away): not an attempt of the rule.
                await asyncio.to_thread(self.store.outbox.release, delivery.id, number, utcnow())
                if self._closed:
                    return
                raise
            finally:
                self._attempts.pop(delivery.id, None)
            status = await self._record(AttemptRecord(delivery, number, outcome))
            log.info(
                "delivery %s (%s) to %s: %s -> %s",
                delivery.id,
                delivery.evento,
                where(delivery.endpoint),
                outcome.description,
                status.value,
            )

    def _client_for(self, origin: str) -> httpx.AsyncClient:
        if self._shared_transport is not None:
            origin = ""  # the transport given (tests) serves every origin, with one client
        client = self._clients.get(origin)
        if client is None:
            size = self.settings.per_endpoint_concurrency
            # Every connection still goes through the guard: resolved, checked, then connected.
            transport = self._shared_transport or GuardedTransport(
                self._policy,
                verify=self._verify,
                resolver=self._resolver,
                max_connections=size,
                max_keepalive_connections=size,
            )
            client = self._clients[origin] = httpx.AsyncClient(
                transport=transport,
                follow_redirects=False,
                trust_env=False,
                timeout=httpx.Timeout(self.settings.attempt_timeout_seconds),
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            )
        return client

    async def _record(self, record: AttemptRecord) -> DeliveryStatus:
        """Count the attempt. Its values are made safe for the store (Outbox); if the store still
        refuses its record (not being down), the attempt is counted with a placeholder instead:
        left uncounted, it would be sent again at every lease expiry, for ever."""
        try:
            return await self._record_once(record)
        except Exception as error:
            if store_down(error):
                raise
            log.error(
                "delivery %s: the store refused the record of its attempt (%s); counted with a "
                "placeholder",
                record.delivery.id,
                storable.safe(f"{type(error).__name__}: {error}", 300),
            )
            placeholder = replace(
                record.outcome,
                description=f"the outcome of this attempt could not be stored "
                f"({type(error).__name__})",
                response_excerpt=None,
            )
            return await self._record_once(replace(record, outcome=placeholder))

    async def _record_once(self, record: AttemptRecord) -> DeliveryStatus:
        status = await self._writes.submit(record)
        assert isinstance(status, DeliveryStatus)
        return status
