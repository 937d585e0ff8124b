"""The real Portal simulator in-process, for integration tests: ``async with portal_simulator()
as sim:``. It is what ``receiver demo`` runs (the dispatcher with the Portal's subscription API and
delivery rule, the Portal API under mutual TLS), on a free loopback port, with test certificates
(trustme) and SQLite in a temporary folder, all removed on exit."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from receiver.config import PortalSettings
from receiver.dispatcher import Dispatcher
from receiver.portal.client import PortalClient
from receiver.simulator.app import loopback_settings, run_simulator
from receiver.simulator.certificates import write_demo_certificates


@dataclass(frozen=True, slots=True)
class Simulator:
    """A running simulator: its ``url``, its ``dispatcher`` (``await sim.dispatcher.emit(event,
    dados)``), the certificates (``certs``: ca, server, client_cert, client_key) and the folder."""

    url: str
    dispatcher: Dispatcher
    certs: dict[str, Path]
    folder: Path

    def portal_settings(self, **changes: object) -> PortalSettings:
        """``portal:`` settings that reach it with the Sefaz's client certificate."""
        values: dict[str, object] = {
            "base_url": self.url,
            "role_type": "SEFAZ",
            "cert_file": self.certs["client_cert"],
            "key_file": self.certs["client_key"],
            "ca_file": self.certs["ca"],
            "watch_every_seconds": 0,
        }
        values.update(changes)
        return PortalSettings.model_validate(values)

    def client(self) -> PortalClient:
        """The real Portal client, authenticated with the client certificate (``async with``)."""
        return PortalClient(self.portal_settings(), backoff_seconds=0.05)


@contextlib.asynccontextmanager
async def portal_simulator(
    *, interval_seconds: float = 0.3, folder: Path | None = None
) -> AsyncIterator[Simulator]:
    """The simulator on a free loopback port; ``interval_seconds`` between delivery attempts
    (the Portal waits 5 minutes). Loopback endpoints are allowed as subscribers."""
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="simulator-")))
        certs = write_demo_certificates(folder)
        settings = loopback_settings(folder, certs, interval_seconds=interval_seconds)
        async with run_simulator(settings) as running:
            try:
                yield Simulator(running.url, running.dispatcher, certs, folder)
            finally:
                # Senders hang up first: a TLS server shutting down waits for its peers' goodbye.
                await running.dispatcher.close()
