"""Deliveries over real sockets: HTTPS endpoints on uvicorn (trustme certificates), the guarded
transport's SSRF refusals, TLS verification, timeouts, and the per-endpoint bound."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from receiver.dispatcher import Dispatcher, OutboundAuth, serve_app
from receiver.dispatcher.tables import AuthType
from receiver.dispatcher.validation import SubscriptionInput, brasilia_date
from receiver.store.tables import utcnow
from tests.dispatcher_support import (
    TLS,
    Recorder,
    dispatcher_settings,
    https_endpoint,
    sqlite_url,
)

pytestmark = pytest.mark.anyio


async def subscribe(dispatcher: Dispatcher, endpoint: str, auth: OutboundAuth | None = None) -> int:
    data = SubscriptionInput("duimp.registro", endpoint, auth)
    created = await asyncio.to_thread(dispatcher.store.add_subscription, "a", data, utcnow())
    return created.id


async def failures(dispatcher: Dispatcher) -> list[dict[str, Any]]:
    return await asyncio.to_thread(dispatcher.store.failures, None, brasilia_date(utcnow()))


def make(tmp_path: Path, tls: TLS, **options: Any) -> Dispatcher:
    settings = dispatcher_settings(sqlite_url(tmp_path), **options)
    return Dispatcher(settings, verify=tls.client_context())


async def test_delivery_over_https_with_basic_credentials(tmp_path: Path) -> None:
    tls, recorder = TLS(), Recorder()
    async with https_endpoint(tls, recorder) as endpoint, make(tmp_path, tls) as dispatcher:
        auth = OutboundAuth(AuthType.BASIC, "ons", "senha-sintegre")
        await subscribe(dispatcher, endpoint.url + "/webhooks/pucomex", auth)
        result = await dispatcher.emit("duimp.registro", {"numero": "24BR0000000001", "versao": 1})
        (state,) = await dispatcher.wait_for(result.delivery_ids, within=10)
    assert (state.status, state.attempts) == ("delivered", 1)
    (received,) = recorder.requests
    assert received.path == "/webhooks/pucomex"
    assert received.headers["authorization"] == "Basic b25zOnNlbmhhLXNpbnRlZ3Jl"
    assert b'"numero":"24BR0000000001"' in received.body


async def test_three_attempts_interval_apart_and_only_200_counts(tmp_path: Path) -> None:
    tls = TLS()
    to_metadata = (302, {"location": "https://169.254.169.254/latest/meta-data/"}, b"")
    recorder = Recorder([(503, {}, b"busy"), to_metadata, 200])
    async with (
        https_endpoint(tls, recorder) as endpoint,
        make(tmp_path, tls, interval_seconds=0.3) as dispatcher,
    ):
        await subscribe(dispatcher, endpoint.url + "/hook")
        result = await dispatcher.emit("duimp.registro", {"numero": "24BR0000000002"})
        (state,) = await dispatcher.wait_for(result.delivery_ids, within=10)
        found = await failures(dispatcher)
    assert (state.status, state.attempts) == ("delivered", 3)
    assert [request.path for request in recorder.requests] == ["/hook"] * 3
    times = [request.at for request in recorder.requests]
    assert all(later - earlier >= 0.29 for earlier, later in itertools.pairwise(times))
    assert [f["descricao"] for f in found] == [
        f"attempt 1 of 3: HTTP 503 from {endpoint.url}/hook (only 200 is a receipt): busy",
        f"attempt 2 of 3: HTTP 302 from {endpoint.url}/hook (only 200 is a receipt)",
    ]
    assert all(f["conteudo"] == recorder.requests[0].body.decode() for f in found)


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "2130706433", "0x7f000001", "127.1", "[::ffff:127.0.0.1]"]
)
async def test_internal_endpoints_are_refused_without_an_exemption(
    tmp_path: Path, host: str
) -> None:
    tls, recorder = TLS(), Recorder()
    async with (
        https_endpoint(tls, recorder) as endpoint,
        make(tmp_path, tls, allowed_networks=[], attempts=1) as dispatcher,
    ):
        await subscribe(dispatcher, f"https://{host}:{endpoint.port}/hook")
        result = await dispatcher.emit("duimp.registro", {})
        (state,) = await dispatcher.wait_for(result.delivery_ids, within=10)
        (failure,) = await failures(dispatcher)
    assert state.status == "failed"
    assert recorder.requests == []
    assert "AddressRefused" in failure["descricao"]
    assert "refused to connect" in failure["descricao"]


async def test_a_name_is_checked_once_and_connected_to_as_resolved(tmp_path: Path) -> None:
    # The certificate names receiver.test; the connection goes to the address we checked.
    tls, recorder = TLS(), Recorder()
    resolved: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    settings = dispatcher_settings(sqlite_url(tmp_path))
    server_context = tls.server_context("receiver.test")
    async with serve_app(recorder, ssl_context=server_context) as endpoint:
        dispatcher = Dispatcher(settings, verify=tls.client_context(), resolver=resolver)
        async with dispatcher:
            await subscribe(dispatcher, f"https://receiver.test:{endpoint.port}/hook")
            result = await dispatcher.emit("duimp.registro", {})
            (state,) = await dispatcher.wait_for(result.delivery_ids, within=10)
    assert state.status == "delivered"
    assert resolved == ["receiver.test"]
    assert recorder.requests[0].headers["host"] == f"receiver.test:{endpoint.port}"


async def test_an_untrusted_certificate_is_a_failed_attempt(tmp_path: Path) -> None:
    their_ca, our_ca, recorder = TLS(), TLS(), Recorder()
    async with (
        https_endpoint(their_ca, recorder) as endpoint,
        make(tmp_path, our_ca, attempts=1) as dispatcher,
    ):
        await subscribe(dispatcher, endpoint.url + "/hook")
        result = await dispatcher.emit("duimp.registro", {})
        (state,) = await dispatcher.wait_for(result.delivery_ids, within=10)
        (failure,) = await failures(dispatcher)
    assert state.status == "failed"
    assert "CERTIFICATE_VERIFY_FAILED" in failure["descricao"]
    assert recorder.requests == []


async def test_a_slow_endpoint_fails_at_the_deadline(tmp_path: Path) -> None:
    tls, recorder = TLS(), Recorder()
    recorder.delay = 1.0
    async with (
        https_endpoint(tls, recorder) as endpoint,
        make(tmp_path, tls, attempts=1, attempt_timeout_seconds=0.3) as dispatcher,
    ):
        await subscribe(dispatcher, endpoint.url + "/hook")
        result = await dispatcher.emit("duimp.registro", {})
        (state,) = await dispatcher.wait_for(result.delivery_ids, within=10)
        (failure,) = await failures(dispatcher)
    assert state.status == "failed"
    assert "no answer within 0.3 s" in failure["descricao"]


async def test_at_most_n_at_a_time_per_endpoint(tmp_path: Path) -> None:
    tls, recorder = TLS(), Recorder()
    recorder.delay = 0.2
    async with (
        https_endpoint(tls, recorder) as endpoint,
        make(tmp_path, tls, per_endpoint_concurrency=2) as dispatcher,
    ):
        for index in range(6):
            await subscribe(dispatcher, f"{endpoint.url}/hook/{index}")
        result = await dispatcher.emit("duimp.registro", {})
        states = await dispatcher.wait_for(result.delivery_ids, within=10)
    assert [state.status for state in states] == ["delivered"] * 6
    assert recorder.most_active == 2


async def test_waiting_for_many_deliveries_gives_each_final_state_in_the_order_asked(
    tmp_path: Path,
) -> None:
    tls, recorder = TLS(), Recorder()
    recorder.delay = 0.05  # they settle one by one while wait_for is reading
    async with https_endpoint(tls, recorder) as endpoint, make(tmp_path, tls) as dispatcher:
        await subscribe(dispatcher, endpoint.url + "/hook")
        emitted = [
            i
            for n in range(40)
            for i in (await dispatcher.emit("duimp.registro", {"n": n})).delivery_ids
        ]
        asked = [*reversed(emitted), emitted[0], max(emitted) + 1000]  # a repeat, an unknown id
        states = await dispatcher.wait_for(asked, within=10)
    assert [state.id for state in states] == list(reversed(emitted))
    assert {(state.status, state.attempts) for state in states} == {("delivered", 1)}
    assert len(recorder.requests) == 40


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_connections_are_kept_alive_and_reused_per_origin(tmp_path: Path) -> None:
    """Each origin has its own pool, as large as its concurrency: 40 deliveries to two endpoints
    open at most 2 connections each, every one of them resolved and checked by the guard."""
    tls = TLS()
    first, second = Recorder(), Recorder()
    first.delay = second.delay = 0.01
    resolved: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        resolved.append(f"{host}:{port}")
        return ["127.0.0.1"]

    settings = dispatcher_settings(sqlite_url(tmp_path), per_endpoint_concurrency=2)
    async with (
        https_endpoint(tls, first) as one,
        https_endpoint(tls, second) as two,
        Dispatcher(settings, verify=tls.client_context(), resolver=resolver) as dispatcher,
    ):
        await subscribe(dispatcher, one.url + "/hook")
        await subscribe(dispatcher, two.url + "/hook")
        ids = [
            delivery
            for n in range(20)
            for delivery in (await dispatcher.emit("duimp.registro", {"n": n})).delivery_ids
        ]
        states = await dispatcher.wait_for(ids, within=20)
    assert {state.status for state in states} == {"delivered"}
    assert (len(first.requests), len(second.requests)) == (20, 20)
    # One resolution per connection opened: at most the concurrency per origin, not per delivery.
    per_origin = {address: resolved.count(address) for address in resolved}
    assert set(per_origin) == {f"127.0.0.1:{one.port}", f"127.0.0.1:{two.port}"}
    assert all(1 <= count <= 2 for count in per_origin.values()), per_origin
