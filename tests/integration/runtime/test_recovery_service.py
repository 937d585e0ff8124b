"""`serve`'s periodic recovery against the Portal simulator: what the Portal gave up on comes back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from receiver.dispatcher import DispatcherSettings
from receiver.portal.client import PortalClient
from receiver.runtime.services import recovery_service
from receiver.simulator import run_simulator
from receiver.simulator.certificates import write_demo_certificates
from receiver.simulator.demo import demo_receiver_settings
from receiver.store import NoteFilter, Store
from tests.acceptance.conftest import free_port
from tests.conftest import migrated

pytestmark = pytest.mark.anyio


async def test_failed_deliveries_are_recovered_by_serve(tmp_path: Path) -> None:
    certs = write_demo_certificates(tmp_path)
    simulator = DispatcherSettings(
        database_url=f"sqlite:///{tmp_path / 'dispatcher.db'}",
        interval_seconds=0.02,
        allowed_networks=["127.0.0.0/8"],
        tls_cert_file=certs["server"],
        tls_ca_file=certs["ca"],
        outbound_ca_file=certs["ca"],
    )
    async with run_simulator(simulator) as portal_side:
        base = demo_receiver_settings(tmp_path, certs, portal_side.url)
        assert base.portal is not None
        settings = base.model_copy(
            update={"portal": base.portal.model_copy(update={"recover_every_seconds": 0.2})}
        )
        assert recovery_service(base, Store.from_settings(base)) is None  # off unless configured
        async with PortalClient(base.portal) as portal:
            # The receiver was down: nothing listens where the Portal delivers.
            down = f"https://127.0.0.1:{free_port()}/webhooks/pucomex/duimp.registro"
            await portal.subscriptions.create("duimp.registro", down)
        emitted = await portal_side.dispatcher.emit(
            "duimp.registro", {"numero": "26BR0000000042", "versao": "1"}
        )
        [state] = await portal_side.dispatcher.wait_for(emitted.delivery_ids, within=30)
        assert state.status == "failed" and state.attempts == 3

        store = Store.from_settings(settings)
        migrated(store)
        service = recovery_service(settings, store)
        assert service is not None
        try:
            async with service():
                for _ in range(100):
                    rows = list(store.notes(NoteFilter()))
                    if rows:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)  # more rounds: nothing is stored twice
            rows = list(store.notes(NoteFilter()))
        finally:
            store.close()
    assert len(rows) == 1
    [row] = rows
    assert row["recovered"] is True
    assert row["source"] == "pucomex"
    assert b'"numero":"26BR0000000042"' in row["body"].replace(b" ", b"")
