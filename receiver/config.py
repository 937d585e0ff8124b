"""Settings from ``receiver.yaml`` and the environment, validated once and frozen.

Every key has a default that serves the demo, so a missing key is never an error; a wrong one is,
with one line that names the file and the key. Any string value may be written ``env:NAME`` to be
read from the environment, or ``file:PATH`` to be read from a file (a mounted secret), which is how
secrets stay out of the file. ``Settings.origin`` names the file, for errors found later.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from receiver.alert_settings import AlertSettings
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
from receiver.consolesettings import ConsoleSettings
from receiver.credentials import SourceSettings, secret_of
from receiver.errors import ConfigError
from receiver.retention import RetentionSettings

log = logging.getLogger("receiver.config")

CONFIG_ENV = "RECEIVER_CONFIG"
KNOWN_SOURCES = ("pucomex", "sintegre", "invoicy")
SOURCE_NAME_CHARS = (
    64  # what the notifications table holds (store.tables.StoredNotification.source)
)


# An event id, in the path, the event-type header or a config key. Always fullmatch: `$` would
# let a trailing newline through.
EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:*-]{0,119}")
# HOST:PORT of a listener: a name or IPv4 address, or an IPv6 address in brackets.
_LISTEN = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6) as a host and a port; ValueError otherwise.
    Port 0 asks the system for a free one (the start-up line says which)."""
    match = _LISTEN.fullmatch(text.strip())
    if match is None or int(match["port"]) > 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (such as 127.0.0.1:9464 or [::1]:9464)")
    return match["host"].strip("[]"), int(match["port"])


def _listen(value: str) -> str:
    parse_listen(value)
    return value.strip()


class RetrySettings(Section):
    max_attempts: int = Field(default=8, ge=1, le=100)
    backoff_seconds: float = Field(default=10.0, ge=0)
    max_backoff_seconds: float = Field(default=3600.0, ge=0)
    jitter: float = Field(default=0.25, ge=0, le=1)


class WorkerSettings(Section):
    concurrency: int = Field(default=8, ge=1, le=1000)
    handler_timeout_seconds: float = Field(default=60.0, gt=0)
    # A claimed job whose worker vanished is taken again after this long.
    lease_seconds: float = Field(default=300.0, gt=0)
    poll_interval_seconds: float = Field(default=0.5, gt=0)
    batch_size: int = Field(default=64, ge=1, le=10_000)
    strict_events: bool = False
    # `receiver worker`'s own admin listener (/healthz, /readyz, /metrics); serve's in-process
    # worker is seen on serve's admin_listen. Another port than serve's, so both fit on a host.
    admin_listen: str = "127.0.0.1:9465"

    _admin = field_validator("admin_listen")(_listen)


class GroupCommitSettings(Section):
    max_batch: int = Field(default=512, ge=1, le=100_000)
    # Extra wait for company once a commit is due; 0 means commit as soon as the disk is free.
    max_wait_ms: float = Field(default=0.0, ge=0, le=1000)
    # process: commit in a process of its own, so the event loop keeps the GIL to itself (the
    # fast choice); thread: in a thread of the serving process.
    writer: Literal["process", "thread"] = "process"


class PortalSettings(Section):
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
    # The secret the Portal sends back in the ``secret`` header of every notification: given as
    # ``chaveSecreta`` by `receiver portal subscriptions add|update|sync`.
    chave_secreta: SecretStr | None = Field(default=None, min_length=1, max_length=4096)
    # serve checks the subscriptions and the failure search this often (0 or null: never).
    watch_every_seconds: float | None = Field(default=600.0, ge=0)


class OutboundSettings(Section):
    """What handlers may reach through ``ctx.http``: public addresses over https, nothing else,
    unless listed here (see ``receiver.outbound``)."""

    # Destinations normally refused as internal (loopback, private...) that may be reached anyway.
    allowed_networks: list[str] = []
    allow_http: bool = False
    # Extra CA bundle trusted for downloads (an internal server with its own CA).
    ca_file: Path | None = None
    # Per step (connecting, each read, each write), not for a whole download.
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Each hop is checked like the first request; 0 follows none.
    max_redirects: int = Field(default=5, ge=0, le=20)

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return check_networks(value)


class DownloadSettings(Section):
    """Disk limits of the reference handlers that download files (handlers.sintegre)."""

    max_file_bytes: int = Field(default=1 << 30, ge=1)  # one file: 1 GiB
    # Every file a downloading handler keeps in its folder under store_dir, together: 20 GiB.
    max_total_bytes: int = Field(default=20 << 30, ge=1)


class SubscriptionSpec(Section):
    evento: str = Field(min_length=1, max_length=40)
    endpoint: str = Field(min_length=1, max_length=500)


