"""The credentials a source is configured with (``sources.<name>.credentials``), and the
``Authorization`` value a sender presents for Basic.

Checking them is ingest's (``receiver.ingest.verifier``), from the plain values read here.
"""

from __future__ import annotations

import base64
import re
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator

from receiver.configfile import Section


class BearerCredential(Section):
    type: Literal["bearer"]
    token: SecretStr = Field(min_length=1)


class BasicCredential(Section):
    type: Literal["basic"]
    username: str = Field(min_length=1)
    password: SecretStr = Field(min_length=1)

    @field_validator("username")
    @classmethod
    def _no_colon(cls, value: str) -> str:
        if ":" in value:
            raise ValueError("a Basic username cannot contain ':'")
        return value


# RFC 9110 token: what a header name may be.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Names that carry something else (framing, routing, the event id, other credentials): a secret
# there would be parsed, logged or rewritten by someone else along the way.
RESERVED_HEADER_NAMES = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "forwarded",
        "x-forwarded-for",
        "event-type",
    }
)


class HeaderCredential(Section):
    """A shared secret in a named request header, compared in constant time: the Portal sends the
    ``chaveSecreta`` given at subscription in a header named ``secret`` (DESIGN.md)."""

    type: Literal["header"]
    name: str = Field(min_length=1, max_length=100)
    value: SecretStr = Field(min_length=1, max_length=4096)

    @field_validator("name")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _HEADER_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not an HTTP header name (letters, digits, '-', ...)")
        name = value.lower()  # header names are case-insensitive; ASGI hands them lowercased
        if name in RESERVED_HEADER_NAMES:
            raise ValueError(f"header {name!r} carries something else; name another one")
        return name

    @field_validator("value")
    @classmethod
    def _header_value(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        # A sender can only put visible ASCII in a header; spaces around it would be stripped.
        if not all(" " <= char <= "~" for char in text) or text != text.strip():
            raise ValueError("a header secret must be visible ASCII without surrounding spaces")
        return value


Credential = Annotated[
    BearerCredential | BasicCredential | HeaderCredential, Field(discriminator="type")
]


class SourceSettings(Section):
    # Any one of them admits the request; an empty list means no credential check.
    credentials: list[Credential] = []


def secret_of(credential: Credential) -> str:
    """The secret part of a credential: the token, the password or the header's value."""
    if isinstance(credential, BearerCredential):
        return credential.token.get_secret_value()
    if isinstance(credential, BasicCredential):
        return credential.password.get_secret_value()
    return credential.value.get_secret_value()


def basic_header(username: str, password: str) -> str:
    """The ``Authorization`` value a sender uses for Basic; public so tests and the dispatcher agree."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"
