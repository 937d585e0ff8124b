"""The ``alerts:`` section of ``receiver.yaml``: which rules run, how often, and where alerts go.

Every rule is on by default with a threshold that a Sefaz operations team can keep (each key's
comment says why); a threshold set to null turns its rule off. The log sink is always on; the
webhook and e-mail sinks are on when their section is given. ``receiver.alerts`` evaluates the
rules; this module only validates the settings (a kernel module: it imports nothing of ours but
the config helpers).
"""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator

from receiver.configfile import Section, check_networks

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# One address, the part of an e-mail address a server checks; anything else is the server's call.
_ADDRESS = re.compile(r"[^@\s<>]+@[^@\s<>]+")


class SilenceSettings(Section):
    """``alerts.silence``: no notification received for ``minutes`` within the business hours
    (``weekdays``, ``start`` to ``end`` in ``timezone``). The Portal pushes Duimp events all
    through the working day; an hour without any then means a subscription, the network or the
    certificate stopped them, and each hour lost is an hour of the Portal's 30-day countdown."""

    minutes: float = Field(default=60.0, gt=0, le=7 * 24 * 60)
    timezone: str = "America/Sao_Paulo"
    weekdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = [
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
    ]
    start: time = time(8, 0)
    end: time = time(18, 0)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (America/Sao_Paulo)") from None
        return value

    @model_validator(mode="after")
    def _hours(self) -> SilenceSettings:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        if not self.weekdays:
            raise ValueError("weekdays is empty: set silence: null to turn the rule off")
        return self

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def weekday_numbers(self) -> set[int]:
        """The weekdays as ``date.weekday()`` numbers (Monday 0)."""
        return {WEEKDAYS.index(day) for day in self.weekdays}


class WebhookSinkSettings(Section):
    """``alerts.webhook``: alerts POSTed as JSON through the guarded outbound client (public
    https addresses only, unless ``allowed_networks``/``allow_http`` say otherwise), signed with
    the Standard Webhooks scheme when ``secret`` (``whsec_`` and base64) is given."""

    url: str = Field(min_length=1, max_length=2000)
    secret: SecretStr | None = None
    allowed_networks: list[str] = []
    allow_http: bool = False
    ca_file: Path | None = None
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s/?#]+(/\S*)?", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return check_networks(value)

    @field_validator("secret")
    @classmethod
    def _secret_form(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("whsec_"):
            raise ValueError("the secret is a Standard Webhooks secret: whsec_ and base64")
        return value


class EmailSinkSettings(Section):
    """``alerts.email``: alerts sent over SMTP, with STARTTLS unless ``starttls: false`` (a
    relay on loopback); ``password`` as ``env:NAME`` or ``file:PATH``."""

    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    username: str | None = None
    password: SecretStr | None = None
    sender: str
    to: list[str] = Field(min_length=1)
    ca_file: Path | None = None
    timeout_seconds: float = Field(default=30.0, gt=0, le=300)

    @field_validator("sender")
    @classmethod
    def _sender_address(cls, value: str) -> str:
        if not _ADDRESS.fullmatch(value):
            raise ValueError(f"{value!r} is not an e-mail address")
        return value

    @field_validator("to")
    @classmethod
    def _recipient_addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if not _ADDRESS.fullmatch(address):
                raise ValueError(f"{address!r} is not an e-mail address")
        return value

    @model_validator(mode="after")
    def _credentials_pair(self) -> EmailSinkSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together: set both or neither")
        if self.password is not None and not self.starttls:
            raise ValueError("a password is never sent in clear: keep starttls: true")
        return self


class AlertSettings(Section):
    """``alerts:``; thresholds of null turn a rule off."""

    enabled: bool = True
    # How often the rules are evaluated; each alert is sent once per episode, whatever this is.
    every_seconds: float = Field(default=60.0, gt=0, le=86_400)
    # Which command evaluates them: serve (one of its processes with --workers N) or worker.
    run_in: Literal["serve", "worker"] = "serve"
    # A subscription of receiver.yaml that the Portal does not list as active.
    subscription_inactive: bool = True
    # Consecutive days with only failed deliveries of an event: the Portal cancels at 30, and
    # three days leave four weeks to fix the endpoint.
    subscription_failing_days: int | None = Field(default=3, ge=1, le=30)
    # Failure records of today or yesterday whose content is not in the store.
    unstored_failures: bool = True
    # Dead letters and quarantined notifications that appeared within this many minutes: the
    # alert resolves after a window without a new one (the console lists them until replayed).
    dead_letters_minutes: float | None = Field(default=60.0, gt=0)
    quarantined_minutes: float | None = Field(default=60.0, gt=0)
    silence: SilenceSettings | None = SilenceSettings()
    # The store cannot commit: ingest answers 503 and the Portal's three tries run out.
    store_refusing_writes: bool = True
    # The oldest job waiting to run: handlers stuck or too slow (the inbox keeps the
    # notification, but the Duimp is not fetched).
    oldest_pending_minutes: float | None = Field(default=15.0, gt=0)
    webhook: WebhookSinkSettings | None = None
    email: EmailSinkSettings | None = None

    def secrets(self) -> list[str]:
        found: list[str] = []
        if self.webhook is not None and self.webhook.secret is not None:
            found.append(self.webhook.secret.get_secret_value())
        if self.email is not None and self.email.password is not None:
            found.append(self.email.password.get_secret_value())
        return found
