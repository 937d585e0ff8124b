"""The Portal's subscription API (seed ``pucomex-push-events-api.txt``), checked before sending.

Field rules from the seed: ``evento`` Text(40) required, ``endpoint`` Text(500) required and a
secure URL (HTTPS), ``id`` Number(10), failure search ``data`` Text(8) as ``ddMMyyyy`` (today when
absent). A request that breaks them raises ``SubscriptionError`` and is never sent.

The seed puts the failure search's ``data`` in a JSON body of a GET; proxies may drop GET bodies,
so it is also sent as the ``data`` query parameter (the simulator reads either).

The Portal's webhook page adds ``chaveSecreta`` to the subscription body (the secret it sends back
in the ``secret`` header of every notification; ``portal.chave_secreta``), and lists the
subscriptions it cancelled (after 30 days of only failed deliveries) with
``GET /portal/api/ext/webhook?exibirInativos=true``. The fields of a cancelled one are not
published; ours are ``ativo`` (false) and ``motivoInativacao`` (the reason), read leniently
(``situacao``/``motivo`` are accepted too), and a subscription without ``ativo`` is active.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Protocol
from urllib.parse import urlsplit

from receiver.config import SubscriptionSpec
from receiver.errors import PortalError, SubscriptionError

WEBHOOK_PATH = "/portal/api/ext/webhook"
FAILURES_PATH = "/portal/api/ext/webhook/falhas"
MAX_EVENTO = 40
MAX_ENDPOINT = 500
MAX_ID = 9_999_999_999  # Number(10)


@dataclass(frozen=True, slots=True)
class Subscription:
    id: int
    evento: str
    endpoint: str
    ativo: bool = True
    motivo_inativacao: str | None = None  # why the Portal cancelled it


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """One failed delivery attempt as the Portal records it."""

    id: int
    data: str
    descricao: str
    evento: str
    conteudo: str


def check_evento(evento: str) -> str:
    if not isinstance(evento, str) or not evento.strip():
        raise SubscriptionError("evento is required (Text(40))", endpoint=WEBHOOK_PATH)
    if len(evento) > MAX_EVENTO:
        raise SubscriptionError(
            f"evento has {len(evento)} characters; the Portal takes at most {MAX_EVENTO}",
            endpoint=WEBHOOK_PATH,
        )
    return evento


def check_endpoint(endpoint: str) -> str:
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise SubscriptionError("endpoint is required (Text(500))", endpoint=WEBHOOK_PATH)
    if len(endpoint) > MAX_ENDPOINT:
        raise SubscriptionError(
            f"endpoint has {len(endpoint)} characters; the Portal takes at most {MAX_ENDPOINT}",
            endpoint=WEBHOOK_PATH,
        )
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname
    except ValueError:
        host, parts = None, None
    if parts is None or parts.scheme.lower() != "https":
        raise SubscriptionError(
            f"endpoint {endpoint!r} must be a secure URL (https://); the Portal notifies HTTPS "
            "endpoints only",
            endpoint=WEBHOOK_PATH,
        )
    if not host:
        raise SubscriptionError(f"endpoint {endpoint!r} has no host", endpoint=WEBHOOK_PATH)
    return endpoint


def check_id(subscription_id: int) -> int:
    if isinstance(subscription_id, bool) or not isinstance(subscription_id, int):
        raise SubscriptionError("id must be a number (Number(10))", endpoint=WEBHOOK_PATH)
    if not 0 < subscription_id <= MAX_ID:
        raise SubscriptionError(
            f"id {subscription_id} is outside Number(10) (1 to {MAX_ID})", endpoint=WEBHOOK_PATH
        )
    return subscription_id


# The Portal dates its records by Brasília's clock (UTC-3, no daylight saving since 2019): at
# 01:00 UTC its "today" is still our yesterday.
PORTAL_TIMEZONE = timezone(timedelta(hours=-3), "BRT")


def portal_today() -> date:
    return datetime.now(PORTAL_TIMEZONE).date()


def format_date(day: date | str | None) -> str:
    """``ddMMyyyy`` for a date, or a string already in that form (checked); the Portal's today
    when None."""
    if day is None:
        day = portal_today()
    if isinstance(day, date):
        return day.strftime("%d%m%Y")
    text = str(day).strip()
    try:
        if len(text) != 8 or not text.isdigit():
            raise ValueError
        datetime.strptime(text, "%d%m%Y")
    except ValueError:
        raise SubscriptionError(
            f"data {day!r} is not a date in ddMMyyyy form (e.g. 17092018)", endpoint=FAILURES_PATH
        ) from None
    return text


def _field(item: Any, name: str, path: str) -> Any:
    if not isinstance(item, dict) or name not in item:
        raise PortalError(f"{path}: answer lacks the field {name!r}", endpoint=path, status=200)
    return item[name]


def _int(item: Any, name: str, path: str) -> int:
    value = _field(item, name, path)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PortalError(
            f"{path}: field {name!r} is not a number: {value!r}", endpoint=path, status=200
        ) from None


def _active(item: dict[str, Any]) -> bool:
    if "ativo" in item:
        value = item["ativo"]
        return value is True or str(value).strip().lower() in ("true", "s", "sim", "1")
    situacao = item.get("situacao")
    return not isinstance(situacao, str) or situacao.strip().upper() in ("", "ATIVA", "ATIVO")


def read_subscription(item: Any, path: str) -> Subscription:
    """One subscription of an answer from ``path``, its fields read leniently (module docstring);
    PortalError when one it needs is missing."""
    active = _active(item) if isinstance(item, dict) else True
    reason = item.get("motivoInativacao", item.get("motivo")) if isinstance(item, dict) else None
    return Subscription(
        id=_int(item, "id", path),
        evento=str(_field(item, "evento", path)),
        endpoint=str(_field(item, "endpoint", path)),
        ativo=active,
        motivo_inativacao=None if active or reason is None else str(reason)[:500],
    )


def _failure(item: Any) -> FailureRecord:
    return FailureRecord(
        id=_int(item, "id", FAILURES_PATH),
        data=str(_field(item, "data", FAILURES_PATH)),
        descricao=str(item.get("descricao") or ""),
        evento=str(item.get("evento") or ""),
        conteudo=str(_field(item, "conteudo", FAILURES_PATH)),
    )


def _array(data: Any, path: str) -> builtins.list[Any]:
    if data is None:
        return []
    if not isinstance(data, builtins.list):
        raise PortalError(f"GET {path}: expected a JSON array", endpoint=path, status=200)
    return data


class PortalCaller(Protocol):
    """The one thing the subscription API needs of a client: call the Portal (authenticated)
    and give its JSON back, as httpx's transports need only ``handle_async_request``.
    ``receiver.portal.client.PortalClient`` is one."""

    async def json(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        error: type[PortalError] = PortalError,
        idempotent: bool | None = None,
    ) -> Any:
        """The 2xx answer's JSON (None for an empty body); anything else raises ``error``."""
        ...


