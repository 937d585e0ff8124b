"""Deliveries survive the dispatcher: stop it (or lose it) mid-flight, make a new one on the same
SQLite file, and everything still reaches the endpoint; two dispatchers never send one attempt twice."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from receiver.dispatcher import Dispatcher
from receiver.dispatcher.validation import SubscriptionInput, brasilia_date
from receiver.store.tables import utcnow
from tests.dispatcher_support import TLS, Recorder, dispatcher_settings, https_endpoint, sqlite_url

pytestmark = pytest.mark.anyio


def numbers(recorder: Recorder) -> Counter[int]:
    return Counter(json.loads(request.body)["dados"]["n"] for request in recorder.requests)


def new_dispatcher(url: str, tls: TLS, **options: Any) -> Dispatcher:
    return Dispatcher(dispatcher_settings(url, **options), verify=tls.client_context())


async def subscribe(dispatcher: Dispatcher, endpoint: str) -> None:
    data = SubscriptionInput("duimp.registro", endpoint, None)
    await asyncio.to_thread(dispatcher.store.add_subscription, "a", data, utcnow())


async def test_a_stopped_dispatcher_is_resumed_by_the_next(tmp_path: Path) -> None:
    url, tls = sqlite_url(tmp_path), TLS()
    recorder = Recorder()
    recorder.delay = 0.3
    async with https_endpoint(tls, recorder) as endpoint:
        first = new_dispatcher(url, tls, per_endpoint_concurrency=2)
        await first.start()
        await subscribe(first, endpoint.url + "/hook")
        ids = [
            delivery
            for n in range(10)
            for delivery in (await first.emit("duimp.registro", {"n": n})).delivery_ids
        ]
        await recorder.wait_for(2)  # two attempts are on the wire
        await first.close()
        left = await asyncio.to_thread(first.store.deliveries, ids=ids)
        assert sum(state.status == "delivered" for state in left) < 10

        async with new_dispatcher(url, tls, per_endpoint_concurrency=2) as second:
            states = await second.wait_for(ids, within=20)
    assert [state.status for state in states] == ["delivered"] * 10
    assert set(numbers(recorder)) == set(range(10))


async def test_a_lost_dispatchers_lease_runs_out_and_its_work_is_done(tmp_path: Path) -> None:
    url, tls, recorder = sqlite_url(tmp_path), TLS(), Recorder()
    async with https_endpoint(tls, recorder) as endpoint:
        # A process that only wrote the outbox, and one that died holding a delivery's lease.
        writer = new_dispatcher(url, tls)
        await writer.start(deliver=False)
        await subscribe(writer, endpoint.url + "/hook")
        stored = (await writer.emit("duimp.registro", {"n": 1})).delivery_ids
        leased = (await writer.emit("duimp.registro", {"n": 2})).delivery_ids
        lease_ends = utcnow() + timedelta(seconds=0.6)
        lease_ends_at = time.monotonic() + 0.6  # the recorder's clock
        assert await asyncio.to_thread(writer.store.outbox.claim, leased[0], utcnow(), lease_ends)
        await writer.close()
        assert recorder.requests == []

        async with new_dispatcher(url, tls) as survivor:
            states = await survivor.wait_for([*stored, *leased], within=10)
    assert [state.status for state in states] == ["delivered", "delivered"]
    arrivals = {json.loads(r.body)["dados"]["n"]: r for r in recorder.requests}
    assert set(arrivals) == {1, 2}
    # The leased one waited for the lease to run out (measured from the lease, not from the other
    # arrival: on a busy machine the survivor can start after most of the lease has gone).
    assert arrivals[2].at >= lease_ends_at - 0.01
    assert arrivals[1].at < arrivals[2].at  # the stored one did not wait for it


async def test_the_retry_schedule_and_count_survive_a_restart(tmp_path: Path) -> None:
    url, tls = sqlite_url(tmp_path), TLS()
    recorder = Recorder([500, 500])
    async with https_endpoint(tls, recorder) as endpoint:
        async with new_dispatcher(url, tls, interval_seconds=0.8) as first:
            await subscribe(first, endpoint.url + "/hook")
            ids = (await first.emit("duimp.registro", {"n": 1})).delivery_ids
            await recorder.wait_for(1)
            await asyncio.sleep(0.1)  # the failed attempt is recorded
        stopped_at = time.monotonic()
        async with new_dispatcher(url, tls, interval_seconds=0.8) as second:
            (state,) = await second.wait_for(ids, within=10)
            found = await asyncio.to_thread(second.store.failures, None, brasilia_date(utcnow()))
    assert (state.status, state.attempts) == ("delivered", 3)
    first_try, second_try, third_try = (request.at for request in recorder.requests)
    assert second_try - first_try >= 0.79  # not sooner because of the restart
    assert second_try >= stopped_at
    assert third_try - second_try >= 0.79
    assert [f["descricao"][:14] for f in found] == ["attempt 1 of 3", "attempt 2 of 3"]


async def test_two_dispatchers_on_one_outbox_send_each_attempt_once(tmp_path: Path) -> None:
    url, tls, recorder = sqlite_url(tmp_path), TLS(), Recorder()
    recorder.delay = 0.02
    async with (
        https_endpoint(tls, recorder) as endpoint,
        new_dispatcher(url, tls) as one,
        new_dispatcher(url, tls) as two,
    ):
        await subscribe(one, endpoint.url + "/hook")
        ids: list[int] = []
        for n in range(30):
            emitter = one if n % 2 else two
            ids.extend((await emitter.emit("duimp.registro", {"n": n})).delivery_ids)
        states = await one.wait_for(ids, within=20)
    assert {state.status for state in states} == {"delivered"}
    assert numbers(recorder) == Counter(range(30))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
