"""Settings from ``receiver.yaml`` and the environment, validated once and frozen.

Every key has a default that serves the demo, so a missing key is never an error; a wrong one is,
with one line that names the file and the key. Any string value may be written ``env:NAME`` to be
read from the environment, which is how secrets stay out of the file.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from receiver.errors import ConfigError

CONFIG_ENV = "RECEIVER_CONFIG"
KNOWN_SOURCES = ("pucomex", "sintegre", "invoicy")
SOURCE_NAME_CHARS = 64  # what the notifications table holds (models.StoredNotification.source)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BearerCredential(_Frozen):
    type: Literal["bearer"]
    token: SecretStr = Field(min_length=1)


class BasicCredential(_Frozen):
    type: Literal["basic"]
    username: str = Field(min_length=1)
    password: SecretStr = Field(min_length=1)

    @field_validator("username")
    @classmethod
    def _no_colon(cls, value: str) -> str:
        if ":" in value:
            raise ValueError("a Basic username cannot contain ':'")
        return value


Credential = Annotated[BearerCredential | BasicCredential, Field(discriminator="type")]


class SourceSettings(_Frozen):
    # Any one of them admits the request; an empty list means no credential check.
    credentials: list[Credential] = []


class RetrySettings(_Frozen):
    max_attempts: int = Field(default=8, ge=1, le=100)
    backoff_seconds: float = Field(default=10.0, ge=0)
    max_backoff_seconds: float = Field(default=3600.0, ge=0)
    jitter: float = Field(default=0.25, ge=0, le=1)


class WorkerSettings(_Frozen):
    concurrency: int = Field(default=8, ge=1, le=1000)
    handler_timeout_seconds: float = Field(default=60.0, gt=0)
    # A claimed job whose worker vanished is taken again after this long.
    lease_seconds: float = Field(default=300.0, gt=0)
    poll_interval_seconds: float = Field(default=0.5, gt=0)
    batch_size: int = Field(default=64, ge=1, le=10_000)
    strict_events: bool = False


class GroupCommitSettings(_Frozen):
    max_batch: int = Field(default=512, ge=1, le=100_000)
    # Extra wait for company once a commit is due; 0 means commit as soon as the disk is free.
    max_wait_ms: float = Field(default=0.0, ge=0, le=1000)
    # process: commit in a process of its own, so the event loop keeps the GIL to itself (the
    # fast choice); thread: in a thread of the serving process.
    writer: Literal["process", "thread"] = "process"


class PortalSettings(_Frozen):
    base_url: str = "https://portalunico.siscomex.gov.br"
    role_type: str = "IMPEXP"
    # ICP-Brasil A1 certificate: a PKCS#12 file with its password, or PEM certificate and key.
    pfx_file: Path | None = None
    pfx_password: SecretStr | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # Newer integrations authenticate with these headers instead of the certificate's role.
    client_id: str | None = None
    client_secret: SecretStr | None = None
    ca_file: Path | None = None
    timeout_seconds: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)
    token_lifetime_seconds: float = Field(default=3000.0, gt=0)
    recover_every_seconds: float | None = Field(default=None, gt=0)


class SubscriptionSpec(_Frozen):
    evento: str = Field(min_length=1, max_length=40)
    endpoint: str = Field(min_length=1, max_length=500)


class DispatcherSettings(_Frozen):
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

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not a CIDR or an IP address") from None
        return value

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


class Settings(_Frozen):
    database_url: str = "sqlite:///receiver.db"
    allowlist: Path = Path("allowlist.yaml")
    trusted_proxies: list[str] = []
    max_body_bytes: int = Field(default=1_048_576, ge=1, le=1 << 30)
    # Bodies a serving process holds for the store and has not answered yet, at most: past it,
    # a request is answered 503 with Retry-After before its body is read (the store is behind).
    # 16 MiB is 16,000 Portal notifications of 1 KB; with 700 requests of 1 MB at once against a
    # stopped writer the serving process peaked at 144-166 MiB (64 MiB: 192-206, loadtests/memory.py).
    max_inflight_bytes: int = Field(default=16 * 1_048_576, ge=1)
    read_timeout_seconds: float = Field(default=10.0, gt=0)
    # Answer 503 rather than late: the Portal counts anything over 3.5 s as a failure.
    ack_timeout_seconds: float = Field(default=2.0, gt=0)
    retry_after_seconds: int = Field(default=5, ge=0)
    # Past this many open connections uvicorn answers 503 at once instead of queueing.
    limit_concurrency: int = Field(default=4096, ge=1)
    sources: dict[str, SourceSettings] = Field(
        default_factory=lambda: {name: SourceSettings() for name in KNOWN_SOURCES}
    )
    handlers: list[str] = []
    retry: RetrySettings = RetrySettings()
    worker: WorkerSettings = WorkerSettings()
    group_commit: GroupCommitSettings = GroupCommitSettings()
    portal: PortalSettings | None = None
    subscriptions: list[SubscriptionSpec] = []
    dispatcher: DispatcherSettings = DispatcherSettings()
    store_dir: Path = Path("data")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("max_inflight_bytes")
    @classmethod
    def _inflight_holds_a_body(cls, value: int, info: ValidationInfo) -> int:
        body = info.data.get("max_body_bytes")
        if body is not None and value < body:
            raise ValueError(
                f"{value} is below max_body_bytes ({body}): a body at the limit would never fit"
            )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _no_wildcard(cls, value: list[str]) -> list[str]:
        if any(entry.strip() in {"*", "0.0.0.0/0", "::/0"} for entry in value):
            raise ValueError("trusting every proxy lets anyone choose their address; list CIDRs")
        return value

    @field_validator("sources")
    @classmethod
    def _source_names(cls, value: dict[str, SourceSettings]) -> dict[str, SourceSettings]:
        for name in value:
            if not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"source name {name!r} must be letters, digits, '-' or '_'")
            if len(name) > SOURCE_NAME_CHARS:
                # The notifications table holds 64 characters: every insert would fail.
                raise ValueError(f"source name {name!r} is over {SOURCE_NAME_CHARS} characters")
        return value

    def secrets(self) -> list[str]:
        """Every configured secret, so logs and tests can look for leaks."""
        found: list[str] = []
        for source in self.sources.values():
            for cred in source.credentials:
                if isinstance(cred, BearerCredential):
                    found.append(cred.token.get_secret_value())
                else:
                    found.append(cred.password.get_secret_value())
        if self.portal is not None:
            for secret in (self.portal.pfx_password, self.portal.client_secret):
                if secret is not None:
                    found.append(secret.get_secret_value())
        return found


def _resolve_env(value: Any, path: str, origin: str) -> Any:
    if isinstance(value, dict):
        return {
            key: _resolve_env(item, f"{path}.{key}" if path else str(key), origin)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_resolve_env(item, f"{path}.{index}", origin) for index, item in enumerate(value)]
    if isinstance(value, str) and value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise ConfigError(f"{origin}: {path}: environment variable {name} is not set")
        return os.environ[name]
    return value


def _describe(error: ValidationError, origin: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{origin}: {key}: {first['msg']}{more}"


def settings_from_mapping(
    raw: Any, origin: str = "receiver.yaml", base_dir: Path | None = None
) -> Settings:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{origin}: (top level): expected a mapping of keys, got {type(raw).__name__}"
        )
    resolved = _resolve_env(raw, "", origin)
    try:
        settings = Settings.model_validate(resolved)
    except ValidationError as error:
        raise ConfigError(_describe(error, origin)) from None
    if base_dir is not None:
        settings = _anchor_paths(settings, base_dir)
    return settings


def _anchor_paths(settings: Settings, base_dir: Path) -> Settings:
    """Relative paths in a config file mean 'next to that file', not 'wherever I was started'."""

    def anchor(path: Path) -> Path:
        return path if path.is_absolute() else base_dir / path

    changes: dict[str, Any] = {
        "allowlist": anchor(settings.allowlist),
        "store_dir": anchor(settings.store_dir),
    }
    url = settings.database_url
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        changes["database_url"] = prefix + str(anchor(Path(url[len(prefix) :])))
    if settings.portal is not None:
        portal_paths = {
            field: anchor(value)
            for field in ("pfx_file", "cert_file", "key_file", "ca_file")
            if (value := getattr(settings.portal, field)) is not None
        }
        changes["portal"] = settings.portal.model_copy(update=portal_paths)
    return settings.model_copy(update=changes)


def load_settings(path: Path | str | None = None) -> Settings:
    """Settings from ``path``, else ``$RECEIVER_CONFIG``, else every default."""
    if path is None:
        path = os.environ.get(CONFIG_ENV) or None
    if path is None:
        return settings_from_mapping({}, origin="(defaults)")
    file = Path(path)
    origin = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{origin}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{origin}: cannot be read: {error}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(top level)"
        raise ConfigError(f"{origin}: {where}: not valid YAML") from None
    return settings_from_mapping(raw, origin=origin, base_dir=file.resolve().parent)
