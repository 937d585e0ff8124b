"""What each sender looks like: how a stored body gives its event id, and the event catalogs.

Nothing here runs before the acknowledgement except ``dedup_key``: parsing happens after the
body is safely stored, and a body that cannot be parsed is quarantined, never refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from receiver.catalog import (
    CATALOGS,
    INVOICY_CATALOG,
    INVOICY_MODULES,
    INVOICY_NOTIFICATION_TYPES,
    PUCOMEX_CATALOG,
    SINTEGRE_CATALOG,
    is_known_event,
)
from receiver.errors import ParseError

__all__ = [
    "CATALOGS",
    "INVOICY_EVENTS",
    "PUCOMEX_EVENTS",
    "SINTEGRE_EVENTS",
    "Parsed",
    "dedup_key",
    "is_known_event",
    "parse",
    "parse_json",
]

# The catalogs live in receiver.catalog; these names stay for existing imports.
PUCOMEX_EVENTS: Mapping[str, str] = {i: e.description for i, e in PUCOMEX_CATALOG.items()}
SINTEGRE_EVENTS: Mapping[str, str] = {i: e.description for i, e in SINTEGRE_CATALOG.items()}
INVOICY_EVENTS: Mapping[str, str] = {i: e.description for i, e in INVOICY_CATALOG.items()}
SINTEGRE_FIELDS = (
    "Nome",
    "Processo",
    "MacroProcesso",
    "DataProduto",
    "Periodicidade",
    "PeriodicidadeFinal",
    "Uri",  # the seed's name; ONS's own example receivers read "Url": both are accepted
)

MAX_JSON_DEPTH = 64


@dataclass(frozen=True, slots=True)
class Parsed:
    payload: Any
    event: str


def dedup_key(source: str, body: bytes) -> str:
    """The same notification sent again gives the same key: sha256 of source and body.

    The path's event is left out on purpose: the Portal's failure records (``conteudo``) give the
    body only, and recovery must find what ingest stored under the same key.
    """
    digest = hashlib.sha256()
    digest.update(source.encode())
    digest.update(b"\x00")
    digest.update(body)
    return digest.hexdigest()


def _reject_constant(name: str) -> float:
    raise ParseError(f"JSON constant {name} is not allowed")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ParseError(f"JSON object repeats the key {key!r}")
        result[key] = value
    return result


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            break
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
    return depth


def parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN, no repeated keys, bounded nesting; every failure is a ParseError."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ParseError(f"body is not UTF-8 ({error.reason} at byte {error.start})") from None
    try:
        value = json.loads(
            text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys
        )
    except RecursionError:
        raise ParseError("JSON nested too deeply") from None
    except json.JSONDecodeError as error:
        raise ParseError(f"body is not JSON: {error.msg} at line {error.lineno}") from None
    except ValueError as error:  # e.g. integers longer than the interpreter allows
        raise ParseError(f"body is not acceptable JSON: {error}") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ParseError("JSON number out of range")
    return value


def _field(payload: Mapping[str, Any], *names: str) -> Any:
    lowered = {key.lower(): value for key, value in payload.items()}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def _object(body: bytes) -> dict[str, Any]:
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise ParseError(f"expected a JSON object, got {type(payload).__name__}")
    return payload


def parse_pucomex(body: bytes, event: str | None) -> Parsed:
    """``event`` is what ingest stored: the ``event-type`` header's id, else the path's. Without
    either, the older body shape's ``evento`` names it. The body may be the production Duimp shape
    (``identificacao``, ``situacaoDuimp``, ``canal``, ``dataEvento``, ``message``) or the older
    ``{evento, dataHora, dados}``: both are kept whole as the payload."""
    payload = _object(body)
    event = event or _field(payload, "evento")
    if not isinstance(event, str) or not event:
        raise ParseError(
            "no event: no event-type header with an event id, no event in the path, and no body "
            "field 'evento' (an event-type that is not an id is kept in the stored headers)"
        )
    return Parsed(payload, event)


def parse_sintegre(body: bytes, path_event: str | None) -> Parsed:
    payload = _object(body)
    missing = [name for name in ("Nome",) if _field(payload, name) is None]
    if _field(payload, "Uri", "Url") is None:
        missing.append("Uri (or Url)")
    if missing:
        raise ParseError(f"SINtegre notification without {', '.join(missing)}")
    return Parsed(payload, path_event or "produto.publicado")


# A code written as text is 1 to 9 ASCII digits. ``str.isdigit`` is also true for "²" and other
# Unicode digits, which ``int`` refuses, and ``int`` refuses more than 4,300 digits: both raised
# ValueError in the planner instead of quarantining the notification.
_CODE = re.compile(r"[0-9]{1,9}")


def _code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _CODE.fullmatch(stripped := value.strip()):
        return int(stripped)
    return None


def parse_invoicy(body: bytes, path_event: str | None) -> Parsed:
    payload = _object(body)
    if path_event:
        return Parsed(payload, path_event)
    module = _code(_field(payload, "Modulo", "Módulo", "CodigoModulo"))
    kind = _code(_field(payload, "TipoNotificacao", "TipoNotificação", "Tipo"))
    if (
        module is None
        or kind is None
        or module not in INVOICY_MODULES
        or kind not in INVOICY_NOTIFICATION_TYPES
    ):
        raise ParseError(f"unknown InvoiCy module {module!r} or notification type {kind!r}")
    return Parsed(payload, f"{INVOICY_MODULES[module]}.{INVOICY_NOTIFICATION_TYPES[kind]}")


def parse_generic(body: bytes, path_event: str | None) -> Parsed:
    payload = parse_json(body)
    event = path_event or None
    if event is None and isinstance(payload, dict):
        found = _field(payload, "evento", "event", "type")
        event = found if isinstance(found, str) and found else None
    if event is None:
        raise ParseError("no event: neither the path nor a body field 'evento'/'event'/'type'")
    return Parsed(payload, event)


Parser = Callable[[bytes, str | None], Parsed]

PARSERS: Mapping[str, Parser] = {
    "pucomex": parse_pucomex,
    "sintegre": parse_sintegre,
    "invoicy": parse_invoicy,
}


def parse(source: str, body: bytes, path_event: str | None) -> Parsed:
    """The stored notification's payload and event id; every failure is a ParseError.

    A parser that raises anything else has met a body nobody foresaw: that is still the body's
    problem, reported with the exception's type and message, and the note is quarantined.
    """
    try:
        return PARSERS.get(source, parse_generic)(body, path_event)
    except ParseError:
        raise
    except Exception as error:
        raise ParseError(f"{type(error).__name__}: {error}") from error
