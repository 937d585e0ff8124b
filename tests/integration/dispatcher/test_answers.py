"""Whatever a subscriber answers, every attempt is counted: the Portal's rule sends 3, never more.

A real HTTPS subscriber (uvicorn, trustme) and the dispatcher's store on a real SQLite file and on
the real PostgreSQL server. An attempt left uncounted (its record refused) stays leased, and the
lease expiry sends it again, for ever: 42 POSTs in 40 s on PostgreSQL for a body with a NUL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from receiver.dispatcher import Dispatcher, DispatchStore
from receiver.dispatcher.validation import SubscriptionInput, brasilia_date
from receiver.store.tables import utcnow
from tests.dispatcher_support import (
    TLS,
    Recorder,
    dispatcher_settings,
    https_endpoint,
    postgres_or_skip,
    sqlite_url,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    return postgres_or_skip()


ANSWERS = [
    pytest.param(b"refused\x00with a NUL", "refused\\x00with a NUL", id="nul"),
    pytest.param(b"bad \xff\xfe utf-8", "bad \ufffd\ufffd utf-8", id="invalid-utf-8"),
    pytest.param(b"surrogate \xed\xa0\x80", "surrogate \ufffd\ufffd\ufffd", id="lone-surrogate"),
    pytest.param(b"\x00" * 5000, "\\x00" * 500, id="many-nuls"),
]


async def delivered_three_times(
    url: str, answer: bytes, **options: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, str]:
    """A subscriber that always answers 500 with ``answer``: the failure records, the attempts,
    how many POSTs it received, and the delivery's final status."""
    tls = TLS()
    recorder = Recorder(default=(500, {}, answer))
    settings = dispatcher_settings(url, interval_seconds=0.05, **options)
    store = DispatchStore(url)
    async with (
        https_endpoint(tls, recorder) as endpoint,
        Dispatcher(settings, store, verify=tls.client_context()) as dispatcher,
    ):
        data = SubscriptionInput("duimp.registro", endpoint.url + "/hook", None)
        await asyncio.to_thread(store.add_subscription, "a", data, utcnow())
        result = await dispatcher.emit("duimp.registro", {"numero": "24BR0000000001"})
        (state,) = await dispatcher.wait_for(result.delivery_ids, within=20)
        await asyncio.sleep(0.3)  # time for more attempts, were any due
        failures = await asyncio.to_thread(store.failures, None, brasilia_date(utcnow()))
        attempts = await asyncio.to_thread(attempt_rows, store)
    store.close()
    assert state.attempts == 3
    return failures, attempts, len(recorder.requests), state.status


def attempt_rows(store: DispatchStore) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT number, outcome, response_excerpt FROM dispatch_attempts ORDER BY id"
        )
        return [dict(row) for row in rows.mappings()]


@pytest.mark.parametrize(("answer", "kept"), ANSWERS)
async def test_any_answer_is_counted_and_kept_escaped(url: str, answer: bytes, kept: str) -> None:
    failures, attempts, posts, status = await delivered_three_times(url, answer)
    assert (posts, status) == (3, "failed")
    assert [row["number"] for row in attempts] == [1, 2, 3]
    assert all(row["response_excerpt"].startswith(kept[:200]) for row in attempts)
    assert [f["descricao"].split(":")[0] for f in failures] == [
        "attempt 1 of 3",
        "attempt 2 of 3",
        "attempt 3 of 3",
    ]
    assert all("HTTP 500" in f["descricao"] for f in failures)


@contextmanager
def records_refused(url: str, marker: str) -> Iterator[None]:
    """The database refuses any attempt record whose description holds ``marker`` (one record's
    fault, as a store refuses a value nobody foresaw)."""
    store = DispatchStore(url)
    store.upgrade_schema()
    if url.startswith("sqlite"):
        create = [
            "CREATE TRIGGER refuse_attempt BEFORE INSERT ON dispatch_attempts "
            f"WHEN instr(NEW.outcome, '{marker}') > 0 "
            "BEGIN SELECT RAISE(ABORT, 'attempt refused (injected)'); END"
        ]
        drop = ["DROP TRIGGER IF EXISTS refuse_attempt"]
    else:
        create = [
            "CREATE OR REPLACE FUNCTION refuse_attempt() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN IF position('{marker}' IN NEW.outcome) > 0 THEN RAISE EXCEPTION USING "
            "ERRCODE = '22023', MESSAGE = 'attempt refused (injected)'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER refuse_attempt BEFORE INSERT ON dispatch_attempts "
            "FOR EACH ROW EXECUTE FUNCTION refuse_attempt()",
        ]
        drop = [
            "DROP TRIGGER IF EXISTS refuse_attempt ON dispatch_attempts",
            "DROP FUNCTION IF EXISTS refuse_attempt()",
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
        store.close()


async def test_a_record_the_store_still_refuses_is_counted_with_a_placeholder(url: str) -> None:
    with records_refused(url, "poison-answer"):
        failures, attempts, posts, status = await delivered_three_times(url, b"poison-answer")
    assert (posts, status) == (3, "failed")
    placeholder = "the outcome of this attempt could not be stored ("
    assert [row["outcome"][: len(placeholder)] for row in attempts] == [placeholder] * 3
    assert [row["response_excerpt"] for row in attempts] == [None] * 3
    assert len(failures) == 3


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"content_type": "a/" + "b" * 99}, "content type 'a/bbb"),
        ({"content_type": "text/plain\x00"}, "contains a NUL character"),
        ({"idempotency_key": "k" * 201}, "idempotency key 'kkk"),
    ],
)
async def test_an_emit_the_outbox_cannot_hold_fails_alone(
    url: str, options: dict[str, str], why: str
) -> None:
    settings = dispatcher_settings(url)
    async with Dispatcher(settings) as dispatcher:
        outcomes = await asyncio.gather(
            dispatcher.emit_body("duimp.registro", b"1"),
            dispatcher.emit_body("duimp.registro", b"2", **options),
            dispatcher.emit_body("duimp.registro", b"3"),
            return_exceptions=True,
        )
    assert isinstance(outcomes[1], ValueError) and why in str(outcomes[1])
    assert not isinstance(outcomes[0], BaseException)
    assert not isinstance(outcomes[2], BaseException)
