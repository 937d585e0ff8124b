"""What handler authors use: ``Router``, ``Notification`` and ``Context``; and the routing table.

Handler modules build their own ``Router``; ``receiver.yaml`` names them (``module`` exposing
``router``, or ``module:attr``) and ``load_routers`` imports them. No global registry.
``Context`` is typed by protocols, so a handler's calls are checked without this module knowing
the implementations: ``PortalAPI`` (``ctx.portal``, the Portal client of ``receiver.portal``) and
``ResultStore`` (``ctx.save``/``load``, ``receiver.worker.results`` or its in-memory twin).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from receiver.catalog import family_known, is_known_event
from receiver.config import DownloadSettings
from receiver.errors import GiveUp, HandlerError
from receiver.payloads import PayloadModel

if TYPE_CHECKING:  # annotations only: importing the handler API must not load httpx
    import httpx

log = logging.getLogger("receiver.routing")

ModelT = TypeVar("ModelT", bound=PayloadModel)


@dataclass(frozen=True, slots=True)
class Notification:
    """One stored notification, as a handler sees it."""

    id: str
    source: str
    event: str | None
    received_at: datetime
    payload: Any
    body: bytes
    headers: Mapping[str, str]
    # Stable across retries, replays and recovery: derived from the content, not the row.
    idempotency_key: str
    recovered: bool = False
    # The payload as its event's model (``receiver.payloads``), validated when the notification
    # was routed: a body that does not fit is quarantined and never reaches a handler. None for a
    # source without models.
    parsed: PayloadModel | None = None

    def parsed_as(self, model: type[ModelT]) -> ModelT:
        """``parsed``, typed as the handler expects: ``note.parsed_as(DuimpEvent)``. A
        notification built by hand without ``parsed`` is validated here; a payload of another
        model raises ``GiveUp`` (the handler is registered on an event it cannot read)."""
        if isinstance(self.parsed, model):
            return self.parsed
        if self.parsed is not None:
            raise GiveUp(
                f"notification {self.id} ({self.source} {self.event}) is a "
                f"{type(self.parsed).__name__}, not a {model.__name__}"
            )
        return model.model_validate(self.payload)


class ResultStore(Protocol):
    """Where ``ctx.save`` keeps results (``receiver.worker.results.StoreResults``)."""

    async def save(self, kind: str, key: str, value: Any) -> None: ...

    async def load(self, kind: str, key: str) -> Any | None: ...


class PortalAPI(Protocol):
    """What handlers call on ``ctx.portal``: the Portal API client (``receiver.portal``'s
    ``PortalClient``, mutual TLS and the token flow done for them), typed here so that a
    handler's calls are checked. Errors are ``PortalError`` (``receiver.errors``)."""

    async def duimp(self, numero: str, versao: str | int | None = None) -> dict[str, Any]:
        """The Duimp consultation: every field of the Portal's answer. Without ``versao``, the
        Duimp's versions are asked first and the latest is fetched."""
        ...

    async def duimp_versions(self, numero: str) -> str:
        """The latest version of Duimp ``numero``."""
        ...

    async def json(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Any other call of the Portal API, authenticated: its 2xx answer as JSON (None for an
        empty body); anything else raises ``PortalError`` naming the endpoint and status."""
        ...


@dataclass(slots=True)
class Context:
    """What the framework gives a handler for one attempt."""

    handler: str
    attempt: int
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
    results: ResultStore
    portal_client: PortalAPI | None = None
    data_dir: Any | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    # What the handler modules' lifespans opened (``Router(lifespan=...)``, ``on_startup``), once
    # per worker process: ``ctx.resources["db"]``.
    resources: Mapping[str, Any] = field(default_factory=dict)
    # The worker's guarded client (receiver.outbound.guarded_client, from ``outbound:``).
    http_client: httpx.AsyncClient | None = None
    downloads: DownloadSettings = field(default_factory=DownloadSettings)

    @property
    def portal(self) -> PortalAPI:
        """The Portal API client; a clear error when ``portal:`` is not configured."""
        if self.portal_client is None:
            raise HandlerError(
                f"{self.handler} needs the Portal API client, but receiver.yaml has no "
                "'portal:' section (base_url, certificate, role_type)"
            )
        return self.portal_client

    @property
    def http(self) -> httpx.AsyncClient:
        """The HTTP client for URLs that senders choose: it connects only to public addresses
        (and ``outbound.allowed_networks``), over https unless ``outbound.allow_http``, checks
        every redirect hop the same way and ignores proxy variables. A refused URL raises
        ``AddressRefused`` (a ``GiveUp``: the job is dead-lettered with the reason)."""
        if self.http_client is None:
            raise HandlerError(
                f"{self.handler} needs an HTTP client, but none was given to this context "
                "(the worker gives one; in a test, pass http_client=guarded_client(...))"
            )
        return self.http_client

    async def save(self, kind: str, key: str, value: Any) -> None:
        """Keep a result; saving again under the same key replaces it, so replays stay idempotent."""
        await self.results.save(kind, key, value)

    async def load(self, kind: str, key: str) -> Any | None:
        return await self.results.load(kind, key)


Handler = Callable[[Notification, Context], Awaitable[None]]
ErrorHook = Callable[[Notification, Context, BaseException], Awaitable[None]]
# A handler module's resources, as Starlette's lifespan: an async context manager yielding what
# handlers get as ``ctx.resources`` (a mapping, or None), entered once per worker process.
Lifespan = Callable[[], contextlib.AbstractAsyncContextManager[Mapping[str, Any] | None]]
# ``@router.on_startup`` / ``@router.on_shutdown``: called with the resources, once per worker
# process; a start-up hook adds to them (``resources["db"] = ...``).
ResourceHook = Callable[[dict[str, Any]], Awaitable[None]]


# What a handler may declare it needs (``Router.on(..., needs=("portal",))``): checked at start-up,
# so a missing section is one configuration error, not a failure of every notification later.
NEEDS = frozenset({"portal"})


def _needs(needs: Iterable[str], source: str | None) -> frozenset[str]:
    wanted = frozenset(needs)
    unknown = sorted(wanted - NEEDS)
    if unknown or isinstance(needs, str):
        raise HandlerError(
            f"Router.on({source!r}, needs=...): {unknown or needs!r} is not something a handler "
            f"can need (one of: {', '.join(sorted(NEEDS))}), given as a tuple such as ('portal',)"
        )
    return wanted


@dataclass(frozen=True, slots=True)
class Route:
    source: str | None  # None: every source (catch-all)
    patterns: tuple[str, ...]  # empty: every event of the source
    handler: Handler
    name: str
    timeout: float | None = None
    # What the handler declared it needs: "portal" (ctx.portal, the portal: section).
    needs: frozenset[str] = frozenset()

    def matches(self, source: str, event: str | None) -> bool:
        if self.source is not None and self.source != source:
            return False
        if not self.patterns:
            return True
        return event is not None and any(_match(pattern, event) for pattern in self.patterns)


def _match(pattern: str, event: str) -> bool:
    if pattern.endswith(".*"):
        return event.startswith(pattern[:-1])
    return pattern == event


def _name_of(handler: Handler) -> str:
    module = getattr(handler, "__module__", "?")
    qualname = getattr(handler, "__qualname__", repr(handler))
    return f"{module}.{qualname}"


class Router:
    """Collects handlers: ``@router.on("pucomex", "duimp.registro")``, ``on_any``, ``on_error``."""

    def __init__(self, lifespan: Lifespan | None = None) -> None:
        """``lifespan``: opens what the handlers share (a connection pool, a client) once per
        worker process, and closes it when the worker stops, SIGTERM included::

            @contextlib.asynccontextmanager
            async def lifespan() -> AsyncIterator[dict[str, Any]]:
                async with open_pool() as pool:
                    yield {"db": pool}          # ctx.resources["db"]

            router = Router(lifespan=lifespan)
        """
        self.routes: list[Route] = []
        self.error_hooks: list[ErrorHook] = []
        self.lifespans: list[Lifespan] = [lifespan] if lifespan is not None else []
        self.startup_hooks: list[ResourceHook] = []
        self.shutdown_hooks: list[ResourceHook] = []

    def on_startup(self, hook: ResourceHook) -> ResourceHook:
        """Called once per worker process before any handler runs, with ``ctx.resources`` to
        fill (``resources["db"] = await connect()``). If it raises, the worker does not start."""
        self.startup_hooks.append(hook)
        return hook

    def on_shutdown(self, hook: ResourceHook) -> ResourceHook:
        """Called once when the worker stops (SIGTERM too), after the last handler, with the
        resources, to close what ``on_startup`` opened."""
        self.shutdown_hooks.append(hook)
        return hook

    def on(
        self,
        source: str,
        *events: str,
        timeout: float | None = None,
        needs: Iterable[str] = (),
    ) -> Callable[[Handler], Handler]:
        """Run the handler for these event ids of ``source`` (``lpco.*`` matches a family).

        ``needs=("portal",)``: the handler calls ``ctx.portal``, so ``serve`` and ``worker``
        refuse to start without a ``portal:`` section (instead of every attempt failing)."""
        if not events:
            raise HandlerError(f"Router.on({source!r}): name at least one event, or use on_any")
        wanted = _needs(needs, source)

        def register(handler: Handler) -> Handler:
            self.routes.append(
                Route(source, tuple(events), handler, _name_of(handler), timeout, wanted)
            )
            return handler

        return register

    def on_any(
        self,
        source: str | None = None,
        *,
        timeout: float | None = None,
        needs: Iterable[str] = (),
    ) -> Callable[[Handler], Handler]:
        """Run the handler for every event of ``source`` (every source when None)."""
        wanted = _needs(needs, source)

        def register(handler: Handler) -> Handler:
            self.routes.append(Route(source, (), handler, _name_of(handler), timeout, wanted))
            return handler

        return register

    def on_error(self, hook: ErrorHook) -> ErrorHook:
        """Called after a handler attempt fails, with the exception (for alerts, not recovery)."""
        self.error_hooks.append(hook)
        return hook

    def include(self, other: Router) -> None:
        self.routes.extend(other.routes)
        self.error_hooks.extend(other.error_hooks)
        self.lifespans.extend(other.lifespans)
        self.startup_hooks.extend(other.startup_hooks)
        self.shutdown_hooks.extend(other.shutdown_hooks)


class Routing:
    """The table built from every configured router, checked once at start-up.

    ``aliases`` (``events.aliases`` of ``receiver.yaml``): per source, an id a sender uses -> the
    catalog id it is routed on. ``canonical`` applies them; the planner stores the canonical id
    as the notification's event, while the sender's own word stays in its stored headers.
    """

    def __init__(
        self,
        routers: Sequence[Router],
        sources: Iterable[str],
        strict: bool = False,
        aliases: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        known = set(sources)
        self.aliases: dict[str, dict[str, str]] = {
            source: dict(mapping) for source, mapping in (aliases or {}).items() if mapping
        }
        self._check_aliases(known, strict)
        self.routes: list[Route] = []
        self.error_hooks: list[ErrorHook] = []
        self.routers = list(routers)
        seen: dict[str, Route] = {}
        for router in routers:
            for route in router.routes:
                if route.source is not None and route.source not in known:
                    raise HandlerError(
                        f"handler {route.name} is registered for source {route.source!r}, which "
                        f"receiver.yaml does not configure (sources: {', '.join(sorted(known))})"
                    )
                if route.name in seen:
                    raise HandlerError(f"handler {route.name} is registered twice")
                seen[route.name] = route
                self._check_events(route, strict)
                self.routes.append(route)
            self.error_hooks.extend(router.error_hooks)
        self._by_name = seen

    def _check_aliases(self, sources: set[str], strict: bool) -> None:
        for source, mapping in self.aliases.items():
            if source not in sources:
                raise HandlerError(
                    f"events.aliases names source {source!r}, which receiver.yaml does not "
                    f"configure (sources: {', '.join(sorted(sources))})"
                )
            for alias, target in mapping.items():
                if is_known_event(source, target) is False:
                    message = (
                        f"events.aliases.{source}: {alias!r} maps to {target!r}, which is not in "
                        f"the {source} catalog (see `receiver events`)"
                    )
                    if strict:
                        raise HandlerError(message)
                    log.warning("%s", message)

    def canonical(self, source: str, event: str) -> str:
        """The id ``event`` is routed on: its alias target, or itself."""
        mapping = self.aliases.get(source)
        if mapping is None:
            return event
        return mapping.get(event, event)

    def _check_events(self, route: Route, strict: bool) -> None:
        if route.source is None:
            return
        for pattern in route.patterns:
            target = self.aliases.get(route.source, {}).get(pattern)
            if target is not None:
                # It would never run: notifications under the alias are routed as the target.
                raise HandlerError(
                    f"handler {route.name}: event {pattern!r} is an alias of {target!r} in "
                    f"events.aliases.{route.source}; register the handler on {target!r}"
                )
            if pattern.endswith(".*"):
                known = family_known(route.source, pattern)
            else:
                known = is_known_event(route.source, pattern) is not False
            if not known:
                message = (
                    f"handler {route.name}: event {pattern!r} is not in the {route.source} "
                    "catalog (see `receiver events`)"
                )
                if strict:
                    raise HandlerError(message)
                log.warning("%s; it will run only if a sender uses that id", message)

    def handlers_for(self, source: str, event: str | None) -> list[Route]:
        return [route for route in self.routes if route.matches(source, event)]

    def route(self, name: str) -> Route | None:
        return self._by_name.get(name)

    def needing(self, need: str) -> list[str]:
        """The names of the handlers that declared ``need``."""
        return [route.name for route in self.routes if need in route.needs]


def load_routers(specs: Sequence[str]) -> list[Router]:
    """Import each ``module`` (its ``router``) or ``module:attr``; a clear error when one fails."""
    routers: list[Router] = []
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        attr = attr or "router"
        try:
            module = importlib.import_module(module_name)
        except Exception as error:
            raise HandlerError(
                f"handlers: {spec!r}: cannot import {module_name}: {type(error).__name__}: {error}"
            ) from error
        router = getattr(module, attr, None)
        if not isinstance(router, Router):
            raise HandlerError(
                f"handlers: {spec!r}: {module_name}.{attr} is not a receiver.Router "
                f"(got {type(router).__name__})"
            )
        routers.append(router)
    return routers
