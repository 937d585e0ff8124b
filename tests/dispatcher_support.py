"""Helpers for the dispatcher tests: settings, trustme certificates, a recording HTTPS endpoint."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
import pytest
import trustme
from starlette.types import Receive, Scope, Send

from receiver.dispatcher import DispatcherSettings, RunningServer, serve_app
from receiver.dispatcher.schema import DISPATCH_SCHEMA
from receiver.dispatcher.tables import DISPATCH_TABLES
from tests.conftest import PG_SKIP_REASON, drop_tables, postgres_url

TOKEN_A = "tok-client-a-7d41c9e0b2"
TOKEN_B = "tok-client-b-19f3a6c5d8"
LOOPBACK = ["127.0.0.0/8", "::1/128"]
T = TypeVar("T")


def dispatcher_settings(database_url: str, **dispatcher: Any) -> DispatcherSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "attempts": 3,
        "interval_seconds": 0.05,
        "attempt_timeout_seconds": 2.0,
        "poll_seconds": 0.05,
        "allowed_networks": LOOPBACK,
        "clients": {TOKEN_A: "client-a", TOKEN_B: "client-b"},
    }
    values.update(dispatcher)
    return DispatcherSettings.model_validate(values)


def sqlite_url(folder: Path, name: str = "dispatcher.db") -> str:
    return f"sqlite:///{folder / name}"


def reset_postgres_dispatch(url: str) -> None:
    drop_tables(url, DISPATCH_TABLES, DISPATCH_SCHEMA.version_table)


def postgres_or_skip() -> str:
    url = postgres_url()
    if url is None:
        pytest.skip(PG_SKIP_REASON)
    reset_postgres_dispatch(url)
    return url


@dataclass
class TLS:
    """A CA, a server certificate for the loopback names, and the client side's trust."""

    ca: trustme.CA = field(default_factory=trustme.CA)

    def server_context(self, *names: str) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert(*(names or ("127.0.0.1", "localhost"))).configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


Answer = int | tuple[int, dict[str, str], bytes]


class Recorder:
    """An ASGI endpoint that keeps every request and answers from a script (then ``default``)."""

    def __init__(self, script: Sequence[Answer] = (), default: Answer = 200) -> None:
        self.script = list(script)
        self.default = default
        self.requests: list[Received] = []
        self.delay = 0.0
        self.active = 0
        self.most_active = 0
        self.arrived = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.requests.append(Received(scope["path"], headers, b"".join(chunks), time.monotonic()))
        self.arrived.set()
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            answer = self.script.pop(0) if self.script else self.default
            status, extra, body = answer if isinstance(answer, tuple) else (answer, {}, b"")
            raw = [(k.encode(), v.encode()) for k, v in extra.items()]
            raw.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": raw})
            await send({"type": "http.response.body", "body": body})
        finally:
            self.active -= 1

    async def wait_for(self, count: int, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while len(self.requests) < count:
                self.arrived.clear()
                await self.arrived.wait()


@asynccontextmanager
async def https_endpoint(
    tls: TLS, recorder: Recorder, host: str = "127.0.0.1"
) -> AsyncIterator[RunningServer]:
    async with serve_app(recorder, host=host, ssl_context=tls.server_context(host)) as server:
        yield server


def api_client(app: Any, token: str | None = TOKEN_A) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://dispatcher.test", headers=headers
    )


async def eventually(check: Callable[[], Any], within: float = 10.0) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class InThread(Generic[T]):
    """Enter an async context manager in its own thread and loop, so synchronous code (a CLI
    command, a subprocess) can block this thread meanwhile. ``value`` is what it yielded."""

    def __init__(self, factory: Callable[[], AbstractAsyncContextManager[T]]) -> None:
        self._factory = factory
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self.value: T | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # surfaced in __enter__
            self._error = error
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self._factory() as value:
            self.value = value
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> T:
        self._thread.start()
        assert self._ready.wait(20), "the background server did not start"
        if self._error is not None:
            raise self._error
        assert self.value is not None
        return self.value

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)
