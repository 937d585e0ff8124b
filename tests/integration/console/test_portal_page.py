"""The console's Portal page against the real simulator over TLS: the subscriptions of
receiver.yaml at the Portal, the failure search by day with each content stored or not, the run
of days with only failures and the days left before the Portal cancels, and the recovery runs."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from receiver.config import Settings, SubscriptionSpec, settings_from_mapping
from receiver.console import standalone_app
from receiver.runtime.consoleportal import ConsolePortal, PortalSnapshot, portal_view
from receiver.runtime.recovery import recover
from receiver.store import Store
from tests.conftest import base_config
from tests.console_support import VIEWER_PASSWORD, console_section, log_in
from tests.integration.portal.support import make_certs, portal_settings

REGISTRO = SubscriptionSpec(evento="dimp-registro-import", endpoint="https://127.0.0.1:9/hook")
SITUACAO = SubscriptionSpec(evento="dimp-situacao-import", endpoint="https://127.0.0.1:9/other")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'receiver.db'}")
    store.upgrade_schema()
    yield store
    store.close()


def test_without_a_portal_section_there_is_no_view(store: Store) -> None:
    settings = settings_from_mapping(base_config(store.url), origin="test")
    assert portal_view(settings, store) is None


def test_the_portal_page_shows_failures_streaks_and_recovery(store: Store, tmp_path: Path) -> None:
    from receiver.simulator import run_simulator
    from receiver.simulator.portal_api import PortalAuthority
    from tests.dispatcher_support import dispatcher_settings, sqlite_url

    certs = make_certs(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(certs.server_pem)

    async def scenario() -> tuple[PortalSnapshot, PortalSnapshot, str]:
        simulator_settings = dispatcher_settings(sqlite_url(tmp_path), interval_seconds=0.01)
        authority = PortalAuthority(clients={"sefaz": "segredo-1234"})
        async with run_simulator(
            simulator_settings, authority=authority, ssl_context=server_tls
        ) as sim:
            assert sim.url.startswith("https://")
            portal = portal_settings(
                sim.url, None, client_id="sefaz", client_secret="segredo-1234", ca_file=certs.ca_pem
            )
            settings: Settings = settings_from_mapping(
                base_config(store.url, console=console_section()), origin="test"
            ).model_copy(update={"portal": portal, "subscriptions": [REGISTRO, SITUACAO]})
            from receiver.portal import PortalClient

            async with PortalClient(portal) as client:
                # Nothing listens on port 9: the Portal gives up after 3 tries.
                await client.subscriptions.create(REGISTRO.evento, REGISTRO.endpoint)
                result = await sim.dispatcher.emit(
                    REGISTRO.evento, {"numero": "26BR0000000198", "versao": 1}
                )
                await sim.dispatcher.wait_for(result.delivery_ids, within=10)
                view = ConsolePortal(settings, store)
                before = await view.snapshot(2)
                await recover(client.subscriptions, store)
                after = await view.snapshot(2)
            app = standalone_app(settings, store, view)
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
            async with httpx.AsyncClient(transport=transport, base_url="https://c.test") as web:
                await log_in(web, "victor", VIEWER_PASSWORD)
                page = (await web.get("/console/portal")).text
        return before, after, page

    before, after, page = asyncio.run(scenario())
    registro, situacao = before.wanted
    assert registro.state == "active" and situacao.state == "not subscribed"
    # Failed today, nothing of it received: day 1 of the Portal's 30.
    assert (registro.streak_days, registro.days_left) == (1, 29)
    assert (situacao.streak_days, situacao.days_left) == (0, None)
    today = before.days[0]
    assert len(today.contents) == 1 and today.contents[0].attempts == 3
    assert today.missing == 1 and not today.contents[0].stored
    assert before.runs == []
    # Recovery stored the content and recorded its run.
    assert after.days[0].missing == 0 and after.days[0].contents[0].stored
    [run] = after.runs
    assert (run["seen"], run["distinct"], run["recovered"]) == (3, 1, 1)
    assert len(run["id_list"]) == 1
    assert "29 days" in page and "not subscribed" in page and run["id_list"][0] in page
