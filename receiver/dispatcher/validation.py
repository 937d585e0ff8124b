"""The subscription API's field rules (seed ``pucomex-push-events-api.txt``), without any I/O.

Every refusal is an ``InvalidField`` naming the field, so the API can answer 400/422 with a message
a client can act on. The patterns here are the ones the OpenAPI document publishes, so what the
document allows is exactly what the app accepts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from receiver.credentials import basic_header
from receiver.dispatcher.tables import AuthType
from receiver.errors import ConflictingFields, InvalidField

# Brasília has kept UTC-3 all year since 2019; a fixed offset avoids needing tzdata installed.
BRASILIA = timezone(timedelta(hours=-3), "BRT")

MAX_ID = 9_999_999_999  # Number(10)
EVENTO_MAX = 40  # Text(40)
ENDPOINT_MAX = 500  # Text(500)
EVENTO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
# HTTPS only (seed: "Must be a secure URL"), a host, no credentials in the URL (they would be sent
# and shown back), a path of visible ASCII (percent-encode the rest) without fragment. The port
# alternatives spell 1..65535.
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
ENDPOINT_PATTERN = (
    r"^[Hh][Tt][Tt][Pp][Ss]://([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])"
    rf"(:{_PORT})?(/[!\"$-~]*)?$"
)
# ddMMyyyy, calendar dates only (29/02 in leap years), so the published pattern is the whole rule.
_YEAR = "(?!0000)[0-9]{4}"
_LEAP = "([0-9]{2}(0[48]|[2468][048]|[13579][26])|([02468][048]|[13579][26])00)"
DATA_PATTERN = (
    rf"^((0[1-9]|1[0-9]|2[0-8])(0[1-9]|1[0-2]){_YEAR}|(29|30)(0[13-9]|1[0-2]){_YEAR}"
    rf"|31(0[13578]|1[02]){_YEAR}|2902(?!0000){_LEAP})$"
)
# RFC 6750 token68: it goes into a header verbatim, so nothing else may pass.
TOKEN_PATTERN = r"^[A-Za-z0-9._~+/-]+=*$"  # noqa: S105 (a pattern, not a secret)
# Basic credentials travel base64-encoded, so any character will do but ':' in the user name.
USERNAME_PATTERN = "^[^:]+$"
# ``autenticacao.tipo``: InvoiCy's ways. The Portal's ``secret`` header comes from chaveSecreta.
AUTH_TYPES = tuple(kind.value for kind in AuthType if kind is not AuthType.SECRET)
CHAVE_MAX = 500
# Goes into a header verbatim: visible ASCII, no space at either end.
CHAVE_PATTERN = r"^[!-~]([ -~]*[!-~])?$"

_evento = re.compile(EVENTO_PATTERN)
_endpoint = re.compile(ENDPOINT_PATTERN)
_data = re.compile(DATA_PATTERN)
_token = re.compile(TOKEN_PATTERN)
_username = re.compile(USERNAME_PATTERN)
_chave = re.compile(CHAVE_PATTERN)


@dataclass(frozen=True, slots=True)
class OutboundAuth:
    """The credentials the sender presents to one endpoint."""

    type: AuthType = AuthType.NONE
    username: str | None = None
    secret: str | None = None

    def header(self) -> str | None:
        """The ``Authorization`` value, or None (the Portal's way sends none)."""
        if self.type is AuthType.BASIC:
            return basic_header(self.username or "", self.secret or "")
        if self.type is AuthType.BEARER:
            return f"Bearer {self.secret}"
        return None

    def headers(self) -> dict[str, str]:
        """The request headers that carry these credentials."""
        if self.type is AuthType.SECRET:
            return {"secret": self.secret or ""}
        authorization = self.header()
        return {} if authorization is None else {"Authorization": authorization}


@dataclass(frozen=True, slots=True)
class SubscriptionInput:
    evento: str
    endpoint: str
    auth: OutboundAuth | None  # None: not given (an update keeps the current credentials)


def parse_json_object(body: bytes, *, optional: bool = False) -> dict[str, Any]:
    if optional and not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidField("body", "not valid JSON", 400) from None
    if not isinstance(value, dict):
        raise InvalidField("body", "expected a JSON object", 400)
    return value


def parse_id(raw: Any, field: str = "id") -> int:
    """Number(10): a positive integer of at most 10 digits, as a JSON number or a path segment."""
    if isinstance(raw, str) and re.fullmatch(r"[0-9]{1,10}", raw):
        raw = int(raw)
    elif isinstance(raw, float) and raw.is_integer():
        raw = int(raw)  # JSON Schema counts 8.0 as an integer, and so do we
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_ID:
        raise InvalidField(field, f"must be a whole number from 1 to {MAX_ID}")
    return raw


def parse_evento(raw: Any) -> str:
    if raw is None:
        raise InvalidField("evento", "is required")
    if not isinstance(raw, str):
        raise InvalidField("evento", "must be text")
    if not 1 <= len(raw) <= EVENTO_MAX:
        raise InvalidField("evento", f"must be 1 to {EVENTO_MAX} characters long")
    if not _evento.fullmatch(raw):
        raise InvalidField("evento", "must be an event identifier such as 'duimp.registro'")
    return raw


def parse_endpoint(raw: Any) -> str:
    if raw is None:
        raise InvalidField("endpoint", "is required")
    if not isinstance(raw, str):
        raise InvalidField("endpoint", "must be text")
    if not 1 <= len(raw) <= ENDPOINT_MAX:
        raise InvalidField("endpoint", f"must be 1 to {ENDPOINT_MAX} characters long")
    if not raw.lower().startswith("https://"):
        raise InvalidField("endpoint", "must be a secure URL (https://...)")
    if not _endpoint.fullmatch(raw):
        raise InvalidField(
            "endpoint", "must be https://host[:port][/path] without credentials or fragment"
        )
    return raw


def parse_auth(raw: Any) -> OutboundAuth:
    if not isinstance(raw, dict):
        raise InvalidField("autenticacao", "must be an object with 'tipo'")
    kind = raw.get("tipo")
    if kind not in AUTH_TYPES:
        raise InvalidField("autenticacao.tipo", f"must be one of {', '.join(AUTH_TYPES)}")
    allowed = {"none": {"tipo"}, "basic": {"tipo", "usuario", "senha"}, "bearer": {"tipo", "token"}}
    for key in raw:
        if key not in allowed[kind]:
            raise InvalidField(f"autenticacao.{key}", f"is not used with tipo '{kind}'")
    if kind == "basic":
        user, password = raw.get("usuario"), raw.get("senha")
        if not isinstance(user, str) or not 1 <= len(user) <= 200:
            raise InvalidField("autenticacao.usuario", "required: 1 to 200 characters")
        if not _username.fullmatch(user):
            raise InvalidField("autenticacao.usuario", "cannot contain ':' (Basic credentials)")
        if not isinstance(password, str) or not 1 <= len(password) <= 500:
            raise InvalidField("autenticacao.senha", "required: 1 to 500 characters")
        for field, value in (("usuario", user), ("senha", password)):
            if not _encodable(value):
                raise InvalidField(f"autenticacao.{field}", "has characters UTF-8 cannot carry")
        return OutboundAuth(AuthType.BASIC, user, password)
    if kind == "bearer":
        token = raw.get("token")
        if not isinstance(token, str) or not 1 <= len(token) <= 2000 or not _token.fullmatch(token):
            raise InvalidField(
                "autenticacao.token", "required: 1 to 2000 characters of A-Z a-z 0-9 - . _ ~ + /"
            )
        return OutboundAuth(AuthType.BEARER, None, token)
    return OutboundAuth()


def _encodable(text: str) -> bool:
    # A lone surrogate (valid in JSON's \\u escapes) has no UTF-8 form.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_chave(raw: Any) -> OutboundAuth:
    """``chaveSecreta``: the secret the Portal sends back in the ``secret`` header."""
    if not isinstance(raw, str) or not 1 <= len(raw) <= CHAVE_MAX:
        raise InvalidField("chaveSecreta", f"must be text of 1 to {CHAVE_MAX} characters")
    if not _chave.fullmatch(raw):
        raise InvalidField(
            "chaveSecreta", "must be visible ASCII without spaces at either end (a header value)"
        )
    return OutboundAuth(AuthType.SECRET, None, raw)


def parse_subscription(body: dict[str, Any], *, path_id: int | None = None) -> SubscriptionInput:
    """A create (``path_id`` None) or change request; a change must repeat its id in the body."""
    allowed = {"evento", "endpoint", "autenticacao", "chaveSecreta"}
    allowed |= {"id"} if path_id is not None else set()
    for key in body:
        if key not in allowed:
            raise InvalidField(str(key), "is not a field of this request")
    if path_id is not None:
        if "id" not in body:
            raise InvalidField("id", "is required")
        if parse_id(body["id"]) != path_id:
            raise ConflictingFields("id", "the id in the body differs from the id in the path")
    evento = parse_evento(body.get("evento"))
    endpoint = parse_endpoint(body.get("endpoint"))
    auth = parse_auth(body["autenticacao"]) if "autenticacao" in body else None
    if "chaveSecreta" in body:
        if auth is not None:
            raise InvalidField(
                "chaveSecreta",
                "cannot be combined with autenticacao: the Portal sends the secret header and no "
                "Authorization",
            )
        auth = parse_chave(body["chaveSecreta"])
    return SubscriptionInput(evento, endpoint, auth)


def parse_data(raw: Any) -> str:
    """The failure search's ``data``: ddMMyyyy, as text or (like the seed's example) a number."""
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 99_999_999:
        # A JSON number loses the leading zero of days 1 to 9: 1092018 means 01092018.
        raw = f"{raw:08d}"
    if not isinstance(raw, str) or not re.fullmatch("[0-9]{8}", raw):
        raise InvalidField("data", "must be a date in ddMMyyyy format, e.g. 17092018")
    if not _data.fullmatch(raw):
        raise InvalidField("data", f"{raw} is not a calendar date (ddMMyyyy)")
    return raw


def brasilia_date(moment: datetime) -> str:
    """The ddMMyyyy date of ``moment`` in Brasília, the Portal's calendar."""
    return moment.astimezone(BRASILIA).strftime("%d%m%Y")