class SubscriptionAPI:
    """Create, list, change and delete subscriptions; search failed deliveries by date.

    ``chave_secreta`` (``portal.chave_secreta``) goes with every creation and update as
    ``chaveSecreta``, when given.
    """

    def __init__(self, caller: PortalCaller, chave_secreta: str | None = None) -> None:
        self._client = caller
        self._chave_secreta = chave_secreta

    def _with_secret(self, body: dict[str, Any]) -> dict[str, Any]:
        """``chaveSecreta`` from ``portal.chave_secreta``, when configured."""
        if self._chave_secreta is not None:
            body["chaveSecreta"] = self._chave_secreta
        return body

    async def create(self, evento: str, endpoint: str) -> Subscription:
        body = {"evento": check_evento(evento), "endpoint": check_endpoint(endpoint)}
        data = await self._client.json(
            "POST",
            WEBHOOK_PATH,
            json=self._with_secret(body),
            error=SubscriptionError,
            idempotent=False,
        )
        return read_subscription(data, WEBHOOK_PATH)

    async def list(self, inactive: bool = False) -> builtins.list[Subscription]:
        """The active subscriptions; with ``inactive``, also those the Portal cancelled."""
        params = {"exibirInativos": "true"} if inactive else None
        data = await self._client.json("GET", WEBHOOK_PATH, params=params, error=SubscriptionError)
        return [read_subscription(item, WEBHOOK_PATH) for item in _array(data, WEBHOOK_PATH)]

    async def update(self, subscription_id: int, evento: str, endpoint: str) -> Subscription:
        sid = check_id(subscription_id)
        body = self._with_secret(
            {"id": sid, "evento": check_evento(evento), "endpoint": check_endpoint(endpoint)}
        )
        path = f"{WEBHOOK_PATH}/{sid}"
        data = await self._client.json("PUT", path, json=body, error=SubscriptionError)
        return (
            read_subscription(data, path)
            if data is not None
            else Subscription(sid, evento, endpoint)
        )

    async def delete(self, subscription_id: int) -> None:
        sid = check_id(subscription_id)
        await self._client.json(
            "DELETE", f"{WEBHOOK_PATH}/{sid}", json={"id": sid}, error=SubscriptionError
        )

    async def failures(self, data: date | str | None = None) -> builtins.list[FailureRecord]:
        """Failure records of ``data``; without it the Portal uses its own today (seed)."""
        if data is None:
            answer = await self._client.json("GET", FAILURES_PATH, error=SubscriptionError)
        else:
            day = format_date(data)
            answer = await self._client.json(
                "GET",
                FAILURES_PATH,
                json={"data": day},
                params={"data": day},
                error=SubscriptionError,
            )
        return [_failure(item) for item in _array(answer, FAILURES_PATH)]


