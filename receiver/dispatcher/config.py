"""The dispatcher's settings: the ``dispatcher:`` section of a settings file, and its loader.

The section may sit in the receiver's own ``receiver.yaml``, so one file serves both; the
receiver's ``Settings`` lets it through unread, and only ``load_dispatcher_config`` validates it
(plus ``log_level``, which both share). Relative paths are read next to the file, as the
receiver.s are, ``env:NAME`` values come from the environment and ``file:PATH`` values from files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from receiver.config import CONFIG_ENV
from receiver.configfile import (
    Section,
    anchor,
    anchor_database_url,
    check_networks,
    describe,
    read_yaml,
    resolve_env,
    top_level_mapping,
)
from receiver.errors import ConfigError

_PATH_KEYS = ("tls_cert_file", "tls_key_file", "tls_ca_file", "outbound_ca_file")
SECTION = "dispatcher"


class DispatcherSettings(Section):
    """The outbound dispatcher (the Portal's side): its own store, delivery rule and safety limits."""

    database_url: str = "sqlite:///dispatcher.db"
    # Seed pucomex-proposta-sefaz.txt: 3 attempts, one every 5 minutes, then never again.
    attempts: int = Field(default=3, ge=1, le=100)
    interval_seconds: float = Field(default=300.0, ge=0)
    # The Portal counts an answer slower than 3,500 ms as a failed delivery.
    attempt_timeout_seconds: float = Field(default=3.5, gt=0, le=300)
    per_endpoint_concurrency: int = Field(default=4, ge=1, le=1000)
    max_in_flight: int = Field(default=256, ge=1, le=100_000)
    max_response_bytes: int = Field(default=65_536, ge=0, le=1 << 24)
    # Longest sleep of the sender between looks at the outbox (another process may have emitted).
    poll_seconds: float = Field(default=1.0, gt=0, le=60)
    # Destinations normally refused as internal (loopback, private...) that may be reached anyway.
    allowed_networks: list[str] = []
    # Bearer token -> client name, for plain-HTTP setups where no client certificate is presented.
    clients: dict[str, str] = {}
    # Server TLS; tls_ca_file verifies client certificates (mutual TLS) when present.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None
    # Extra CA bundle trusted when delivering to endpoints (a local receiver with its own CA).
    outbound_ca_file: Path | None = None
    # The Portal cancels a subscription after this many days of only failed deliveries.
    cancel_after_days: float = Field(default=30.0, gt=0)
    # The recipient headers of PUCOMEX deliveries (values unpublished: these are guesses).
    destinatario_tipo: str = Field(default="CNPJ", min_length=1, max_length=20)
    destinatario_id: str = Field(default="00000000000191", min_length=1, max_length=20)

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return check_networks(value)

    @field_validator("clients")
    @classmethod
    def _client_tokens(cls, value: dict[str, str]) -> dict[str, str]:
        resolved: dict[str, str] = {}
        for token, name in value.items():
            # Tokens are the keys here, which the file-wide env: resolution does not reach.
            if token.startswith("env:"):
                if token[4:] not in os.environ:
                    raise ValueError(f"environment variable {token[4:]} is not set")
                token = os.environ[token[4:]]
            if not token or not name:
                raise ValueError("every client needs a non-empty token and name")
            resolved[token] = name
        return resolved

    def secrets(self) -> list[str]:
        """The client tokens, so the dispatcher's logs can redact them."""
        return list(self.clients)


class _Shared(BaseModel):
    """The keys of the file the dispatcher reads besides its section; the others are the
    receiver's, and not its business."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


@dataclass(frozen=True, slots=True)
class DispatcherConfig:
    """What a settings file gives the dispatcher: its section, the log level, and the values to
    keep out of its logs (its client tokens, and every value the file reads from ``env:``)."""

    settings: DispatcherSettings
    log_level: str = "INFO"
    secrets: list[str] = field(default_factory=list)


def _env_values(raw: Any) -> list[str]:
    """The values of the file's ``env:`` references: where its secrets are written."""
    if isinstance(raw, dict):
        return [value for item in raw.values() for value in _env_values(item)]
    if isinstance(raw, list):
        return [value for item in raw for value in _env_values(item)]
    if isinstance(raw, str) and raw.startswith("env:") and raw[4:] in os.environ:
        return [os.environ[raw[4:]]]
    return []


def dispatcher_config_from_mapping(
    raw: Any, origin: str = "receiver.yaml", base_dir: Path | None = None
) -> DispatcherConfig:
    """The dispatcher's part of a settings document (its other keys are not read)."""
    document = top_level_mapping(raw, origin)
    section = document.get(SECTION) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{origin}: {SECTION}: expected a mapping of keys")
    resolved = resolve_env(section, SECTION, origin, base_dir)
    shared = {key: document[key] for key in _Shared.model_fields if key in document}
    try:
        settings = DispatcherSettings.model_validate(resolved)
    except ValidationError as error:
        raise ConfigError(describe(error, origin, prefix=f"{SECTION}.")) from None
    try:
        log_level = _Shared.model_validate(resolve_env(shared, "", origin, base_dir)).log_level
    except ValidationError as error:
        raise ConfigError(describe(error, origin)) from None
    if base_dir is not None:
        settings = anchor_dispatcher_paths(settings, base_dir)
    secrets = [*settings.secrets(), *_env_values(document)]
    return DispatcherConfig(settings, log_level, secrets)


def anchor_dispatcher_paths(settings: DispatcherSettings, base_dir: Path) -> DispatcherSettings:
    """Relative paths in a config file mean 'next to that file', not 'wherever I was started'."""
    changes: dict[str, Any] = {
        name: anchor(value, base_dir)
        for name in _PATH_KEYS
        if (value := getattr(settings, name)) is not None
    }
    changes["database_url"] = anchor_database_url(settings.database_url, base_dir)
    return settings.model_copy(update=changes)


def load_dispatcher_config(path: Path | str | None = None) -> DispatcherConfig:
    """The dispatcher's settings from ``path``, else ``$RECEIVER_CONFIG``, else defaults."""
    chosen = path if path is not None else (os.environ.get(CONFIG_ENV) or None)
    if chosen is None:
        return dispatcher_config_from_mapping({}, origin="(defaults)")
    file = Path(chosen)
    return dispatcher_config_from_mapping(
        read_yaml(file), origin=str(file), base_dir=file.resolve().parent
    )


def load_dispatcher_settings(path: Path | str | None = None) -> DispatcherSettings:
    """The ``dispatcher:`` section of ``path``, else of ``$RECEIVER_CONFIG``, else defaults."""
    return load_dispatcher_config(path).settings
