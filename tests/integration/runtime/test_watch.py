"""serve's watch of the Portal's retry budget, against a real store: inactive subscriptions,
recovery at once when the failure search holds what we never stored, failure streaks, and a
Portal that does not answer; then the whole loop against the real simulator."""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from receiver import metrics
from receiver.config import SubscriptionSpec
from receiver.errors import PortalError
from receiver.portal import PortalClient
from receiver.portal.subscriptions import FailureRecord, Subscription, format_date, portal_today
from receiver.runtime.watch import Watch, WatchReport
from receiver.sources import dedup_key
from receiver.store import Incoming, NoteFilter, Store
from tests.conftest import migrated

HOOK = "https://sefaz.example.gov.br/webhooks/pucomex"
REGISTRO = SubscriptionSpec(evento="dimp-registro-import", endpoint=HOOK)
SITUACAO = SubscriptionSpec(evento="dimp-situacao-import", endpoint=HOOK)


def content(n: int) -> str:
    return json.dumps({"identificacao": {"numero": f"26BR{n:010d}", "versao": 1}})


class Portal:
    """The two calls the watch makes, with records by ddMMyyyy and a way to fail."""

    def __init__(self, subscriptions: list[Subscription]) -> None:
        self.subscriptions = subscriptions
        self.records: dict[str, list[FailureRecord]] = {}
        self.asked: list[str] = []
        self.down = False

    def fail(self, day: date, evento: str, n: int) -> None:
        data = format_date(day)
        record = FailureRecord(len(self.asked) + n, data, "HTTP 500", evento, content(n))
        self.records.setdefault(data, []).append(record)

    async def list(self, inactive: bool = False) -> list[Subscription]:
        if self.down:
            raise PortalError("GET /portal/api/ext/webhook: ConnectError", endpoint="/x")
        assert inactive
        return self.subscriptions

    async def failures(self, data: date | str | None = None) -> builtins.list[FailureRecord]:
        assert isinstance(data, date)
        self.asked.append(format_date(data))
        return self.records.get(format_date(data), [])


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    migrated(store)
    yield store
    store.close()


def receive(store: Store, evento: str, n: int) -> None:
    raw = content(n).encode()
    store.append_now(
        [Incoming("pucomex", evento, "161.148.1.1", {}, raw, dedup_key("pucomex", raw))]
    )


