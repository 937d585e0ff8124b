"""The OpenAPI document of the dispatcher's routes, written by hand from the same rules the app runs.

Lengths and patterns come from ``validation``, so the document cannot drift from what is enforced;
``tests/integration/dispatcher/test_api.py`` checks that every route is documented and vice
versa.
"""

from __future__ import annotations

from typing import Any

from receiver.dispatcher.api import WEBHOOK_PATH
from receiver.dispatcher.validation import (
    CHAVE_MAX,
    CHAVE_PATTERN,
    DATA_PATTERN,
    ENDPOINT_MAX,
    ENDPOINT_PATTERN,
    EVENTO_MAX,
    EVENTO_PATTERN,
    MAX_ID,
    TOKEN_PATTERN,
    USERNAME_PATTERN,
)

OPENAPI_PATH = "/portal/api/ext/openapi.json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    texts = {
        400: "The body is not a JSON object.",
        401: "Unknown client: no verified certificate, Portal session or configured token.",
        404: "No subscription with this id belongs to the client.",
        413: "The body is larger than 64 KiB.",
        409: "The id (or date) in the body differs from the one in the path (or query).",
        422: "A field breaks a rule; `field` names it.",
    }
    return {str(code): _json(_ref("Error"), texts[code]) for code in codes}


_ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID, "description": "Number(10)"}
_EVENTO = {"type": "string", "minLength": 1, "maxLength": EVENTO_MAX, "pattern": EVENTO_PATTERN}
_ENDPOINT = {
    "type": "string",
    "minLength": 1,
    "maxLength": ENDPOINT_MAX,
    "pattern": ENDPOINT_PATTERN,
    "description": "Must be a secure URL (HTTPS).",
}
_PATH_ID = {"name": "id", "in": "path", "required": True, "schema": _ID}
_CHAVE = {
    "type": "string",
    "minLength": 1,
    "maxLength": CHAVE_MAX,
    "pattern": CHAVE_PATTERN,
    "description": "Sent back in the `secret` header of every delivery (never answered back). "
    "Cannot be combined with autenticacao.",
}

SCHEMAS: dict[str, Any] = {
    "Autenticacao": {
        "description": "How the dispatcher authenticates to the endpoint (never answered back).",
        "oneOf": [
            {
                "type": "object",
                "properties": {"tipo": {"const": "none"}},
                "required": ["tipo"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {
                    "tipo": {"const": "basic"},
                    "usuario": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 200,
                        "pattern": USERNAME_PATTERN,
                    },
                    "senha": {"type": "string", "minLength": 1, "maxLength": 500},
                },
                "required": ["tipo", "usuario", "senha"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {
                    "tipo": {"const": "bearer"},
                    "token": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 2000,
                        "pattern": TOKEN_PATTERN,
                    },
                },
                "required": ["tipo", "token"],
                "additionalProperties": False,
            },
        ],
    },
    "NovaAssinatura": {
        "type": "object",
        "properties": {
            "evento": _EVENTO,
            "endpoint": _ENDPOINT,
            "chaveSecreta": _CHAVE,
            "autenticacao": _ref("Autenticacao"),
        },
        "required": ["evento", "endpoint"],
        "not": {"required": ["chaveSecreta", "autenticacao"]},
        "additionalProperties": False,
    },
    "AlteracaoAssinatura": {
        "type": "object",
        "properties": {
            "id": _ID,
            "evento": _EVENTO,
            "endpoint": _ENDPOINT,
            "chaveSecreta": _CHAVE,
            "autenticacao": _ref("Autenticacao"),
        },
        "required": ["id", "evento", "endpoint"],
        "not": {"required": ["chaveSecreta", "autenticacao"]},
        "additionalProperties": False,
    },
    "ExclusaoAssinatura": {
        "type": "object",
        "properties": {"id": _ID},
        "additionalProperties": False,
    },
    "Assinatura": {
        "type": "object",
        "properties": {"id": _ID, "evento": _EVENTO, "endpoint": _ENDPOINT},
        "required": ["id", "evento", "endpoint"],
        "additionalProperties": False,
    },
    "AssinaturaListada": {
        "type": "object",
        "description": "A subscription as listed; with exibirInativos=true, ativo says whether "
        "the Portal cancelled it (only failed deliveries for 30 days) and why (our field names: "
        "the Portal's are not published).",
        "properties": {
            "id": _ID,
            "evento": _EVENTO,
            "endpoint": _ENDPOINT,
            "ativo": {"type": "boolean"},
            "motivoInativacao": {"type": "string"},
            "dataInativacao": {"type": "string", "format": "date-time"},
        },
        "required": ["id", "evento", "endpoint"],
        "additionalProperties": False,
    },
    "ConsultaFalhas": {
        "type": "object",
        "properties": {
            "data": {
                "type": "string",
                "pattern": DATA_PATTERN,
                "description": "Record date, ddMMyyyy (Text(8)). The seed's example writes it as a "
                "JSON number, which is accepted too (1092018 means 01092018).",
            }
        },
        "additionalProperties": False,
    },
    "Falha": {
        "type": "object",
        "properties": {
            "id": _ID,
            "data": {"type": "string", "pattern": DATA_PATTERN},
            "descricao": {"type": "string"},
            "evento": {"type": "string", "maxLength": EVENTO_MAX},
            "conteudo": {"type": "string"},
        },
        "required": ["id", "data", "descricao", "evento", "conteudo"],
    },
    "Evento": {
        "type": "object",
        "properties": {
            "evento": _EVENTO,
            "dados": {"type": "object"},
            "dataHora": {"type": "string", "format": "date-time"},
        },
        "required": ["evento"],
        "additionalProperties": False,
    },
    "EventoEmitido": {
        "type": "object",
        "properties": {
            "evento": {"type": "string"},
            "event": {"type": "string"},
            "deliveries": {"type": "array", "items": {"type": "integer"}},
        },
        "required": ["evento", "event", "deliveries"],
    },
    "Entregas": {
        "type": "object",
        "properties": {"deliveries": {"type": "array", "items": {"type": "integer"}}},
        "required": ["deliveries"],
    },
    "Entrega": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "subscription": {"type": "integer"},
            "event": {"type": "string"},
            "evento": {"type": "string"},
            "status": {"enum": ["pending", "sending", "delivered", "failed", "cancelled"]},
            "attempts": {"type": "integer", "minimum": 0},
            "next_attempt_at": {"type": "string", "format": "date-time"},
            "delivered_at": {"type": ["string", "null"], "format": "date-time"},
        },
        "required": ["id", "subscription", "event", "evento", "status", "attempts"],
    },
    "Error": {
        "type": "object",
        "properties": {"message": {"type": "string"}, "field": {"type": ["string", "null"]}},
        "required": ["message"],
    },
}


