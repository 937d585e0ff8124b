"""The dispatcher's store on a real SQLite file and on the real PostgreSQL server: subscriptions and
ownership, the outbox written in one transaction, exclusive claims, attempts, failure records."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import insert

from receiver.dispatcher import Dispatcher, DispatchStore, OutboundAuth, UnknownSubscription
from receiver.dispatcher.outbox import AttemptRecord
from receiver.dispatcher.records import AttemptOutcome, EmitRequest, EmitResult
from receiver.dispatcher.tables import SUBSCRIPTIONS, AuthType, DeliveryStatus
from receiver.dispatcher.validation import SubscriptionInput, brasilia_date
from receiver.store.tables import utcnow
from tests.dispatcher_support import dispatcher_settings, postgres_or_skip, sqlite_url

SUB = SubscriptionInput("duimp.registro", "https://sefaz.example/hook", None)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    return postgres_or_skip()


@pytest.fixture
def store(url: str) -> Iterator[DispatchStore]:
    store = DispatchStore(url)
    store.upgrade_schema()
    yield store
    store.close()


def test_subscriptions_belong_to_their_owner(store: DispatchStore) -> None:
    now = utcnow()
    auth = OutboundAuth(AuthType.BASIC, "ons", "senha")
    mine = store.add_subscription("a", SubscriptionInput(SUB.evento, SUB.endpoint, auth), now)
    theirs = store.add_subscription("b", SUB, now)
    assert [s.id for s in store.subscriptions("a")] == [mine.id]
    assert store.subscription(mine.id, "a").auth == auth
    with pytest.raises(UnknownSubscription):
        store.subscription(theirs.id, "a")
    with pytest.raises(UnknownSubscription):
        store.update_subscription(theirs.id, "a", SUB, now)
    with pytest.raises(UnknownSubscription):
        store.delete_subscription(theirs.id, "a", now)
    changed = SubscriptionInput("duimp.cancelamento", "https://other.example/", None)
    # An update without credentials keeps the ones it had.
    assert store.update_subscription(mine.id, "a", changed, now).auth == auth
    store.delete_subscription(mine.id, "a", now)
    assert store.subscriptions("a") == []
    assert [s.id for s in store.subscriptions(None)] == [theirs.id]


def test_ids_go_past_32_bits(store: DispatchStore) -> None:
    # Number(10): ids up to 9,999,999,999 must fit the column.
    now = utcnow()
    with store.engine.begin() as conn:
        conn.execute(
            insert(SUBSCRIPTIONS),
            {
                "id": 9_999_999_998,
                "owner": "a",
                "evento": "x",
                "endpoint": "https://a.example/",
                "auth_type": "none",
                "deleted": False,
                "created_at": now,
                "updated_at": now,
            },
        )
    # On PostgreSQL an INTEGER column would refuse it ("out of range"); BIGINT keeps it.
    assert store.subscription(9_999_999_998, "a").endpoint == "https://a.example/"


def test_an_event_and_its_deliveries_are_stored_together(store: DispatchStore) -> None:
    now = utcnow()
    first = store.add_subscription("a", SUB, now)
    second = store.add_subscription("b", SUB, now)
    store.add_subscription("a", SubscriptionInput("lpco.registro", SUB.endpoint, None), now)
    result = store.record_event("duimp.registro", b'{"x":1}', "application/json", now, "key-1")
    states = store.deliveries(ids=result.delivery_ids)
    assert sorted(state.subscription_id for state in states) == [first.id, second.id]
    assert {state.status for state in states} == {"pending"}
    again = store.record_event("duimp.registro", b'{"x":1}', "application/json", now, "key-1")
    assert (again.event_id, again.delivery_ids, again.duplicate) == (
        result.event_id,
        result.delivery_ids,
        True,
    )


def test_many_events_are_stored_in_one_call_and_repeated_keys_answered_once(
    store: DispatchStore,
) -> None:
    now = utcnow()
    registro = store.add_subscription("a", SUB, now)
    cancel = store.add_subscription(
        "a", SubscriptionInput("duimp.cancelamento", SUB.endpoint, None), now
    )
    [before] = store.record_events([EmitRequest(SUB.evento, b"0", "application/json", now, "k0")])
    results = store.record_events(
        [
            EmitRequest(SUB.evento, b"1", "application/json", now, "k1"),
            EmitRequest("duimp.cancelamento", b"2", "application/json", now, None),
            EmitRequest(SUB.evento, b"1", "application/json", now, "k1"),  # repeated in the call
            EmitRequest(SUB.evento, b"0", "application/json", now, "k0"),  # stored before
            EmitRequest("lpco.registro", b"3", "application/json", now, None),  # nobody listens
        ]
    )
    first, cancelled, again, old, unheard = results
    assert not first.duplicate and not cancelled.duplicate and not unheard.duplicate
    assert (again.event_id, again.delivery_ids, again.duplicate) == (
        first.event_id,
        first.delivery_ids,
        True,
    )
    assert (old.event_id, old.delivery_ids, old.duplicate) == (
        before.event_id,
        before.delivery_ids,
        True,
    )
    assert unheard.delivery_ids == ()
    states = {s.id: s for s in store.deliveries(ids=[*first.delivery_ids, *cancelled.delivery_ids])}
    assert [states[i].subscription_id for i in first.delivery_ids] == [registro.id]
    assert [states[i].subscription_id for i in cancelled.delivery_ids] == [cancel.id]
    assert len({first.event_id, cancelled.event_id, unheard.event_id, before.event_id}) == 4


def test_concurrent_emits_with_one_key_store_one_event(store: DispatchStore) -> None:
    now = utcnow()
    store.add_subscription("a", SUB, now)
    results: list[EmitResult] = []
    start = threading.Barrier(4)

    def emit() -> None:
        start.wait()
        for n in range(10):
            request = EmitRequest(SUB.evento, b"%d" % n, "application/json", now, f"race-{n}")
            results.extend(store.record_events([request]))

    threads = [threading.Thread(target=emit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 40
    assert len({r.event_id for r in results}) == 10  # one event per key, whoever won
    assert sum(not r.duplicate for r in results) == 10


def test_a_long_list_of_ids_is_read_in_chunks(
    store: DispatchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = utcnow()
    mine = store.add_subscription("a", SUB, now)
    store.add_subscription("b", SUB, now)
    ids = [
        i
        for n in range(5)
        for i in store.record_event(
            SUB.evento, b"%d" % n, "application/json", now, None
        ).delivery_ids
    ]
    monkeypatch.setattr(DispatchStore, "IDS_PER_QUERY", 3)
    unknown = max(ids) + 100
    # Every known id once, in id order, whatever order and repeats they were asked in.
    wanted = [*reversed(ids), ids[0], unknown]
    assert [s.id for s in store.deliveries(ids=wanted)] == sorted(ids)
    states = store.deliveries(ids=wanted, subscription_id=mine.id, owner="a")
    assert [s.id for s in states] == sorted(s.id for s in states)
    assert len(states) == 5
    assert {s.subscription_id for s in states} == {mine.id}


def test_a_delivery_is_claimed_by_one_taker_only(store: DispatchStore) -> None:
    now = utcnow()
    store.add_subscription("a", SUB, now)
    ids = [
        delivery
        for n in range(40)
        for delivery in store.record_event(
            "duimp.registro", b"{}", "application/json", now
        ).delivery_ids
    ]
    won: list[int] = []
    lock = threading.Lock()

    def take(delivery_id: int) -> None:
        if store.outbox.claim(delivery_id, utcnow(), utcnow() + timedelta(seconds=30)):
            with lock:
                won.append(delivery_id)

    threads = [threading.Thread(target=take, args=(i,)) for i in ids for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == sorted(ids)  # each claimed exactly once
    assert store.outbox.due(utcnow(), 100) == []


def test_attempts_failures_and_the_final_state(store: DispatchStore) -> None:
    now = utcnow()
    subscription = store.add_subscription("a", SUB, now)
    store.add_subscription("b", SUB, now)
    result = store.record_event("duimp.registro", b'{"n":1}', "application/json", now)
    due = {d.subscription_id: d for d in store.outbox.due(now, 10)}
    delivery = due[subscription.id]
    for number in (1, 2, 3):
        claimed = store.outbox.claim(delivery.id, utcnow(), utcnow() + timedelta(seconds=30))
        assert claimed == number  # the claim counts the attempt
        failed = AttemptOutcome(False, 500, "HTTP 500", utcnow(), utcnow())
        status = store.outbox.record_attempt(
            delivery, failed, number=number, max_attempts=3, interval=timedelta(seconds=0)
        )
        assert status is (DeliveryStatus.FAILED if number == 3 else DeliveryStatus.PENDING)
    found = store.failures("a", brasilia_date(utcnow()))
    assert [f["descricao"] for f in found] == [f"attempt {n} of 3: HTTP 500" for n in (1, 2, 3)]
    assert {f["conteudo"] for f in found} == {'{"n":1}'}
    assert store.failures("b", brasilia_date(utcnow())) == []
    # Reenviar Pendentes gives it a fresh round; Enviar Tudo queues the latest event again.
    assert store.resend_pending(subscription.id, "a", utcnow()) == [delivery.id]
    (latest,) = store.send_latest(subscription.id, "a", utcnow())
    states = {s.id: s for s in store.deliveries(subscription_id=subscription.id, owner="a")}
    assert (states[delivery.id].status, states[delivery.id].attempts) == ("pending", 0)
    assert states[latest].event_id == result.event_id
    with pytest.raises(UnknownSubscription):
        store.resend_pending(subscription.id, "b", utcnow())


def test_an_attempt_given_back_on_shutdown_is_not_counted(store: DispatchStore) -> None:
    now = utcnow()
    store.add_subscription("a", SUB, now)
    (delivery_id,) = store.record_event(
        "duimp.registro", b"{}", "application/json", now
    ).delivery_ids
    assert store.outbox.claim(delivery_id, utcnow(), utcnow() + timedelta(seconds=30)) == 1
    store.outbox.release(delivery_id, 2, utcnow())  # not this claim's number: nothing happens
    assert store.deliveries(ids=[delivery_id])[0].status == "sending"
    store.outbox.release(delivery_id, 1, utcnow())
    (state,) = store.deliveries(ids=[delivery_id])
    assert (state.status, state.attempts) == ("pending", 0)
    assert store.outbox.claim(delivery_id, utcnow(), utcnow() + timedelta(seconds=30)) == 1


def test_a_late_answer_does_not_undo_the_attempt_that_took_its_place(
    store: DispatchStore,
) -> None:
    """Attempt 1's lease runs out before its answer; attempt 2 is claimed meanwhile. Attempt 1's
    failure is recorded (it was made) but leaves the delivery to attempt 2, whose 200 counts."""
    now = utcnow()
    store.add_subscription("a", SUB, now)
    store.record_event("duimp.registro", b'{"n":1}', "application/json", now)
    (delivery,) = store.outbox.due(now, 10)
    assert store.outbox.claim(delivery.id, utcnow(), utcnow() - timedelta(seconds=1)) == 1
    assert store.outbox.claim(delivery.id, utcnow(), utcnow() + timedelta(seconds=30)) == 2
    late = AttemptOutcome(False, 500, "HTTP 500", utcnow(), utcnow())
    status = store.outbox.record_attempt(
        delivery, late, number=1, max_attempts=3, interval=timedelta(0)
    )
    assert status is DeliveryStatus.SENDING  # still attempt 2's
    ok = AttemptOutcome(True, 200, "HTTP 200 (receipt)", utcnow(), utcnow())
    status = store.outbox.record_attempt(
        delivery, ok, number=2, max_attempts=3, interval=timedelta(0)
    )
    assert status is DeliveryStatus.DELIVERED
    (state,) = store.deliveries(ids=[delivery.id])
    assert (state.status, state.attempts) == ("delivered", 2)
    assert [f["descricao"] for f in store.failures("a", brasilia_date(utcnow()))] == [
        "attempt 1 of 3: HTTP 500"
    ]


def test_a_late_receipt_for_the_last_attempt_still_counts(store: DispatchStore) -> None:
    """The third attempt's lease ran out, so the delivery was given up; its 200 then arrives."""
    now = utcnow()
    store.add_subscription("a", SUB, now)
    store.record_event("duimp.registro", b"{}", "application/json", now)
    (delivery,) = store.outbox.due(now, 10)
    for number in (1, 2, 3):
        expired = utcnow() - timedelta(seconds=1)
        assert store.outbox.claim(delivery.id, utcnow(), expired) == number
    assert store.outbox.claim(delivery.id, utcnow(), utcnow() + timedelta(seconds=30)) is None
    assert store.deliveries(ids=[delivery.id])[0].status == "failed"
    ok = AttemptOutcome(True, 200, "HTTP 200 (receipt)", utcnow(), utcnow())
    status = store.outbox.record_attempt(
        delivery, ok, number=3, max_attempts=3, interval=timedelta(0)
    )
    assert status is DeliveryStatus.DELIVERED