def gauge(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def test_an_inactive_subscription_is_reported_once_with_the_sync_advice(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    portal = Portal(
        [
            Subscription(1, REGISTRO.evento, HOOK),
            Subscription(2, SITUACAO.evento, HOOK, ativo=False, motivo_inativacao="30 dias"),
        ]
    )
    watch = Watch(portal, store, [REGISTRO, SITUACAO])
    with caplog.at_level(logging.WARNING, logger="receiver.portal.watch"):
        first = asyncio.run(watch.cycle())
        asyncio.run(watch.cycle())
    assert first is not None
    assert first.not_active == [(SITUACAO, "cancelled by the Portal: 30 dias")]
    warnings = [r.getMessage() for r in caplog.records if "not active" in r.getMessage()]
    assert len(warnings) == 1 and "receiver portal subscriptions sync" in warnings[0]
    assert gauge("receiver_portal_subscription_active", evento=SITUACAO.evento, endpoint=HOOK) == 0
    assert gauge("receiver_portal_subscription_active", evento=REGISTRO.evento, endpoint=HOOK) == 1
    assert gauge("receiver_portal_subscriptions_not_active") == 1


def test_what_the_portal_gave_up_on_and_we_never_stored_is_recovered_at_once(
    store: Store,
) -> None:
    today = portal_today()
    portal = Portal([Subscription(1, REGISTRO.evento, HOOK)])
    receive(store, REGISTRO.evento, 1)  # acknowledged after all: not recovered again
    for n in (1, 2, 3):
        portal.fail(today, REGISTRO.evento, n)
    portal.fail(today - timedelta(days=1), REGISTRO.evento, 4)  # around midnight
    before = gauge("receiver_portal_recovered_total") or 0.0
    watch = Watch(portal, store, [REGISTRO])
    report = asyncio.run(watch.cycle(today))
    assert report is not None and report.recovered == 3
    recovered = [r for r in store.notes(NoteFilter()) if r["recovered"]]
    assert sorted(r["body"] for r in recovered) == sorted(content(n).encode() for n in (2, 3, 4))
    assert gauge("receiver_portal_recovered_total") == before + 3
    again = asyncio.run(watch.cycle(today))
    assert again is not None and again.recovered == 0


def test_consecutive_days_with_only_failures_are_counted(store: Store) -> None:
    # Our receipts are stored today; the watch is told today is 4 days later, so they fall on
    # "day -4". Failures on days -3 and -1 and 0, day -2 quiet: a run of 4 days.
    today = portal_today() + timedelta(days=4)
    receive(store, REGISTRO.evento, 100)
    portal = Portal(
        [Subscription(1, REGISTRO.evento, HOOK), Subscription(2, SITUACAO.evento, HOOK)]
    )
    for back, n in ((0, 1), (1, 2), (3, 3)):
        portal.fail(today - timedelta(days=back), REGISTRO.evento, n)
    portal.fail(today - timedelta(days=6), SITUACAO.evento, 9)  # long ago: not a running streak
    watch = Watch(portal, store, [REGISTRO, SITUACAO])
    report = asyncio.run(watch.cycle(today))
    assert report is not None and report.streaks == {REGISTRO.evento: 4, SITUACAO.evento: 0}
    assert gauge("receiver_portal_failure_streak_days", evento=REGISTRO.evento) == 4
    # Days before yesterday are asked for once.
    asked = len(portal.asked)
    asyncio.run(watch.cycle(today))
    assert len(portal.asked) - asked == 2


def test_an_alias_counts_as_its_target_for_receipts(store: Store) -> None:
    today = portal_today()
    receive(store, "duimp.registro", 1)
    portal = Portal([Subscription(1, "sefaz-registro", HOOK)])
    portal.fail(today, "sefaz-registro", 2)
    spec = SubscriptionSpec(evento="sefaz-registro", endpoint=HOOK)
    watch = Watch(portal, store, [spec], aliases={"sefaz-registro": "duimp.registro"})
    report = asyncio.run(watch.cycle(today))
    assert report is not None and report.streaks == {"sefaz-registro": 0}


def test_a_portal_that_does_not_answer_is_logged_once_and_serve_goes_on(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    portal = Portal([])
    portal.down = True
    watch = Watch(portal, store, [REGISTRO])
    with caplog.at_level(logging.INFO, logger="receiver.portal.watch"):
        assert asyncio.run(watch.cycle()) is None
        assert asyncio.run(watch.cycle()) is None
        assert gauge("receiver_portal_watch_up") == 0
        portal.down = False
        assert asyncio.run(watch.cycle()) is not None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "trying again next cycle" in errors[0].getMessage()
    assert "works again" in caplog.text
    assert gauge("receiver_portal_watch_up") == 1


def test_the_watch_recovers_from_the_real_simulators_failure_search(
    store: Store, tmp_path: Path
) -> None:
    from receiver.simulator import run_simulator
    from receiver.simulator.portal_api import PortalAuthority
    from tests.dispatcher_support import dispatcher_settings, sqlite_url
    from tests.integration.portal.support import portal_settings

    async def scenario() -> int:
        settings = dispatcher_settings(sqlite_url(tmp_path), interval_seconds=0.01)
        authority = PortalAuthority(clients={"sefaz": "segredo-1234"})
        async with run_simulator(settings, authority=authority) as sim:
            client = PortalClient(
                portal_settings(sim.url, None, client_id="sefaz", client_secret="segredo-1234")
            )
            async with client:
                # Nothing listens on port 9: the Portal gives up after 3 tries.
                await client.subscriptions.create(REGISTRO.evento, "https://127.0.0.1:9/hook")
                result = await sim.dispatcher.emit(
                    REGISTRO.evento, {"numero": "26BR0000000198", "versao": 1}
                )
                await sim.dispatcher.wait_for(result.delivery_ids, within=10)
                watch = Watch(client.subscriptions, store, [REGISTRO])
                report = await watch.cycle()
        assert report is not None
        return report.recovered

    assert asyncio.run(scenario()) == 1
    [note] = list(store.notes(NoteFilter()))
    assert note["recovered"] and note["event"] == REGISTRO.evento
    assert json.loads(note["body"])["identificacao"]["numero"] == "26BR0000000198"


def test_contents_left_unstored_are_counted_and_handed_to_the_alerts(store: Store) -> None:
    today = portal_today()
    portal = Portal([Subscription(1, REGISTRO.evento, HOOK)])
    receive(store, REGISTRO.evento, 1)
    for n in (1, 2, 2, 3):  # content 2 failed twice: one content
        portal.fail(today, REGISTRO.evento, n)
    reports: list[WatchReport] = []
    # The alerts' own watch (receiver worker, receiver alerts check) recovers nothing.
    looking = Watch(portal, store, [REGISTRO], recover=False, on_report=reports.append)
    report = asyncio.run(looking.cycle(today))
    assert report is not None and report.recovered == 0
    assert report.unstored == {format_date(today): 2, format_date(today - timedelta(days=1)): 0}
    assert gauge("receiver_portal_failures_unstored") == 2
    assert reports == [report]
    assert [r for r in store.notes(NoteFilter()) if r["recovered"]] == []
    # serve's watch recovers them first: nothing is left unstored.
    recovering = asyncio.run(Watch(portal, store, [REGISTRO]).cycle(today))
    assert recovering is not None and recovering.recovered == 2
    assert sum(recovering.unstored.values()) == 0
    assert gauge("receiver_portal_failures_unstored") == 0
