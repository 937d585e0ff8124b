"""Running the alerts: ``receiver alerts check|list`` on a real store (exit 1 while an alert
fires), the evaluator service of ``worker``, the lock that picks one serving process of
``serve --workers N``, and the Portal facts handed from the watch."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import update

from receiver.alerts import episodes
from receiver.config import SubscriptionSpec, load_settings
from receiver.runtime.alerting import FactsBox, alert_service, try_lock
from receiver.runtime.cli import main
from receiver.runtime.watch import WatchReport
from receiver.sources import dedup_key
from receiver.store import NOTES, Incoming, NoteFilter, NoteStatus, Store
from tests.conftest import migrated, upgraded_database

QUIET = {"silence": None, "oldest_pending_minutes": None}


def config(tmp_path: Path, **alerts: object) -> Path:
    upgraded_database(f"sqlite:///{tmp_path / 'receiver.db'}")  # `receiver db upgrade` was run
    path = tmp_path / "receiver.yaml"
    path.write_text(
        yaml.safe_dump(
            {"database_url": f"sqlite:///{tmp_path / 'receiver.db'}", "alerts": {**QUIET, **alerts}}
        )
    )
    return path


def quarantine_one(path: Path) -> None:
    store = Store.from_settings(load_settings(path))
    try:
        migrated(store)
        body = b"not json"
        [receipt] = store.append_now(
            [Incoming("pucomex", None, "161.148.1.1", {}, body, dedup_key("pucomex", body))]
        )
        with store.engine.begin() as conn:
            conn.execute(
                update(NOTES)
                .where(NOTES.c.id == receipt.id)
                .values(status=NoteStatus.QUARANTINED, routed=True)
            )
    finally:
        store.close()


def test_alerts_check_exits_1_while_an_alert_fires(tmp_path: Path) -> None:
    path = config(tmp_path)
    runner = CliRunner()
    quiet = runner.invoke(main, ["alerts", "check", "--config", str(path)])
    assert quiet.exit_code == 0, quiet.output
    assert "no alert firing" in quiet.output
    quarantine_one(path)
    firing = runner.invoke(main, ["alerts", "check", "--config", str(path)])
    assert firing.exit_code == 1, firing.output
    assert "FIRING quarantined: 1 notification(s) quarantined" in firing.output
    as_json = runner.invoke(main, ["alerts", "check", "--json", "--config", str(path)])
    assert as_json.exit_code == 1
    [record] = [json.loads(line) for line in as_json.output.splitlines()]
    assert record["rule"] == "quarantined" and record["firing"] is True
    listed = runner.invoke(main, ["alerts", "list", "--firing", "--config", str(path)])
    assert listed.exit_code == 0 and listed.output.startswith("FIRING quarantined")
    # Fired once, however many checks ran.
    store = Store.from_settings(load_settings(path))
    try:
        assert len(episodes(store)) == 1
    finally:
        store.close()


def test_alerts_check_with_every_rule_off_says_so(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        dead_letters_minutes=None,
        quarantined_minutes=None,
        store_refusing_writes=False,
    )
    result = CliRunner().invoke(main, ["alerts", "check", "--config", str(path)])
    assert result.exit_code == 0 and "no alert firing" in result.output


def test_the_worker_evaluates_when_alerts_run_in_worker(tmp_path: Path) -> None:
    path = config(tmp_path, run_in="worker", every_seconds=0.05)
    quarantine_one(path)
    settings = load_settings(path)
    assert alert_service(settings, Store("sqlite://"), command="serve") is None
    store = Store.from_settings(settings)
    service = alert_service(settings, store, command="worker")
    assert service is not None

    async def run_a_while() -> None:
        async with service():
            for _ in range(100):
                await asyncio.sleep(0.05)
                if episodes(store):
                    return

    try:
        asyncio.run(run_a_while())
        [episode] = episodes(store)
        assert episode.rule == "quarantined" and episode.firing
        assert episode.fired_sent == {"log"}
    finally:
        store.close()


def test_alerts_off_runs_nothing(tmp_path: Path) -> None:
    settings = load_settings(config(tmp_path, enabled=False))
    assert alert_service(settings, Store("sqlite://"), command="serve") is None


def test_one_serving_process_holds_the_lock_until_it_goes(tmp_path: Path) -> None:
    first = try_lock(str(tmp_path))
    assert first is not None
    assert try_lock(str(tmp_path)) is None
    first.close()  # the process holding it died: another takes it
    second = try_lock(str(tmp_path))
    assert second is not None
    second.close()


def test_the_watch_hands_its_report_and_old_facts_are_not_judged(tmp_path: Path) -> None:
    now = [datetime(2026, 12, 1, 12, tzinfo=UTC)]
    box = FactsBox(timedelta(minutes=30), clock=lambda: now[0])
    assert asyncio.run(box.facts()) is None
    spec = SubscriptionSpec(evento="dimp-registro-import", endpoint="https://x.example/w")
    box.put(WatchReport(not_active=[(spec, "not subscribed")], streaks={"e": 4}, unstored={}))
    facts = asyncio.run(box.facts())
    assert facts is not None
    assert facts.not_active == (("dimp-registro-import", "https://x.example/w", "not subscribed"),)
    assert facts.streaks == {"e": 4}
    now[0] += timedelta(minutes=31)  # the watch stopped reporting: the Portal rules cannot tell
    assert asyncio.run(box.facts()) is None


@pytest.mark.parametrize("run_in", ["serve", "worker"])
def test_run_in_is_validated_and_named(tmp_path: Path, run_in: str) -> None:
    settings = load_settings(config(tmp_path, run_in=run_in))
    other = "worker" if run_in == "serve" else "serve"
    store = Store("sqlite://")
    try:
        assert alert_service(settings, store, command=other) is None
        assert alert_service(settings, store, command=run_in) is not None
    finally:
        store.close()


def test_alerts_check_asks_the_real_simulator_and_recovers_nothing(tmp_path: Path) -> None:
    """The Portal rules end to end: one subscription of receiver.yaml never made, another whose
    deliveries fail (nothing listens on port 9), against the real Portal simulator."""
    from receiver.config import settings_from_mapping
    from receiver.runtime.alerting import check_once
    from receiver.simulator import run_simulator
    from receiver.simulator.portal_api import PortalAuthority
    from tests.dispatcher_support import dispatcher_settings, sqlite_url

    failing = SubscriptionSpec(evento="dimp-situacao-import", endpoint="https://127.0.0.1:9/hook")
    missing = SubscriptionSpec(evento="dimp-registro-import", endpoint="https://127.0.0.1:9/hook")

    async def scenario() -> tuple[list[tuple[str, str]], list[str]]:
        simulator = dispatcher_settings(sqlite_url(tmp_path), interval_seconds=0.01)
        authority = PortalAuthority(clients={"sefaz": "segredo-1234"})
        async with run_simulator(simulator, authority=authority) as sim:
            settings = settings_from_mapping(
                {
                    "database_url": f"sqlite:///{tmp_path / 'receiver.db'}",
                    "portal": {
                        "base_url": sim.url,
                        "client_id": "sefaz",
                        "client_secret": "segredo-1234",
                        "timeout_seconds": 5,
                        "max_retries": 1,
                    },
                    "subscriptions": [failing.model_dump(), missing.model_dump()],
                    "alerts": QUIET,
                },
                origin="test",
            )
            from receiver.portal import PortalClient

            assert settings.portal is not None
            async with PortalClient(settings.portal) as client:
                await client.subscriptions.create(failing.evento, failing.endpoint)
            result = await sim.dispatcher.emit(failing.evento, {"numero": "26BR0000000321"})
            await sim.dispatcher.wait_for(result.delivery_ids, within=10)
            store = Store.from_settings(settings)
            try:
                migrated(store)
                evaluation = await check_once(settings, store)
                notes = list(store.notes(NoteFilter()))
            finally:
                store.close()
        firing = [(episode.rule, episode.subject) for episode in evaluation.firing]
        return firing, [note["id"] for note in notes]

    firing, stored = asyncio.run(scenario())
    assert sorted(firing) == [
        ("subscription_inactive", f"{missing.evento} -> {missing.endpoint}"),
        ("unstored_failures", ""),
    ]
    assert stored == []  # a check tells; recovery is serve's (or `receiver portal recover`)
