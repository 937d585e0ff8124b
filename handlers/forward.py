"""Reference handler: forward every received notification to internal endpoints, as is.

Internal systems subscribe to event ids in the dispatcher (``POST /portal/api/ext/webhook`` on
``receiver dispatcher``, the same subscription API as the Portal's); each received notification is
emitted under its event id with the sender's bytes unchanged, and the dispatcher delivers it with
the Portal's rule: 3 attempts, HTTP 200 as the receipt, failures searchable.

The dispatcher comes from ``ctx.extras["dispatcher"]`` when the worker provides one, otherwise from
the ``dispatcher:`` section of ``$RECEIVER_CONFIG``, started once in the worker's event loop. Its
outbox is durable: what it has not sent when the worker stops is sent by the next dispatcher (this
worker again, or a running ``receiver dispatcher``) on the same store.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

from receiver import Context, Notification, Router
from receiver.dispatcher import Dispatcher

DispatcherSource = Callable[[Context], Awaitable[Dispatcher]]
# Subscription event ids are Text(40); a longer id can have no subscriber.
_SUBSCRIBABLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,39}")


def forwarding_router(source: DispatcherSource) -> Router:
    """A router whose one handler forwards every notification through ``source(ctx)``."""
    router = Router()

    @router.on_any()
    async def forward_to_subscribers(note: Notification, ctx: Context) -> None:
        if note.event is None or not _SUBSCRIBABLE.fullmatch(note.event):
            ctx.logger.info("not forwarded: event %r cannot be subscribed to", note.event)
            return
        dispatcher = await source(ctx)
        content_type = next(
            (value for key, value in note.headers.items() if key.lower() == "content-type"),
            "application/json",
        )
        if len(content_type) > 100 or not content_type.isprintable():
            # The outbox holds 100 printable characters; the bytes are forwarded all the same.
            ctx.logger.warning("content type not kept (over 100 characters or unprintable)")
            content_type = "application/octet-stream"
        # Keyed by the notification's content: a handler run again stores nothing new.
        result = await dispatcher.emit_body(
            note.event,
            note.body,
            content_type=content_type,
            idempotency_key=f"forward:{note.idempotency_key}",
        )
        ctx.logger.info(
            "forwarded %s as event %s to %d subscription(s)%s",
            note.event,
            result.event_id,
            len(result.delivery_ids),
            " (already forwarded)" if result.duplicate else "",
        )

    return router


class ConfiguredDispatcher:
    """One dispatcher per process, built from the configuration on first use."""

    def __init__(self) -> None:
        self._dispatcher: Dispatcher | None = None
        self._lock = asyncio.Lock()

    async def __call__(self, ctx: Context) -> Dispatcher:
        given = ctx.extras.get("dispatcher")
        if isinstance(given, Dispatcher):
            return given
        async with self._lock:
            if self._dispatcher is None:
                dispatcher = Dispatcher.from_config()
                await dispatcher.start()
                self._dispatcher = dispatcher
            return self._dispatcher

    async def aclose(self) -> None:
        """Stop the dispatcher made here, if any (a worker shutting down, a test)."""
        if self._dispatcher is not None:
            await self._dispatcher.close()
            self._dispatcher = None


configured_dispatcher = ConfiguredDispatcher()
router = forwarding_router(configured_dispatcher)