class EventSettings(Section):
    """``events.aliases``: per source, an id a sender uses -> the catalog id handlers are routed
    on, so an id the Portal publishes later needs a line here, not a new release."""

    aliases: dict[str, dict[str, str]] = {}

    @field_validator("aliases")
    @classmethod
    def _alias_ids(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for source, mapping in value.items():
            for alias, target in mapping.items():
                for event in (alias, target):
                    if not EVENT_ID.fullmatch(event) or "*" in event:
                        raise ValueError(f"{source}: {event!r} is not an event id")
                if alias == target:
                    raise ValueError(f"{source}: {alias!r} is an alias of itself")
            loops = set(mapping) & set(mapping.values())
            if loops:
                raise ValueError(
                    f"{source}: {sorted(loops)[0]!r} is both an alias and a target; "
                    "aliases map straight to catalog ids"
                )
        return value


class ServerSettings(Section):
    """``server:``: how ``receiver serve`` serves HTTP. ``receiver.ingest.http.uvicorn_config``
    makes uvicorn's ``Config`` from it; what is not here is fixed there, with the reason."""

    # Past this many open connections a request is answered 503 (with Retry-After) at once.
    limit_concurrency: int = Field(default=4096, ge=1)
    # An idle keep-alive connection is closed after this long (uvicorn's timeout_keep_alive).
    timeout_keep_alive_seconds: int = Field(default=5, ge=1, le=3600)
    # A request's head (request line and headers) must arrive whole within this, counted from
    # the connection or the end of the previous answer; then the connection is closed.
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # A webhook's body must arrive whole within this once its head is in; then 408.
    read_timeout_seconds: float = Field(default=10.0, gt=0)
    # Request head size: the target plus every header line (name, value, separators), and the
    # number of header lines. nginx's defaults (large_client_header_buffers 4 8k) allow about
    # 32 KiB; past either limit the answer is 431 and nothing is stored.
    max_header_bytes: int = Field(default=32_768, ge=1024, le=1 << 20)
    max_header_count: int = Field(default=100, ge=8, le=10_000)
    # Besides allowlisted addresses and trusted proxies, who may connect: a load balancer's TCP
    # health check. Their webhooks are still refused (403); HTTP health checks and metrics
    # scrapes go to the admin listener (admin_listen), which this port does not serve.
    monitoring_addresses: list[str] = []
    # TLS on the webhook port (serve --ssl-certfile/--ssl-keyfile): PEM files, the certificate
    # with its chain; both or neither. TLS 1.2 and 1.3 only, forward-secret AEAD suites
    # (receiver.ingest.tls); reloaded on SIGHUP.
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @field_validator("monitoring_addresses")
    @classmethod
    def _monitoring_networks(cls, value: list[str]) -> list[str]:
        return check_networks(value)

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSettings:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            given, missing = ("ssl_certfile", "ssl_keyfile")
            if self.ssl_certfile is None:
                given, missing = missing, given
            raise ValueError(f"{given} is given without {missing}: set both or neither")
        return self


# Keys of the previous release's top level that live under server: now; still read there, with a
# warning, until the next release.
MOVED_TO_SERVER = ("limit_concurrency", "read_timeout_seconds")


def _move_to_server(data: dict[str, Any], origin: str) -> dict[str, Any]:
    moved = [key for key in MOVED_TO_SERVER if key in data]
    server = data.get("server")
    if not moved or not (server is None or isinstance(server, dict)):
        return data  # nothing to move, or a server: that is not a mapping (validation says so)
    data, server = dict(data), dict(server or {})
    for key in moved:
        if key in server:
            raise ValueError(f"{key} is given twice, at the top level and as server.{key}")
        server[key] = data.pop(key)
        log.warning(
            "%s: %s at the top level is deprecated; write it as server.%s", origin, key, key
        )
    data["server"] = server
    return data


class Settings(Section):
    database_url: str = "sqlite:///receiver.db"
    allowlist: Path = Path("allowlist.yaml")
    trusted_proxies: list[str] = []
    max_body_bytes: int = Field(default=1_048_576, ge=1, le=1 << 30)
    # Bodies a serving process holds for the store and has not answered yet, at most: past it,
    # a request is answered 503 with Retry-After before its body is read (the store is behind).
    # 16 MiB is 16,000 Portal notifications of 1 KB; with 700 requests of 1 MB at once against a
    # stopped writer the serving process peaked at 144-166 MiB (64 MiB: 192-206, loadtests/memory.py).
    max_inflight_bytes: int = Field(default=16 * 1_048_576, ge=1)
    # Answer 503 rather than late: the Portal counts anything over 3.5 s as a failure.
    ack_timeout_seconds: float = Field(default=2.0, gt=0)
    retry_after_seconds: int = Field(default=5, ge=0)
    server: ServerSettings = ServerSettings()
    sources: dict[str, SourceSettings] = Field(
        default_factory=lambda: {name: SourceSettings() for name in KNOWN_SOURCES}
    )
    handlers: list[str] = []
    retry: RetrySettings = RetrySettings()
    worker: WorkerSettings = WorkerSettings()
    group_commit: GroupCommitSettings = GroupCommitSettings()
    portal: PortalSettings | None = None
    subscriptions: list[SubscriptionSpec] = []
    events: EventSettings = EventSettings()
    # The dispatcher's section (receiver.dispatcher.config), allowed here so that one file can serve
    # both; the dispatcher's loader validates it, the receiver does not read it.
    dispatcher: dict[str, Any] | None = None
    outbound: OutboundSettings = OutboundSettings()
    downloads: DownloadSettings = DownloadSettings()
    store_dir: Path = Path("data")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # text: one line per record, fields as key=value; json: one JSON object per line.
    log_format: Literal["text", "json"] = "text"
    # /healthz, /readyz and /metrics of serve (never on the webhook port): plain HTTP, on
    # loopback unless told otherwise; anyone who reaches it may read them.
    admin_listen: str = "127.0.0.1:9464"
    retention: RetentionSettings = RetentionSettings()
    # The operator console (receiver.console): served by `receiver console`, and by serve on
    # admin_listen, only when this section is given.
    console: ConsoleSettings | None = None
    alerts: AlertSettings = AlertSettings()
    # The file these settings came from ("(defaults)" without one), for errors found later.
    _origin: str = PrivateAttr(default="receiver.yaml")

    _admin = field_validator("admin_listen")(_listen)

    @property
    def origin(self) -> str:
        return self._origin

    @field_validator("console")
    @classmethod
    def _console_listen(cls, value: ConsoleSettings | None) -> ConsoleSettings | None:
        if value is not None:
            parse_listen(value.listen)
        return value

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
        return check_networks(value)

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        origin = (info.context or {}).get("origin", "receiver.yaml")
        return _move_to_server(data, origin)

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
            found.extend(secret_of(credential) for credential in source.credentials)
        if self.portal is not None:
            portal = self.portal
            for secret in (portal.pfx_password, portal.client_secret, portal.chave_secreta):
                if secret is not None:
                    found.append(secret.get_secret_value())
        if self.console is not None and self.console.session_secret is not None:
            found.append(self.console.session_secret.get_secret_value())
        found.extend(self.alerts.secrets())
        return found


def settings_from_mapping(
    raw: Any, origin: str = "receiver.yaml", base_dir: Path | None = None
) -> Settings:
    resolved = resolve_env(top_level_mapping(raw, origin), "", origin, base_dir)
    try:
        settings = Settings.model_validate(resolved, context={"origin": origin})
    except ValidationError as error:
        raise ConfigError(describe(error, origin)) from None
    if base_dir is not None:
        settings = _anchor_paths(settings, base_dir)
    settings._origin = origin
    return settings


def _anchor_paths(settings: Settings, base_dir: Path) -> Settings:
    """Relative paths in a config file mean 'next to that file', not 'wherever I was started'."""

    changes: dict[str, Any] = {
        "allowlist": anchor(settings.allowlist, base_dir),
        "store_dir": anchor(settings.store_dir, base_dir),
        "database_url": anchor_database_url(settings.database_url, base_dir),
    }
    if settings.portal is not None:
        portal_paths = {
            field: anchor(value, base_dir)
            for field in ("pfx_file", "cert_file", "key_file", "ca_file")
            if (value := getattr(settings.portal, field)) is not None
        }
        changes["portal"] = settings.portal.model_copy(update=portal_paths)
    if settings.outbound.ca_file is not None:
        changes["outbound"] = settings.outbound.model_copy(
            update={"ca_file": anchor(settings.outbound.ca_file, base_dir)}
        )
    alerts = settings.alerts
    if alerts.webhook is not None and alerts.webhook.ca_file is not None:
        webhook = alerts.webhook.model_copy(
            update={"ca_file": anchor(alerts.webhook.ca_file, base_dir)}
        )
        alerts = alerts.model_copy(update={"webhook": webhook})
    if alerts.email is not None and alerts.email.ca_file is not None:
        email = alerts.email.model_copy(update={"ca_file": anchor(alerts.email.ca_file, base_dir)})
        alerts = alerts.model_copy(update={"email": email})
    changes["alerts"] = alerts
    server = settings.server
    if server.ssl_certfile is not None and server.ssl_keyfile is not None:
        changes["server"] = server.model_copy(
            update={
                "ssl_certfile": anchor(server.ssl_certfile, base_dir),
                "ssl_keyfile": anchor(server.ssl_keyfile, base_dir),
            }
        )
    return settings.model_copy(update=changes)


def load_settings(path: Path | str | None = None) -> Settings:
    """Settings from ``path``, else ``$RECEIVER_CONFIG``, else every default."""
    if path is None:
        path = os.environ.get(CONFIG_ENV) or None
    if path is None:
        return settings_from_mapping({}, origin="(defaults)")
    file = Path(path)
    return settings_from_mapping(read_yaml(file), origin=str(file), base_dir=file.resolve().parent)