def test_outcomes_and_claims_are_written_together_in_order(store: DispatchStore) -> None:
    now = utcnow()
    store.add_subscription("a", SUB, now)
    for _ in range(3):
        store.record_event("duimp.registro", b"{}", "application/json", now)
    first, second, third = store.outbox.due(now, 10)
    lease, interval = timedelta(seconds=30), timedelta(seconds=60)
    assert store.outbox.write_many([first.id, second.id], lease, 3, interval) == [1, 1]
    failed = AttemptOutcome(False, 503, "HTTP 503", utcnow(), utcnow())
    ok = AttemptOutcome(True, 200, "HTTP 200 (receipt)", utcnow(), utcnow())
    written = store.outbox.write_many(
        [
            third.id,
            AttemptRecord(second, 1, failed),
            first.id,  # already held: not claimed again
            AttemptRecord(first, 1, ok),
        ],
        lease,
        3,
        interval,
    )
    assert written == [1, DeliveryStatus.PENDING, None, DeliveryStatus.DELIVERED]
    states = {state.id: state for state in store.deliveries(ids=[first.id, second.id, third.id])}
    assert [(states[d.id].status, states[d.id].attempts) for d in (first, second, third)] == [
        ("delivered", 1),
        ("pending", 1),
        ("sending", 1),
    ]


@pytest.mark.anyio
async def test_a_dispatcher_delivers_through_this_store(url: str) -> None:
    answers = [500]
    settings = dispatcher_settings(url, interval_seconds=0.01)

    def endpoint(request: httpx.Request) -> httpx.Response:
        return httpx.Response(answers.pop(0) if answers else 200)

    dispatcher = Dispatcher(settings, transport=httpx.MockTransport(endpoint))
    async with dispatcher:
        await asyncio.to_thread(dispatcher.store.add_subscription, "a", SUB, utcnow())
        result = await dispatcher.emit("duimp.registro", {"numero": "24BR0000000001"})
        (state,) = await dispatcher.wait_for(result.delivery_ids, within=10)
    assert (state.status, state.attempts) == ("delivered", 2)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
