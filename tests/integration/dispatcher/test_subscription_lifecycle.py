"""`receiver portal subscriptions` against the real simulator: a subscription that only failed
for 30 days (on the simulator's moved clock) is cancelled, `list --inactive` shows why, and
`sync` creates it again and says so."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import yaml
from click.testing import CliRunner, Result

from receiver.dispatcher import RunningDispatcher
from receiver.dispatcher.tables import AuthType
from receiver.runtime.cli import main
from receiver.simulator import run_simulator
from receiver.simulator.portal_api import PortalAuthority
from receiver.store.tables import utcnow
from tests.dispatcher_support import TOKEN_A, InThread, dispatcher_settings, sqlite_url

CHAVE = "5d0e9c41b7a2f83e6c1d4a90b2e7f356"
NUMERO = "26BR0000000198"
CLIENT_SECRET = "segredo-do-cliente-81c2"
# Nothing listens on port 9 of loopback: every delivery fails at once.
DEAD_HOOK = "https://127.0.0.1:9/webhooks/pucomex"


class Clock:
    offset = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset


def test_a_cancelled_subscription_is_listed_and_created_again(tmp_path: Path) -> None:
    clock = Clock()
    settings = dispatcher_settings(sqlite_url(tmp_path), interval_seconds=0.01)
    authority = PortalAuthority(clients={"sefaz": CLIENT_SECRET})
    config = tmp_path / "receiver.yaml"

    def portal(*args: str) -> Result:
        return CliRunner().invoke(main, ["portal", "subscriptions", *args, "--config", str(config)])

    with InThread(lambda: run_simulator(settings, authority=authority, clock=clock)) as sim:
        assert isinstance(sim, RunningDispatcher)
        config.write_text(
            yaml.safe_dump(
                {
                    "portal": {
                        "base_url": sim.url,
                        "client_id": "sefaz",
                        "client_secret": CLIENT_SECRET,
                        "chave_secreta": CHAVE,
                        "max_retries": 0,
                    },
                    "subscriptions": [{"evento": "dimp-registro-import", "endpoint": DEAD_HOOK}],
                }
            )
        )
        created = portal("sync")
        assert created.exit_code == 0, created.output
        [subscription] = sim.dispatcher.store.subscriptions(None)
        assert subscription.auth.type is AuthType.SECRET and subscription.auth.secret == CHAVE

        emitted = httpx.post(
            f"{sim.url}/sim/events",
            headers={"Authorization": f"Bearer {TOKEN_A}"},
            json={"evento": "dimp-registro-import", "dados": {"numero": NUMERO, "versao": 1}},
        )
        assert emitted.status_code == 200, emitted.text
        deadline = time.monotonic() + 10
        while [d.status for d in sim.dispatcher.store.deliveries()] != ["failed"]:
            assert time.monotonic() < deadline, "the delivery did not fail in time"
            time.sleep(0.02)

        clock.offset = timedelta(days=29)
        assert "INACTIVE" not in portal("list", "--inactive").output
        clock.offset = timedelta(days=30, minutes=1)
        listed = portal("list", "--inactive")
        assert listed.exit_code == 0, listed.output
        assert (
            "INACTIVE: Cancelada automaticamente: apenas erros na entrega por 30" in listed.output
        )
        assert "dimp-registro-import" not in portal("list").output

        synced = portal("sync")
        assert synced.exit_code == 0, synced.output
        assert f"(again: the Portal cancelled #{subscription.id}:" in synced.output
        assert "1 re-created after the Portal cancelled them" in synced.output
        [again] = sim.dispatcher.store.subscriptions(None)
        assert again.id != subscription.id and again.auth.secret == CHAVE