# --- sync: make the Portal's subscriptions match receiver.yaml ----------------------------


@dataclass(frozen=True, slots=True)
class SyncPlan:
    keep: tuple[Subscription, ...]
    create: tuple[SubscriptionSpec, ...]
    update: tuple[tuple[Subscription, SubscriptionSpec], ...]
    delete: tuple[Subscription, ...]
    # Wanted subscriptions the Portal cancelled (only failed deliveries for 30 days): created anew.
    recreate: tuple[Subscription, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.create or self.update or self.delete or self.recreate)

    def lines(self) -> builtins.list[str]:
        shown = [f"  keep    #{s.id} {s.evento} -> {s.endpoint}" for s in self.keep]
        shown += [f"  create  {w.evento} -> {w.endpoint}" for w in self.create]
        shown += [
            f"  create  {s.evento} -> {s.endpoint}  (again: the Portal cancelled #{s.id}: "
            f"{s.motivo_inativacao or 'no reason given'})"
            for s in self.recreate
        ]
        shown += [
            f"  update  #{s.id} {s.evento} -> {s.endpoint}  =>  {w.evento} -> {w.endpoint}"
            if (s.evento, s.endpoint) != (w.evento, w.endpoint)
            else f"  update  #{s.id} {s.evento} -> {s.endpoint}  (chaveSecreta sent again)"
            for s, w in self.update
        ]
        shown += [f"  delete  #{s.id} {s.evento} -> {s.endpoint}" for s in self.delete]
        return shown

    def summary(self) -> str:
        text = f"{len(self.create)} created, {len(self.update)} updated, {len(self.delete)} deleted"
        if self.recreate:
            text += f", {len(self.recreate)} re-created after the Portal cancelled them"
        return text


def plan_sync(
    current: Sequence[Subscription],
    wanted: Sequence[SubscriptionSpec],
    *,
    resend_secret: bool = False,
) -> SyncPlan:
    """Exact matches are kept; a wanted one the Portal cancelled is created again; a wanted event
    whose subscription points elsewhere is updated in place (same id); what is left is created or
    deleted. Wanted repeats count once. ``current`` may hold cancelled subscriptions (``ativo``
    false, from ``list(inactive=True)``): they are never kept, updated or deleted.
    ``resend_secret`` updates the kept ones too, so they carry the current ``chaveSecreta``."""
    for spec in wanted:
        check_evento(spec.evento)
        check_endpoint(spec.endpoint)
    unique = builtins.list(dict.fromkeys((w.evento, w.endpoint) for w in wanted))
    remaining = [s for s in current if s.ativo]
    cancelled = [s for s in current if not s.ativo]
    keep: builtins.list[Subscription] = []
    missing: builtins.list[tuple[str, str]] = []
    recreate: builtins.list[Subscription] = []
    for evento, endpoint in unique:
        match = next((s for s in remaining if (s.evento, s.endpoint) == (evento, endpoint)), None)
        if match is not None:
            keep.append(match)
            remaining.remove(match)
            continue
        lost = next((s for s in cancelled if (s.evento, s.endpoint) == (evento, endpoint)), None)
        if lost is not None:
            recreate.append(lost)
        else:
            missing.append((evento, endpoint))
    update: builtins.list[tuple[Subscription, SubscriptionSpec]] = []
    create: builtins.list[SubscriptionSpec] = []
    for evento, endpoint in missing:
        reuse = next((s for s in remaining if s.evento == evento), None)
        spec = SubscriptionSpec(evento=evento, endpoint=endpoint)
        if reuse is None:
            create.append(spec)
        else:
            update.append((reuse, spec))
            remaining.remove(reuse)
    if resend_secret:
        update = [
            (s, SubscriptionSpec(evento=s.evento, endpoint=s.endpoint)) for s in keep
        ] + update
        keep = []
    return SyncPlan(tuple(keep), tuple(create), tuple(update), tuple(remaining), tuple(recreate))


async def apply_sync(api: SubscriptionAPI, plan: SyncPlan) -> None:
    """Apply a plan: updates first, then creations, then deletions (so an event is never left
    without a subscription half-way)."""
    for old, spec in plan.update:
        await api.update(old.id, spec.evento, spec.endpoint)
    for lost in plan.recreate:
        await api.create(lost.evento, lost.endpoint)
    for spec in plan.create:
        await api.create(spec.evento, spec.endpoint)
    for old in plan.delete:
        await api.delete(old.id)
