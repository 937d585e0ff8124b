"""The Portal's rule under any load: 3 attempts per delivery, never a fourth.

A saturated outbox: two dispatchers share it (as two processes may), each with a tiny concurrency,
many deliveries, a slow subscriber that always answers 500, and a lease far shorter than an
attempt, so every lease runs out while its attempt is still waiting for an answer and the other
dispatcher takes the delivery over. Before the attempt number was claimed with the lease, each
takeover sent and recorded one more attempt (4, 5, 6 ... POSTs per delivery); now the claim itself
counts the attempt, so the takeovers use up the 3 attempts instead of adding to them. Real HTTPS
subscriber (uvicorn, trustme), real SQLite file and the real PostgreSQL server.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import timedelta
from pathlib import Path

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

DELIVERIES = 24


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    return postgres_or_skip()


async def test_a_saturated_outbox_never_sends_a_fourth_attempt(url: str) -> None:
    tls = TLS()
    recorder = Recorder(default=500)
    recorder.delay = 0.25  # each attempt outlives its lease (0.05 s) five times over
    settings = dispatcher_settings(url, interval_seconds=0, per_endpoint_concurrency=2)
    lease = timedelta(seconds=0.05)
    store = DispatchStore(url)
    async with https_endpoint(tls, recorder) as endpoint:
        one = Dispatcher(settings, store, verify=tls.client_context(), lease=lease)
        two = Dispatcher(settings, DispatchStore(url), verify=tls.client_context(), lease=lease)
        await one.start(deliver=False)
        data = SubscriptionInput("duimp.registro", endpoint.url + "/hook", None)
        await asyncio.to_thread(store.add_subscription, "a", data, utcnow())
        ids = [
            delivery
            for n in range(DELIVERIES)
            for delivery in (await one.emit("duimp.registro", {"n": n})).delivery_ids
        ]
        await one.close()
        async with (
            Dispatcher(settings, store, verify=tls.client_context(), lease=lease) as one,
            two,
        ):
            states = await one.wait_for(ids, within=60)
            # Every late answer is recorded (its holder outlived its lease, it did not die).
            await asyncio.sleep(recorder.delay * 2)
        failures = await asyncio.to_thread(store.failures, None, brasilia_date(utcnow()))
        with store.engine.connect() as conn:
            numbers = Counter(
                row.delivery_id
                for row in conn.exec_driver_sql("SELECT delivery_id, number FROM dispatch_attempts")
            )
            highest = conn.exec_driver_sql("SELECT max(number) FROM dispatch_attempts").scalar()
    await asyncio.to_thread(store.close)
    await asyncio.to_thread(two.store.close)
    posts = Counter(json.loads(request.body)["dados"]["n"] for request in recorder.requests)
    assert [state.status for state in states] == ["failed"] * DELIVERIES
    assert {state.attempts for state in states} == {3}
    # The subscriber saw each notification exactly 3 times: takeovers did happen (a POST per
    # lease), but each one was one of the 3.
    assert posts == Counter({n: 3 for n in range(DELIVERIES)})
    assert numbers == Counter({delivery: 3 for delivery in ids})
    assert highest == 3
    assert len(failures) == 3 * DELIVERIES


async def test_a_delivery_whose_last_lease_ran_out_is_failed_not_retried(tmp_path: Path) -> None:
    """A dispatcher that died holding the third attempt leaves it 'sending'; the next one gives
    the delivery up (no fourth POST), and it is not looked at again and again."""
    tls, recorder = TLS(), Recorder(default=500)
    url = sqlite_url(tmp_path)
    settings = dispatcher_settings(url, interval_seconds=0)
    async with https_endpoint(tls, recorder) as endpoint:
        writer = Dispatcher(settings, verify=tls.client_context())
        await writer.start(deliver=False)
        data = SubscriptionInput("duimp.registro", endpoint.url + "/hook", None)
        await asyncio.to_thread(writer.store.add_subscription, "a", data, utcnow())
        (delivery_id,) = (await writer.emit("duimp.registro", {"n": 1})).delivery_ids
        outbox = writer.store.outbox
        for number in (1, 2, 3):
            lease_ends = utcnow() + timedelta(seconds=0.2)
            claimed = await asyncio.to_thread(outbox.claim, delivery_id, utcnow(), lease_ends)
            assert claimed == number
            if number < 3:  # the first two are abandoned at once: their leases run out
                await asyncio.sleep(0.25)
        await writer.close()
        async with Dispatcher(settings, verify=tls.client_context()) as survivor:
            (state,) = await survivor.wait_for([delivery_id], within=10)
    assert (state.status, state.attempts) == ("failed", 3)
    assert recorder.requests == []  # all 3 attempts were taken by the dead dispatcher
