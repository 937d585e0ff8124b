"""Recovery of failed deliveries: the failure search by date (on a fake of the seed's API) and the
real store: exactly the missing notifications are stored, once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import date

import pytest

from receiver.config import PortalSettings
from receiver.portal import PortalClient
from receiver.runtime.recovery import RecoveryReport, recover
from receiver.sources import dedup_key
from receiver.store import Incoming, NoteFilter, Store
from tests.conftest import migrated
from tests.integration.portal.support import FakePortal

DAY = "17092018"


def body(n: int, evento: str = "duimp.registro") -> str:
    dados = {"numero": f"18BR{n:010d}", "versao": "1"}
    return json.dumps({"evento": evento, "dataHora": "2018-09-17T10:00:00-03:00", "dados": dados})


def failure(record_id: int, content: str, day: str = DAY) -> dict[str, object]:
    return {
        "id": record_id,
        "data": day,
        "descricao": "Read timed out after 3500 ms",
        "evento": json.loads(content)["evento"],
        "conteudo": content,
    }


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    migrated(store)
    yield store
    store.close()


def ingest(store: Store, content: str) -> None:
    raw = content.encode()
    store.append_now([Incoming("pucomex", None, "161.148.1.1", {}, raw, dedup_key("pucomex", raw))])


def make_portal() -> tuple[FakePortal, list[str]]:
    contents = [body(n) for n in range(1, 6)] + [body(6, "lpco.registro")]
    portal = FakePortal()
    record_id = 1
    for content in contents:
        for _attempt in range(3):  # 3 tries, 5 minutes apart, each one recorded
            portal.failures.append(failure(record_id, content))
            record_id += 1
    portal.failures.append(failure(99, body(77), day="18092018"))  # another day
    return portal, contents


def run_recovery(portal: FakePortal, store: Store, day: str | date | None = DAY) -> RecoveryReport:
    async def go() -> RecoveryReport:
        settings = PortalSettings(base_url="https://portal.test", max_retries=0)
        async with PortalClient(settings, transport=portal.transport()) as client:
            return await recover(client.subscriptions, store, day)

    return asyncio.run(go())


def test_recovery_stores_exactly_the_missing_notifications(store: Store) -> None:
    portal, contents = make_portal()
    # The receiver did acknowledge two of them (the Portal's 200 got lost, say).
    ingest(store, contents[0])
    ingest(store, contents[3])
    assert store.count_notes() == 2

    report = run_recovery(portal, store)
    assert (report.seen, report.distinct, report.already_stored, report.recovered) == (18, 6, 2, 4)
    recovered = [row for row in store.notes(NoteFilter()) if row["recovered"]]
    assert sorted(bytes(row["body"]).decode() for row in recovered) == sorted(
        contents[i] for i in (1, 2, 4, 5)
    )
    assert sorted(row["id"] for row in recovered) == sorted(report.ids)
    for row in recovered:
        assert row["source"] == "pucomex" and row["duplicate_of"] is None
        assert row["status"] == "pending"  # handlers will run, as for an ingested one
        assert row["event"] == json.loads(bytes(row["body"]))["evento"]
        assert json.loads(row["headers"])["x-portal-failure-date"] == DAY
    assert store.count_notes() == 6
    # The failure search asked for that day, in the seed's ddMMyyyy form.
    (search,) = portal.calls("GET", "/portal/api/ext/webhook/falhas")
    assert search.url.params["data"] == DAY and json.loads(search.content) == {"data": DAY}

    again = run_recovery(portal, store)
    assert (again.seen, again.already_stored, again.recovered) == (18, 6, 0)
    assert store.count_notes() == 6


def test_an_ingest_after_recovery_is_a_duplicate(store: Store) -> None:
    portal, contents = make_portal()
    run_recovery(portal, store)
    raw = contents[2].encode()
    (receipt,) = store.append_now(
        [Incoming("pucomex", None, "161.148.1.1", {}, raw, dedup_key("pucomex", raw))]
    )
    assert receipt.duplicate


def test_a_date_object_and_no_failures(store: Store) -> None:
    portal, _ = make_portal()
    report = run_recovery(portal, store, date(2018, 9, 18))
    assert (report.date, report.seen, report.recovered) == ("18092018", 1, 1)
    empty = run_recovery(portal, store, "01012019")
    assert (empty.seen, empty.recovered) == (0, 0)
    assert "0 recovered" in empty.summary()
