"""No notification stops the inbox: the planner sets the one it cannot route aside, with its reason.

Real stores (SQLite file and PostgreSQL); poison made the way senders make it (bodies), or the way
a store refuses a write (a trigger that raises for one notification's jobs).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver import Context, Notification, Router, storable
from receiver.config import Settings
from receiver.sources import dedup_key
from receiver.store import Incoming, Store
from receiver.worker import planner
from receiver.worker.routing import Routing
from tests.integration.worker.test_worker import statuses, until, working
from tests.unit.test_sources import BODIES

pytestmark = pytest.mark.anyio

_numbers = itertools.count()


def note(body: bytes, source: str = "pucomex", event: str | None = None) -> Incoming:
    return Incoming(source, event, "203.0.113.7", {}, body, dedup_key(source, body))


def innocent() -> Incoming:
    n = next(_numbers)
    return note(json.dumps({"evento": "duimp.registro", "dados": {"numero": f"{n}"}}).encode())


def router() -> Router:
    routes = Router()

    @routes.on("pucomex", "duimp.registro")
    async def fetch(note: Notification, ctx: Context) -> None:
        return None

    @routes.on("invoicy", "nfe.*")
    async def nfe(note: Notification, ctx: Context) -> None:
        return None

    return routes


def routed_to(store: Store, note_id: str) -> tuple[str, list[str]]:
    row = store.note(note_id)
    assert row is not None and row["routed"]
    return row["status"], [job["handler"].rsplit(".", 1)[-1] for job in store.jobs_of(note_id)]


POISON = [
    pytest.param(
        "pucomex",
        b'{"evento":"\\ud800"}',
        "event '\\\\ud800' cannot be stored: contains a lone surrogate (U+D800)",
        id="lone-surrogate-event",
    ),
    pytest.param(
        "pucomex",
        json.dumps({"evento": "a" * 121}).encode(),
        "cannot be stored: longer than 120 characters (121)",
        id="121-character-event",
    ),
    pytest.param(
        "pucomex",
        b'{"evento":"duimp\\u0000registro"}',
        "event 'duimp\\\\x00registro' cannot be stored: contains a NUL character",
        id="nul-in-event",
    ),
    pytest.param(
        "invoicy",
        '{"Modulo":"\u00b2","TipoNotificacao":"7"}'.encode(),
        "unreadable: unknown InvoiCy module None",
        id="superscript-two-module",
    ),
    pytest.param(
        "invoicy",
        b'{"Modulo":"%s","TipoNotificacao":"7"}' % (b"1" * 5000),
        "unreadable: unknown InvoiCy module None",
        id="5000-digit-module",
    ),
]


@pytest.mark.parametrize(("source", "body", "reason"), POISON)
def test_a_poison_notification_is_quarantined_and_its_batch_routed(
    store: Store, settings: Settings, source: str, body: bytes, reason: str
) -> None:
    routing = Routing([router()], settings.sources)
    before = store.append_now([innocent()])
    [poison] = store.append_now([note(body, source)])
    after = store.append_now([innocent(), note(b'{"Modulo":1,"TipoNotificacao":7}', "invoicy")])
    assert planner.plan(store, routing) == 4
    for receipt in (*before, *after):
        assert routed_to(store, receipt.id)[0] == "pending"
    assert routed_to(store, poison.id) == ("quarantined", [])
    row = store.note(poison.id)
    assert row is not None
    assert reason in row["error"], row["error"]
    assert row["body"] == body  # kept as received
    assert planner.plan(store, routing) == 0  # settled for good: not planned again on every poll


async def test_a_poison_notification_does_not_stop_the_worker(
    store: Store, settings: Settings
) -> None:
    first = store.append_now([innocent()])
    store.append_now([note(b'{"evento":"\\ud800"}'), note(b'{"Modulo":"\xc2\xb2"}', "invoicy")])
    later = store.append_now([innocent(), innocent()])
    async with working(store, settings, router()):
        await until(lambda: all(statuses(store)[r.id] == "done" for r in (*first, *later)))
    assert sorted(statuses(store).values()) == [*["done"] * 3, *["quarantined"] * 2]


@contextmanager
def jobs_refused_for(store: Store, note_id: str) -> Iterator[None]:
    """The database refuses the jobs of one notification (a trigger), as a store refuses a value."""
    if store.dialect == "sqlite":
        create = [
            "CREATE TRIGGER refuse_jobs BEFORE INSERT ON jobs "
            f"WHEN NEW.notification_id = '{note_id}' "
            "BEGIN SELECT RAISE(ABORT, 'job refused (injected)'); END"
        ]
        drop = ["DROP TRIGGER IF EXISTS refuse_jobs"]
    else:
        create = [
            "CREATE OR REPLACE FUNCTION refuse_jobs() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.notification_id = '{note_id}' THEN RAISE EXCEPTION USING "
            "ERRCODE = '22023', MESSAGE = 'job refused (injected)'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER refuse_jobs BEFORE INSERT ON jobs "
            "FOR EACH ROW EXECUTE FUNCTION refuse_jobs()",
        ]
        drop = [
            "DROP TRIGGER IF EXISTS refuse_jobs ON jobs",
            "DROP FUNCTION IF EXISTS refuse_jobs()",
        ]
    try:
        with store.engine.begin() as conn:
            for statement in create:
                conn.exec_driver_sql(statement)
        yield
    finally:
        with store.engine.begin() as conn:
            for statement in drop:
                conn.exec_driver_sql(statement)


def test_a_plan_the_store_refuses_is_retried_one_by_one_and_only_the_culprit_quarantined(
    store: Store, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    routing = Routing([router()], settings.sources)
    receipts = store.append_now([innocent() for _ in range(5)])
    culprit = receipts[2]
    with jobs_refused_for(store, culprit.id), caplog.at_level(logging.WARNING):
        assert planner.plan(store, routing) == 5
    assert routed_to(store, culprit.id) == ("quarantined", [])
    row = store.note(culprit.id)
    assert row is not None
    assert (
        row["error"].startswith("cannot be stored: ") and "job refused (injected)" in row["error"]
    )
    assert row["event"] is None  # the stored event, unchanged
    for receipt in (*receipts[:2], *receipts[3:]):
        assert routed_to(store, receipt.id) == ("pending", ["fetch"])
    assert "planning them one by one" in caplog.text
    assert "cannot reach the store" not in caplog.text


async def test_a_planner_failure_does_not_stop_claiming(
    store: Store,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unforeseen error while routing is logged as what it is, and planned jobs still run."""
    [planned] = store.append_now([innocent()])
    assert planner.plan(store, Routing([router()], settings.sources)) == 1
    calls = 0

    def broken(*args: object, **kwargs: object) -> tuple[int, list[object]]:
        nonlocal calls
        calls += 1
        raise RuntimeError("planner bug (injected)")

    monkeypatch.setattr(planner, "plan_leasing", broken)
    with caplog.at_level(logging.INFO, logger="receiver.worker"):
        async with working(store, settings, router()):
            await until(lambda: statuses(store)[planned.id] == "done")
            await asyncio.sleep(0.3)  # a dozen polls: planning is not retried on each of them
    assert "routing new notifications failed (RuntimeError: planner bug (injected))" in caplog.text
    assert "cannot reach the store" not in caplog.text
    assert calls == 1


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=BODIES,
    source=st.sampled_from(["pucomex", "invoicy", "sintegre", "erp"]),
    # Any text at all, as an event-type header could carry it: what the store cannot hold is
    # left out at ingest (the note is kept quarantined), the rest is planned.
    event=st.none() | st.text(st.characters(codec=None, exclude_categories=()), max_size=130),
)
def test_any_notification_in_a_batch_is_routed_or_quarantined_and_the_rest_routed(
    store: Store, settings: Settings, body: bytes, source: str, event: str | None
) -> None:
    """Whatever one notification holds (body, stored event), a plan of its batch completes, it is
    routed or quarantined with a reason, and every other note of the batch gets its jobs."""
    routing = Routing([router()], settings.sources)
    [first] = store.append_now([innocent()])
    [anything] = store.append_now([note(body, source, event)])
    [last] = store.append_now([innocent()])
    row = store.note(anything.id)
    assert row is not None
    # A receipt (drawn before), or kept quarantined at ingest: nothing routes it again.
    settled = anything.duplicate_of is not None or row["routed"]
    assert planner.plan(store, routing, limit=10) == (2 if settled else 3)
    assert routed_to(store, first.id) == ("pending", ["fetch"])
    assert routed_to(store, last.id) == ("pending", ["fetch"])
    if settled:
        return
    status, handlers = routed_to(store, anything.id)
    row = store.note(anything.id)
    assert row is not None
    if status == "quarantined":
        assert not handlers and row["error"]
        assert storable.problem(row["error"]) is None
    else:
        assert status == "pending" and handlers and row["error"] is None
