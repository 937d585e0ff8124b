"""HTTP routes: the Portal's subscription API (seed ``pucomex-push-events-api.txt``) and ``/sim``.

Subscription API, answers as the seed lists them:

    POST   /portal/api/ext/webhook          {evento, endpoint[, autenticacao]} -> 200 {id, evento, endpoint}
    GET    /portal/api/ext/webhook          -> 200 [{id, evento, endpoint}]
           ?exibirInativos=true             -> also the ones cancelled for only failing 30 days:
                                               [{id, evento, endpoint, ativo, motivoInativacao,
                                                 dataInativacao}] (our names; unpublished)
    PUT    /portal/api/ext/webhook/{id}     {id, evento, endpoint[, autenticacao]} -> 200 {id, evento, endpoint}
    DELETE /portal/api/ext/webhook/{id}     -> 204
    GET    /portal/api/ext/webhook/falhas   data=ddMMyyyy (query or JSON body; today when absent)
                                            -> 200 [{id, data, descricao, evento, conteudo}]

``chaveSecreta`` (the Portal's webhook page) is sent back in a ``secret`` header on every
delivery. ``autenticacao`` is our addition, InvoiCy's outbound credentials: ``{"tipo": "none"}``,
``{"tipo": "basic", "usuario", "senha"}`` or ``{"tipo": "bearer", "token"}``; the two cannot be
combined (the Portal sends no Authorization). Neither is ever answered back. Simulator controls (the Portal's side, and SINtegre's operator buttons):

    POST /sim/events                               {evento, dados[, dataHora]} -> 200
    POST /sim/subscriptions/{id}/resend-pending    -> 200 {"deliveries": [...]}
    POST /sim/subscriptions/{id}/send-latest       -> 200 {"deliveries": [...]}
    GET  /sim/subscriptions/{id}/deliveries        -> 200 [{id, status, attempts, ...}]

Errors are JSON ``{"message", "field"}``: 400 unreadable body, 401 unknown client, 404 unknown id
(or someone else's), 409 the body's id or date differs from the path's or query's, 413 body too
large, 422 a field breaks a rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.dispatcher.identity import ClientIdentifier
from receiver.dispatcher.lifecycle import cancelled_subscriptions
from receiver.dispatcher.sender import Dispatcher
from receiver.dispatcher.validation import (
    brasilia_date,
    parse_data,
    parse_evento,
    parse_id,
    parse_json_object,
    parse_subscription,
)
from receiver.errors import ConflictingFields, InvalidField, UnknownSubscription
from receiver.store.tables import utcnow

WEBHOOK_PATH = "/portal/api/ext/webhook"
MAX_REQUEST_BYTES = 64 * 1024

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, str], Awaitable[Response]]


class _SubscriptionIdConvertor(Convertor[str]):
    """Any path segment but ``falhas``, so ``PUT .../webhook/falhas`` is a 405, not a bad id."""

    regex = "(?!falhas$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("subscription_id", _SubscriptionIdConvertor())


class _TooLarge(Exception):
    pass


def _error(status: int, message: str, field: str | None = None, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"message": message, "field": field}, status_code=status, headers=headers or None
    )


async def _body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class SubscriptionAPI:
    def __init__(self, dispatcher: Dispatcher, identifier: ClientIdentifier) -> None:
        self.dispatcher = dispatcher
        self.store = dispatcher.store
        self.identifier = identifier

    def _guarded(self, **by_method: Handler) -> Endpoint:
        """Identify the client, run the method's handler, turn refusals into their answers.

        One route per path with every method it has, so a 405 names them all in ``Allow``.
        """

        async def endpoint(request: Request) -> Response:
            owner = self.identifier.identify(request)
            if owner is None:
                return _error(
                    401,
                    "unknown client: present a client certificate, a Portal session "
                    "or a configured bearer token",
                    None,
                    **{"WWW-Authenticate": 'Bearer realm="dispatcher"'},
                )
            method = "GET" if request.method == "HEAD" else request.method
            try:
                return await by_method[method](request, owner)
            except _TooLarge:
                return _error(413, f"body larger than {MAX_REQUEST_BYTES} bytes", "body")
            except ConflictingFields as error:
                return _error(409, str(error), error.field)
            except InvalidField as error:
                return _error(error.status, str(error), error.field)
            except UnknownSubscription as error:
                return _error(404, str(error), "id")

        return endpoint

    # --- the seed's API ---------------------------------------------------------------------

    async def create(self, request: Request, owner: str) -> Response:
        data = parse_subscription(parse_json_object(await _body(request)))
        created = await asyncio.to_thread(self.store.add_subscription, owner, data, utcnow())
        return JSONResponse(created.public())

    async def listing(self, request: Request, owner: str) -> Response:
        raw = request.query_params.get("exibirInativos", "false").strip().lower()
        if raw not in ("true", "false"):
            raise InvalidField("exibirInativos", "must be true or false")
        await self.dispatcher.cancel_failing()
        found = await asyncio.to_thread(self.store.subscriptions, owner)
        if raw == "false":
            return JSONResponse([subscription.public() for subscription in found])
        cancelled = await asyncio.to_thread(cancelled_subscriptions, self.store.engine, owner)
        return JSONResponse(
            [{**subscription.public(), "ativo": True} for subscription in found]
            + [entry.public() for entry in cancelled]
        )

    async def change(self, request: Request, owner: str) -> Response:
        subscription_id = parse_id(request.path_params["id"])
        body = parse_json_object(await _body(request))
        data = parse_subscription(body, path_id=subscription_id)
        changed = await asyncio.to_thread(
            self.store.update_subscription, subscription_id, owner, data, utcnow()
        )
        return JSONResponse(changed.public())

    async def delete(self, request: Request, owner: str) -> Response:
        subscription_id = parse_id(request.path_params["id"])
        body = parse_json_object(await _body(request), optional=True)
        for key in body:
            if key != "id":
                raise InvalidField(str(key), "is not a field of this request")
        if "id" in body and parse_id(body["id"]) != subscription_id:
            raise ConflictingFields("id", "the id in the body differs from the id in the path")
        await asyncio.to_thread(self.store.delete_subscription, subscription_id, owner, utcnow())
        return Response(status_code=204)

    async def failures(self, request: Request, owner: str) -> Response:
        # The seed shows ``data`` as a JSON field of a GET; a query parameter is accepted too.
        body = parse_json_object(await _body(request), optional=True)
        for key in body:
            if key != "data":
                raise InvalidField(str(key), "is not a field of this request")
        raw_query = request.query_params.get("data")
        data = parse_data(raw_query) if raw_query is not None else None
        if "data" in body:
            from_body = parse_data(body["data"])
            if data is not None and data != from_body:
                raise ConflictingFields("data", "the query and the body name different dates")
            data = from_body
        found = await asyncio.to_thread(self.store.failures, owner, data or brasilia_date(utcnow()))
        return JSONResponse(found)

    # --- simulator controls -----------------------------------------------------------------

    async def emit(self, request: Request, owner: str) -> Response:
        body = parse_json_object(await _body(request))
        for key in body:
            if key not in ("evento", "dados", "dataHora"):
                raise InvalidField(str(key), "is not a field of this request")
        evento = parse_evento(body.get("evento"))
        dados = body.get("dados", {})
        if not isinstance(dados, dict):
            raise InvalidField("dados", "must be a JSON object")
        moment = _parse_moment(body["dataHora"]) if "dataHora" in body else None
        result = await self.dispatcher.emit(evento, dados, data_hora=moment)
        return JSONResponse(
            {"evento": evento, "event": result.event_id, "deliveries": list(result.delivery_ids)}
        )

    async def resend_pending(self, request: Request, owner: str) -> Response:
        subscription_id = parse_id(request.path_params["id"])
        ids = await self.dispatcher.resend_pending(subscription_id, owner)
        return JSONResponse({"deliveries": ids})

    async def send_latest(self, request: Request, owner: str) -> Response:
        subscription_id = parse_id(request.path_params["id"])
        ids = await self.dispatcher.send_latest(subscription_id, owner)
        return JSONResponse({"deliveries": ids})

    async def deliveries(self, request: Request, owner: str) -> Response:
        subscription_id = parse_id(request.path_params["id"])
        states = await asyncio.to_thread(
            lambda: self.store.deliveries(subscription_id=subscription_id, owner=owner)
        )
        return JSONResponse([state.public() for state in states])

    def routes(self) -> list[Route]:
        guarded = self._guarded
        sim = "/sim/subscriptions/{id}"
        return [
            Route(
                WEBHOOK_PATH, guarded(POST=self.create, GET=self.listing), methods=["GET", "POST"]
            ),
            Route(WEBHOOK_PATH + "/falhas", guarded(GET=self.failures), methods=["GET"]),
            Route(
                WEBHOOK_PATH + "/{id:subscription_id}",
                guarded(PUT=self.change, DELETE=self.delete),
                methods=["PUT", "DELETE"],
            ),
            Route("/sim/events", guarded(POST=self.emit), methods=["POST"]),
            Route(sim + "/resend-pending", guarded(POST=self.resend_pending), methods=["POST"]),
            Route(sim + "/send-latest", guarded(POST=self.send_latest), methods=["POST"]),
            Route(sim + "/deliveries", guarded(GET=self.deliveries), methods=["GET"]),
        ]


def _parse_moment(raw: Any) -> datetime:
    if isinstance(raw, str):
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment
    raise InvalidField("dataHora", "must be an ISO-8601 date and time with its UTC offset")
