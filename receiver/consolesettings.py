"""``console:`` of ``receiver.yaml``: who may open the operator console (``receiver.console``) and
how they prove it.

Accounts are listed with an argon2 hash made by ``receiver console hash-password`` (the password
itself is never in the file), or an authenticating proxy in front names the user in a header,
honoured only when the request comes straight from one of ``trusted_header_proxies``. Two roles:
``viewer`` reads, ``operator`` also replays.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from receiver.configfile import Section, check_networks

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")

_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")


class ConsoleUser(Section):
    name: str
    # What `receiver console hash-password` prints: argon2id, salted, in PHC string format.
    password_hash: SecretStr
    role: Role = "viewer"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _USER_NAME.fullmatch(value):
            raise ValueError(
                f"user name {value!r} must be 1-64 letters, digits, '.', '_', '@', '-'"
            )
        return value

    @field_validator("password_hash")
    @classmethod
    def _argon2(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith("$argon2"):
            raise ValueError(
                "password_hash is not an argon2 hash: make one with `receiver console hash-password`"
            )
        return value


class ConsoleSettings(Section):
    users: list[ConsoleUser] = []
    # The header an authenticating proxy sets to the user's name (such as X-Forwarded-User),
    # believed only from these proxies' addresses; their users get the role listed for the same
    # name in `users`, else trusted_header_role.
    trusted_header: str | None = None
    trusted_header_proxies: list[str] = []
    trusted_header_role: Role = "viewer"
    # Signs the session cookie; without it each process makes one at start (sessions end with
    # the process). At least 32 characters; write it as env:NAME or file:PATH.
    session_secret: SecretStr | None = Field(default=None, min_length=32)
    session_hours: float = Field(default=8.0, gt=0, le=24 * 30)
    # `receiver console`'s own listener (checked by receiver.config); under `serve`, the console
    # is on admin_listen.
    listen: str = "127.0.0.1:9470"
    # Failed logins allowed per client address (and per user name) in login_window_seconds.
    login_attempts: int = Field(default=5, ge=1, le=1000)
    login_window_seconds: float = Field(default=900.0, gt=0)

    @field_validator("trusted_header")
    @classmethod
    def _header(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a header name")
        return value.lower() if value is not None else None

    @field_validator("trusted_header_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        if any(entry.strip() in {"*", "0.0.0.0/0", "::/0"} for entry in value):
            raise ValueError("trusting every address lets anyone name themselves; list CIDRs")
        return check_networks(value)

    @model_validator(mode="after")
    def _someone_can_log_in(self) -> ConsoleSettings:
        names = [user.name for user in self.users]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"user {twice[0]!r} is listed twice")
        if self.trusted_header is not None and not self.trusted_header_proxies:
            raise ValueError(
                "trusted_header needs trusted_header_proxies (the proxies that set it)"
            )
        if not self.users and self.trusted_header is None:
            raise ValueError("list users (receiver console hash-password) or a trusted_header")
        return self

    def user(self, name: str) -> ConsoleUser | None:
        return next((user for user in self.users if user.name == name), None)
