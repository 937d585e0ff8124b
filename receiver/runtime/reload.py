"""SIGHUP in a serving process: read ``receiver.yaml`` and the allowlist again, and apply what can
change without dropping a request.

Reloaded: the allowlist (the file, and the ``allowlist`` key naming it), ``trusted_proxies``,
``sources`` and their credentials, ``server.monitoring_addresses``, the request head limits
(``server.header_timeout_seconds``, ``server.max_header_bytes``, ``server.max_header_count``)
``log_level`` and ``log_format``, and the TLS certificate and key (``receiver.ingest.tls``: a
pair that cannot be used is refused on its own, the previous one kept). They
apply to the next request and the next connection; nothing open is closed. Any other key that
changed is named in a warning and takes effect at the next restart. A file that cannot be read or
is invalid changes nothing: one error line says why, and the process keeps serving with what it
had.

With ``--workers N`` the supervisor checks the file once and passes SIGHUP on to every serving
process (``receiver.ingest.http.ReloadingSupervisor``), which reloads itself here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import FrameType

from receiver import logs
from receiver.config import ServerSettings, Settings, load_settings
from receiver.errors import ConfigError
from receiver.ingest import tls
from receiver.ingest.allowlist import Allowlist
from receiver.ingest.edge import EdgePolicy
from receiver.ingest.http import ReceiverProtocol

log = logging.getLogger("receiver.reload")

RELOADED = frozenset({"allowlist", "trusted_proxies", "sources", "log_level", "log_format"})
RELOADED_SERVER = frozenset(
    {"monitoring_addresses", "header_timeout_seconds", "max_header_bytes", "max_header_count"}
)

Admission = Callable[[Settings, Allowlist], None]


def read(path: Path | None) -> tuple[Settings, Allowlist, EdgePolicy]:
    """The settings, allowlist and edge policy from ``path`` (else $RECEIVER_CONFIG); a
    ConfigError naming the file and key when any of them is wrong."""
    settings = load_settings(path)
    allowlist = Allowlist.load(settings.allowlist)
    return settings, allowlist, EdgePolicy.from_settings(settings, allowlist)


def check(path: Path | None, tls_of: ServerSettings | None = None) -> str | None:
    """What is wrong with the configuration at ``path``, or with the TLS certificate and key of
    ``tls_of`` (the files in effect), or None: the supervisor's look before it passes SIGHUP on."""
    try:
        read(path)
        if tls_of is not None and tls_of.ssl_certfile is not None and tls_of.ssl_keyfile:
            tls.server_context(tls_of.ssl_certfile, tls_of.ssl_keyfile, "TLS")
    except ConfigError as error:
        return str(error)
    return None


def needing_restart(running: Settings, read: Settings) -> list[str]:
    """The keys that differ between ``running`` and ``read`` and are not reloaded in place
    (``server.*`` named one by one: part of that section is reloaded)."""
    changed = [
        key
        for key in Settings.model_fields
        if key not in RELOADED and key != "server" and getattr(read, key) != getattr(running, key)
    ]
    changed += [
        f"server.{key}"
        for key in ServerSettings.model_fields
        if key not in RELOADED_SERVER and getattr(read.server, key) != getattr(running.server, key)
    ]
    return sorted(changed)


class Reloader:
    """Reloads one serving process on SIGHUP; ``admit`` is the ingest endpoint's ``reload``."""

    def __init__(self, path: Path | None, running: Settings) -> None:
        self._path = path
        self._started_with = running
        self._secrets = set(running.secrets())
        self._admit: Admission | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False
        # A SIGHUP before the event loop runs (the process is still starting) is kept for it.
        self._early = False
        self.reloads = 0

    def admit_with(self, admit: Admission) -> None:
        """``admit`` takes the new settings and allowlist, or raises ConfigError having changed
        nothing (``IngestEndpoint.reload``)."""
        self._admit = admit

    def catch_early(self) -> None:
        """Until ``service`` runs, remember a SIGHUP instead of dying of it (Python's default)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, self._remember)

    def _remember(self, signum: int, frame: FrameType | None) -> None:
        self._early = True

    @contextlib.asynccontextmanager
    async def service(self) -> AsyncIterator[None]:
        """The SIGHUP handler for the life of the app (a background service of serve)."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only (an app run in a test's thread)
            return
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.requested)
        if self._early:
            self.requested()
        try:
            yield
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            # Stopping: a late SIGHUP must not cut the drain short.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            if self._task is not None:
                await self._task

    def requested(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True  # once the running reload ends, read the file once more
            return
        self._task = asyncio.get_running_loop().create_task(self._reload())

    async def _reload(self) -> None:
        while True:
            self._again = False
            await self.reload()
            if not self._again:
                return

    async def reload(self) -> bool:
        """Read and apply the configuration, and the TLS certificate and key; False (and the
        old one kept) if the configuration is wrong. A certificate that cannot be used is
        refused on its own, with one line: the previous one keeps serving."""
        origin = str(self._path) if self._path is not None else "the configuration"
        problem = await asyncio.to_thread(tls.reload_active)
        if problem is not None:
            log.error(
                "SIGHUP: TLS certificate not reloaded, still serving the previous one: %s", problem
            )
        try:
            settings, allowlist, edge = await asyncio.to_thread(read, self._path)
            if self._admit is not None:
                self._admit(settings, allowlist)
        except ConfigError as error:
            log.error(
                "SIGHUP: %s not reloaded, still serving with the previous one: %s", origin, error
            )
            return False
        ReceiverProtocol.configure(edge)
        # Old and new secrets both stay redacted: a line about an old request may still come.
        self._secrets |= set(settings.secrets())
        logs.configure(settings.log_level, sorted(self._secrets), settings.log_format)
        self.reloads += 1
        changed = needing_restart(self._started_with, settings)
        log.info(
            "SIGHUP: reloaded %s (allowlist %s, sources %s)",
            origin,
            settings.allowlist,
            ", ".join(sorted(settings.sources)),
        )
        if changed:
            log.warning(
                "SIGHUP: %s changed too; %s take%s effect at the next restart",
                ", ".join(changed),
                "they" if len(changed) > 1 else "it",
                "" if len(changed) > 1 else "s",
            )
        return True