def _body(name: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(name)}}}


def _sim_action(summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": [_PATH_ID],
            "responses": {
                "200": _json(_ref("Entregas"), "The deliveries queued."),
                **_errors(401, 404, 422),
            },
        }
    }


def openapi_document() -> dict[str, Any]:
    subscriptions = {"type": "array", "items": _ref("AssinaturaListada")}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Portal Único push events (dispatcher simulator)",
            "version": "1",
            "description": "Subscription API of seed pucomex-push-events-api.txt, plus simulator "
            "controls under /sim. Deliveries: 3 attempts, 5 minutes apart; HTTP 200 is the receipt.",
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "certificado": {"type": "mutualTLS"},
                "token": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"certificado": []}, {"token": []}],
        "paths": {
            WEBHOOK_PATH: {
                "post": {
                    "summary": "Subscribe event",
                    "requestBody": _body("NovaAssinatura"),
                    "responses": {
                        "200": _json(_ref("Assinatura"), "The subscription."),
                        **_errors(400, 401, 413, 422),
                    },
                },
                "get": {
                    "summary": "List subscriptions",
                    "parameters": [
                        {
                            "name": "exibirInativos",
                            "in": "query",
                            "required": False,
                            "description": "true: also the subscriptions the Portal cancelled.",
                            "schema": {"enum": ["true", "false"]},
                        }
                    ],
                    "responses": {
                        "200": _json(subscriptions, "The client's subscriptions."),
                        **_errors(401, 422),
                    },
                },
            },
            WEBHOOK_PATH + "/{id}": {
                "put": {
                    "summary": "Change subscription",
                    "parameters": [_PATH_ID],
                    "requestBody": _body("AlteracaoAssinatura"),
                    "responses": {
                        "200": _json(_ref("Assinatura"), "The changed subscription."),
                        **_errors(400, 401, 404, 409, 413, 422),
                    },
                },
                "delete": {
                    "summary": "Delete subscription",
                    "parameters": [_PATH_ID],
                    "requestBody": _body("ExclusaoAssinatura", required=False),
                    "responses": {
                        "204": {"description": "Deleted; no response parameters."},
                        **_errors(400, 401, 404, 409, 413, 422),
                    },
                },
            },
            WEBHOOK_PATH + "/falhas": {
                "get": {
                    "summary": "Search failures",
                    "parameters": [
                        {
                            "name": "data",
                            "in": "query",
                            "required": False,
                            "description": "Record date, ddMMyyyy; today (Brasília) when absent.",
                            "schema": {"type": "string", "pattern": DATA_PATTERN},
                        }
                    ],
                    "requestBody": _body("ConsultaFalhas", required=False),
                    "responses": {
                        "200": _json({"type": "array", "items": _ref("Falha")}, "Failures."),
                        **_errors(400, 401, 409, 413, 422),
                    },
                }
            },
            "/sim/events": {
                "post": {
                    "summary": "Emit an event to every matching subscription",
                    "requestBody": _body("Evento"),
                    "responses": {
                        "200": _json(_ref("EventoEmitido"), "Stored in the outbox."),
                        **_errors(400, 401, 413, 422),
                    },
                }
            },
            "/sim/subscriptions/{id}/resend-pending": _sim_action(
                "Resend what is pending or failed (SINtegre's Reenviar Pendentes)"
            ),
            "/sim/subscriptions/{id}/send-latest": _sim_action(
                "Send the latest notification of the event again (SINtegre's Enviar Tudo)"
            ),
            "/sim/subscriptions/{id}/deliveries": {
                "get": {
                    "summary": "Deliveries of a subscription and their state",
                    "parameters": [_PATH_ID],
                    "responses": {
                        "200": _json({"type": "array", "items": _ref("Entrega")}, "Deliveries."),
                        **_errors(401, 404, 422),
                    },
                }
            },
        },
    }
