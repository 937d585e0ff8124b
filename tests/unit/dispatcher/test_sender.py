"""The delivery rule with an injected transport: outbox first, 200 as the only receipt, N attempts
``interval`` apart, failures recorded with the content, outbound credentials, bounds."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from receiver.dispatcher import Dispatcher, OutboundAuth, Subscription
from receiver.dispatcher.tables import ATTEMPTS, AuthType
from receiver.dispatcher.validation import SubscriptionInput, brasilia_date
from receiver.store.tables import utcnow
from tests.dispatcher_support import dispatcher_settings, eventually, sqlite_url

pytestmark = pytest.mark.anyio

# A coroutine function, not any awaitable: that is what httpx.MockTransport is typed to accept.
Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


class Script:
    """A mock endpoint: answers from a list (then 200), remembers every request and when."""

    def __init__(self, *answers: int | httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []
        self.before: Callable[[httpx.Request], Awaitable[None]] | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(time.monotonic())
        if self.before is not None:
            await self.before(request)
        answer = self.answers.pop(0) if self.answers else 200
        return answer if isinstance(answer, httpx.Response) else httpx.Response(answer)


@pytest.fixture
def make_dispatcher(tmp_path: Path) -> Callable[..., AsyncIterator[Dispatcher]]:
    def make(handler: Handler, **options: Any) -> Any:
        settings = dispatcher_settings(sqlite_url(tmp_path), **options)
        return Dispatcher(settings, transport=httpx.MockTransport(handler))

    return make


async def subscribe(
    dispatcher: Dispatcher,
    endpoint: str = "https://sefaz.example/hook",
    evento: str = "duimp.registro",
    auth: OutboundAuth | None = None,
    owner: str = "client-a",
) -> Subscription:
    data = SubscriptionInput(evento, endpoint, auth)
    return await asyncio.to_thread(dispatcher.store.add_subscription, owner, data, utcnow())


async def test_the_outbox_is_written_before_anything_is_sent(make_dispatcher: Any) -> None:
    script = Script()
    seen: list[str] = []

    async def check_store(request: httpx.Request) -> None:
        states = await asyncio.to_thread(dispatcher.store.deliveries, ids=[1])
        seen.extend(state.status for state in states)

    script.before = check_store
    async with make_dispatcher(script) as dispatcher:
        await subscribe(dispatcher)
        result = await dispatcher.emit("duimp.registro", {"numero": "24BR0000000001", "versao": 1})
        states = await dispatcher.wait_for(result.delivery_ids, within=10)
    assert result.delivery_ids == (1,)
    assert seen == ["sending"]
    assert [state.status for state in states] == ["delivered"]


async def test_the_pucomex_body(make_dispatcher: Any) -> None:
    script = Script()
    async with make_dispatcher(script) as dispatcher:
        await subscribe(dispatcher)
        result = await dispatcher.emit("duimp.registro", {"numero": "24BR0000000001", "versao": 2})
        await dispatcher.wait_for(result.delivery_ids, within=10)
    (request,) = script.requests
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.content)
    assert set(body) == {"evento", "dataHora", "dados"}
    assert body["evento"] == "duimp.registro"
    assert body["dados"] == {"numero": "24BR0000000001", "versao": 2}
    assert datetime.fromisoformat(body["dataHora"]).utcoffset() is not None


@pytest.mark.parametrize("status", [201, 202, 204, 301, 302, 304, 307, 400, 401, 404, 500, 503])
async def test_only_200_is_a_receipt(make_dispatcher: Any, status: int) -> None:
    script = Script(status, status, status)
    async with make_dispatcher(script) as dispatcher:
        await subscribe(dispatcher, evento="duimp.desembaraco")
        result = await dispatcher.emit("duimp.desembaraco", {"numero": "24BR0000000002"})
        (state,) = await dispatcher.wait_for(result.delivery_ids, within=10)
        failures = await asyncio.to_thread(
            dispatcher.store.failures, "client-a", brasilia_date(utcnow())
        )
    assert (state.status, state.attempts) == ("failed", 3)
    assert len(script.requests) == 3
    assert len(failures) == 3
    sent = script.requests[0].content.decode()
    for number, failure in enumerate(failures, start=1):
        assert set(failure) == {"id", "data", "descricao", "evento", "conteudo"}
        assert failure["evento"] == "duimp.desembaraco"
        assert failure["conteudo"] == sent
        assert f"HTTP {status}" in failure["descricao"]
        assert f"attempt {number} of 3" in failure["descricao"]


async def test_a_200_on_the_last_attempt_delivers(make_dispatcher: Any) -> None:
    script = Script(500, 503, 200)
    async with make_dispatcher(script) as dispatcher:
        await subscribe(dispatcher)
        result = await dispatcher.emit("duimp.registro", {"numero": "24BR0000000003"})
        (state,) = await dispatcher.wait_for(result.delivery_ids, within=10)
        failures = await asyncio.to_thread(dispatcher.store.failures, None, brasilia_date(utcnow()))
    assert (state.status, state.attempts) == ("delivered", 3)
    assert [f["descricao"][:12] for f in failures] == ["attempt 1 of", "attempt 2 of"]


async def test_attempts_are_an_interval_apart_and_then_never_again(make_dispatcher: Any) -> None:
    script = Script(500, 500, 500, 500, 500)
    async with make_dispatcher(script, attempts=4, interval_seconds=0.2) as dispatcher:
        await subscribe(dispatcher)
        result = await dispatcher.emit("duimp.registro", {"numero": "24BR0000000004"})
        (state,) = await dispatcher.wait_for(result.delivery_ids, within=10)
        await asyncio.sleep(0.5)  # the Portal never tries again after its last attempt
    assert state.status == "failed"
    assert len(script.requests) == 4
    gaps = [later - earlier for earlier, later in zip(script.times, script.times[1:], strict=False)]
    assert all(gap >= 0.19 for gap in gaps), gaps
    assert all(gap < 1.0 for gap in gaps), gaps


async def test_a_timeout_is_a_failed_attempt(make_dispatcher: Any) -> None:
    script = Script()

    async def stall(request: httpx.Request) -> None:
        await asyncio.sleep(5)

    script.before = stall
    async with make_dispatcher(script, attempts=1, attempt_timeout_seconds=0.2) as dispatcher:
        await subscribe(dispatcher)
        started = time.monotonic()
        result = await dispatcher.emit("duimp.registro", {"numero": "24BR0000000005"})
        (state,) = await dispatcher.wait_for(result.delivery_ids, within=10)
        elapsed = time.monotonic() - started
        (failure,) = await asyncio.to_thread(
            dispatcher.store.failures, None, brasilia_date(utcnow())
        )
    assert state.status == "failed"
    assert "no answer within 0.2 s" in failure["descricao"]
    assert elapsed < 2


async def test_a_connection_error_is_a_failed_attempt(make_dispatcher: Any) -> None:
    async def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with make_dispatcher(refuse, attempts=2) as dispatcher:
        await subscribe(dispatcher)
        result = await dispatcher.emit("duimp.registro", {"numero": "24BR0000000006"})
        (state,) = await dispatcher.wait_for(result.delivery_ids, within=10)
        failures = await asyncio.to_thread(dispatcher.store.failures, None, brasilia_date(utcnow()))
    assert (state.status, state.attempts) == ("failed", 2)
    assert all("ConnectError" in failure["descricao"] for failure in failures)


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        (None, None),
        (OutboundAuth(), None),
        (OutboundAuth(AuthType.BASIC, "ons", "senha-1"), "Basic b25zOnNlbmhhLTE="),
        (OutboundAuth(AuthType.BEARER, None, "tok-123"), "Bearer tok-123"),
    ],
)
async def test_outbound_credentials(
    make_dispatcher: Any, auth: OutboundAuth | None, expected: str | None
) -> None:
    script = Script()
    async with make_dispatcher(script) as dispatcher:
        await subscribe(dispatcher, auth=auth)
        result = await dispatcher.emit("duimp.registro", {})
        await dispatcher.wait_for(result.delivery_ids, within=10)
    assert script.requests[0].headers.get("authorization") == expected


async def test_redirects_are_not_followed(make_dispatcher: Any) -> None:
    moved = httpx.Response(302, headers={"Location": "https://169.254.169.254/latest/meta-data"})
    script = Script(moved, moved, moved)
    async with make_dispatcher(script) as dispatcher:
        await subscribe(dispatcher)
        result = await dispatcher.emit("duimp.registro", {})
        (state,) = await dispatcher.wait_for(result.delivery_ids, within=10)
    assert state.status == "failed"
    assert {str(request.url) for request in script.requests} == {"https://sefaz.example/hook"}


async def test_answers_are_read_only_up_to_the_limit(make_dispatcher: Any) -> None:
    script = Script(httpx.Response(500, content=b"x" * 1_000_000))
    async with make_dispatcher(script, attempts=1, max_response_bytes=1000) as dispatcher:
        await subscribe(dispatcher)
        result = await dispatcher.emit("duimp.registro", {})
        await dispatcher.wait_for(result.delivery_ids, within=10)
        with dispatcher.store.engine.connect() as conn:
            excerpt = conn.execute(select(ATTEMPTS.c.response_excerpt)).scalar_one()
    assert excerpt == "x" * 1000


async def test_concurrency_is_bounded_per_endpoint(make_dispatcher: Any) -> None:
    active: Counter[str] = Counter()
    most: Counter[str] = Counter()
    overall = [0, 0]

    async def slow(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        active[host] += 1
        overall[0] += 1
        most[host] = max(most[host], active[host])
        overall[1] = max(overall[1], overall[0])
        await asyncio.sleep(0.1)
        active[host] -= 1
        overall[0] -= 1
        return httpx.Response(200)

    async with make_dispatcher(slow, per_endpoint_concurrency=2) as dispatcher:
        for index in range(6):
            await subscribe(dispatcher, f"https://one.example/hook/{index}")
            await subscribe(dispatcher, f"https://two.example/hook/{index}")
        result = await dispatcher.emit("duimp.registro", {})
        states = await dispatcher.wait_for(result.delivery_ids, within=10)
    assert len(states) == 12
    assert all(state.status == "delivered" for state in states)
    assert most == {"one.example": 2, "two.example": 2}
    assert overall[1] == 4  # both endpoints were served at the same time


async def test_an_idempotency_key_stores_the_event_once(make_dispatcher: Any) -> None:
    script = Script()
    async with make_dispatcher(script) as dispatcher:
        await subscribe(dispatcher)
        first = await dispatcher.emit("duimp.registro", {"n": 1}, idempotency_key="note-1")
        again = await dispatcher.emit("duimp.registro", {"n": 1}, idempotency_key="note-1")
        await dispatcher.wait_for(first.delivery_ids, within=10)
    assert (again.event_id, again.delivery_ids, again.duplicate) == (
        first.event_id,
        first.delivery_ids,
        True,
    )
    assert len(script.requests) == 1


async def test_events_go_only_to_their_subscribers(make_dispatcher: Any) -> None:
    script = Script()
    async with make_dispatcher(script) as dispatcher:
        await subscribe(dispatcher, "https://a.example/", "duimp.registro")
        await subscribe(dispatcher, "https://b.example/", "duimp.cancelamento")
        nobody = await dispatcher.emit("lpco.registro", {})
        result = await dispatcher.emit("duimp.cancelamento", {})
        await dispatcher.wait_for(result.delivery_ids, within=10)
    assert nobody.delivery_ids == ()
    assert [str(request.url) for request in script.requests] == ["https://b.example/"]


async def test_a_deleted_subscription_gets_nothing_more(make_dispatcher: Any) -> None:
    script = Script(500, 500, 500)
    async with make_dispatcher(script, interval_seconds=0.3) as dispatcher:
        subscription = await subscribe(dispatcher)
        result = await dispatcher.emit("duimp.registro", {})
        await eventually(lambda: script.requests)
        await asyncio.to_thread(
            dispatcher.store.delete_subscription, subscription.id, "client-a", utcnow()
        )
        (state,) = await dispatcher.wait_for(result.delivery_ids, within=10)
    assert state.status == "cancelled"
    assert len(script.requests) == 1


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_an_endpoint_httpx_cannot_parse_fails_like_any_other(make_dispatcher: Any) -> None:
    script = Script()
    async with make_dispatcher(script, attempts=2) as dispatcher:
        await subscribe(dispatcher, "https://[FceE]/hook?token=s3cr3t")
        result = await dispatcher.emit("duimp.registro", {})
        (state,) = await dispatcher.wait_for(result.delivery_ids, within=10)
        failures = await asyncio.to_thread(dispatcher.store.failures, None, brasilia_date(utcnow()))
    assert (state.status, state.attempts) == ("failed", 2)
    assert script.requests == []
    assert all("InvalidURL" in failure["descricao"] for failure in failures)
    assert all("s3cr3t" not in failure["descricao"] for failure in failures)
