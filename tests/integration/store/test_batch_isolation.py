"""One request cannot fail its group-commit batch: what the store would refuse is checked before the
write, and what it still refuses fails alone while the rest of the batch is stored.

Real stores (SQLite file and PostgreSQL); the writer as a thread and as a process; a store refusing
one row the way a store does (a trigger raising a data error for one body).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import Message

from receiver import storable
from receiver.errors import RefusedByStore, StoreUnavailable
from receiver.ids import new_id
from receiver.ingest.endpoint import SECRET_HEADERS
from receiver.sources import dedup_key
from receiver.store import Incoming, Receipt, Store
from receiver.store.writer import BatchWriter
from tests.conftest import AppClient, migrated
from tests.integration.ingest.test_ingest import webhook_scope

pytestmark = pytest.mark.anyio

POISON = b"poison-row"


def item(n: int, body: bytes | None = None, event: str | None = None) -> Incoming:
    raw = body if body is not None else b'{"evento":"duimp.registro","n":%d}' % n
    return Incoming("pucomex", event, "203.0.113.7", {}, raw, dedup_key("pucomex", raw))


@contextmanager
def refusing_poison(store: Store) -> Iterator[None]:
    """The database refuses any notification whose body holds ``POISON``, with a data error (one
    row's fault), and takes every other."""
    if store.dialect == "sqlite":
        create = [
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON notifications "
            "WHEN instr(NEW.body, X'706f69736f6e2d726f77') > 0 "
            "BEGIN SELECT RAISE(ABORT, 'poison refused (injected)'); END"
        ]
        drop = ["DROP TRIGGER IF EXISTS refuse_poison"]
    else:
        create = [
            "CREATE OR REPLACE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN IF position('\\x706f69736f6e2d726f77'::bytea IN NEW.body) > 0 THEN "
            "RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'poison refused (injected)'; "
            "END IF; RETURN NEW; END $$",
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON notifications "
            "FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
        ]
        drop = [
            "DROP TRIGGER IF EXISTS refuse_poison ON notifications",
            "DROP FUNCTION IF EXISTS refuse_poison()",
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


def test_a_row_the_store_refuses_fails_alone_and_its_batch_is_stored(
    store: Store,
) -> None:
    batch = [item(n) for n in range(40)]
    batch[13] = item(13, b'{"n":13,"x":"%s"}' % POISON)
    batch[31] = item(31, b'{"n":31,"x":"%s"}' % POISON)
    batch.append(batch[5])  # a repeat in the same batch stays a receipt of its original
    writer = BatchWriter(store.engine)
    try:
        with refusing_poison(store):
            outcome = writer.commit([(note, new_id()) for note in batch])
    finally:
        writer.close()
    assert not isinstance(outcome, StoreUnavailable)
    refused = [n for n, result in enumerate(outcome) if isinstance(result, RefusedByStore)]
    assert refused == [13, 31]
    assert "poison refused (injected)" in str(outcome[13])
    receipts = [result for result in outcome if isinstance(result, Receipt)]
    assert len(receipts) == 39
    assert receipts[-1].duplicate_of == receipts[5].id
    assert store.count_notes() == 39
    assert writer.transactions < 30  # halves of halves, not one transaction per notification


def test_a_store_that_is_down_fails_the_batch_at_once(
    store: Store,
) -> None:
    writer = BatchWriter(store.engine)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE notifications RENAME TO notifications_away")
    try:
        outcome = writer.commit([(item(n), new_id()) for n in range(20)])
    finally:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE notifications_away RENAME TO notifications")
        writer.close()
    assert isinstance(outcome, StoreUnavailable) and not isinstance(outcome, RefusedByStore)
    assert writer.transactions == 1  # a store that is down is not asked again for every half


@pytest.mark.parametrize(
    ("event", "why"),
    [
        ("a" * 121, "longer than 120 characters (121)"),
        ("duimp\x00registro", "contains a NUL character"),
        ("duimp.\ud800", "contains a lone surrogate (U+D800)"),
    ],
)
@pytest.mark.parametrize("writer", ["thread", "process"])
async def test_an_event_the_store_cannot_hold_is_kept_quarantined_beside_its_batch(
    database_url: str, writer: str, event: str, why: str
) -> None:
    """The event came from anywhere (path, header): the notification is acknowledged and kept,
    without that event, quarantined with the reason; the rest of its batch is stored as usual."""
    store = Store(database_url, writer=writer)  # type: ignore[arg-type]
    migrated(store)
    try:
        store.start()
        notes = [item(n, event="duimp.registro") for n in range(10)]
        notes[4] = item(4, event=event)
        receipts = await asyncio.gather(*(store.append(n, deadline=10) for n in notes))
        assert [r.duplicate_of for r in receipts] == [None] * 10
        assert store.count_notes() == 10
        row = store.note(receipts[4].id)
        assert row is not None
        assert (row["event"], row["status"], row["routed"]) == (None, "quarantined", True)
        assert row["error"] == f"event {storable.shown(event)} cannot be stored: {why}"
        assert row["body"] == notes[4].body
        other = store.note(receipts[3].id)
        assert other is not None
        assert (other["event"], other["status"], other["routed"]) == (
            "duimp.registro",
            "pending",
            False,
        )
        assert await asyncio.to_thread(store.ready)
    finally:
        store.close()


async def test_a_writer_process_answers_the_refused_alone_and_stays_ready(
    database_url: str,
) -> None:
    store = Store(database_url, writer="process")
    migrated(store)
    try:
        store.start()
        await store.append(item(-1), deadline=10)  # the writer is up
        pid = store.writer_pid
        assert pid is not None
        notes = [item(n) for n in range(190)]
        notes.insert(95, item(95, b'{"x":"%s"}' % POISON))
        with refusing_poison(store):
            os.kill(pid, signal.SIGSTOP)  # everything queues, then goes in one batch
            try:
                waiting = [asyncio.ensure_future(store.append(n, deadline=10)) for n in notes]
                await asyncio.sleep(0.2)
            finally:
                os.kill(pid, signal.SIGCONT)
            outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        assert isinstance(outcomes[95], RefusedByStore)
        assert "poison refused (injected)" in str(outcomes[95])
        assert all(isinstance(o, Receipt) for n, o in enumerate(outcomes) if n != 95)
        assert store.count_notes() == 191
        assert await asyncio.to_thread(store.ready)
    finally:
        store.close()


async def call(app: Any, scope: dict[str, Any], body: bytes) -> tuple[int, dict[str, Any]]:
    """One request through the ASGI app by hand (any header bytes at all): status and reply."""
    sent: list[Message] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


HEADER_NAMES = st.binary(min_size=1, max_size=16).filter(
    lambda name: name not in SECRET_HEADERS and name not in (b"content-length", b"x-forwarded-for")
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.binary(max_size=2000),
    headers=st.lists(st.tuples(HEADER_NAMES, st.binary(max_size=100)), max_size=6),
)
async def test_any_body_and_headers_are_stored_beside_the_rest_of_their_batch(
    ingest: AppClient, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """Whatever bytes a request carries in its body and headers, it is stored as received and
    the requests committed with it are too: all answered 200."""
    app = ingest.app
    innocent = [b'{"evento":"duimp.registro","n":"%s"}' % new_id().encode() for _ in range(5)]
    answers = await asyncio.gather(
        call(app, webhook_scope(*headers), body),
        *(call(app, webhook_scope(), raw) for raw in innocent),
    )
    assert [status for status, _ in answers] == [200] * 6
    row = ingest.store.note(answers[0][1]["id"])
    assert row is not None and row["body"] == body
    expected = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}
    assert json.loads(row["headers"]) == expected
