"""The handler modules' resources: each router's lifespan and ``on_startup`` hooks, opened once
per worker process before any handler runs, closed when it stops (``on_shutdown``, then the
lifespans in reverse), SIGTERM included. What they give is ``ctx.resources``.

A lifespan or hook that fails at start-up is a ``StartupError`` naming it and the cause: the
worker does not start (``receiver worker`` and ``receiver serve`` say it in one line and exit
non-zero). A failure while closing is logged and the others are still closed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from receiver.errors import StartupError
from receiver.worker.routing import Router

log = logging.getLogger("receiver.resources")


def _name(thing: object) -> str:
    module = getattr(thing, "__module__", "?")
    return f"{module}.{getattr(thing, '__qualname__', repr(thing))}"


@contextlib.asynccontextmanager
async def open_resources(routers: Sequence[Router]) -> AsyncIterator[Mapping[str, Any]]:
    """Enter every router's lifespan and run its start-up hooks, in order; yield the resources
    they gave (one mapping: a name given twice is a ``StartupError``)."""
    resources: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        for router in routers:
            for lifespan in router.lifespans:
                try:
                    given = await stack.enter_async_context(lifespan())
                except Exception as error:
                    raise StartupError(
                        f"handler lifespan {_name(lifespan)} failed at start-up: "
                        f"{type(error).__name__}: {error}"
                    ) from error
                for key, value in (given or {}).items():
                    if key in resources:
                        raise StartupError(
                            f"handler lifespan {_name(lifespan)} gives resource {key!r}, which "
                            "another handler module gave already: name it differently"
                        )
                    resources[key] = value
            for hook in router.startup_hooks:
                try:
                    await hook(resources)
                except Exception as error:
                    raise StartupError(
                        f"on_startup hook {_name(hook)} failed: {type(error).__name__}: {error}"
                    ) from error
            for hook in router.shutdown_hooks:
                stack.push_async_callback(_shut_down, hook, resources)
        yield resources


async def _shut_down(hook: Any, resources: dict[str, Any]) -> None:
    try:
        await hook(resources)
    except Exception:
        log.exception("on_shutdown hook %s failed", _name(hook))
