"""Serving in this event loop: ``run_dispatcher`` and ``run_simulator`` on free ports, and answers
without Nagle's wait."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from receiver.dispatcher import run_dispatcher, serve_app
from receiver.simulator import run_simulator
from tests.dispatcher_support import TOKEN_A, dispatcher_settings, sqlite_url

pytestmark = pytest.mark.anyio


async def test_run_dispatcher_on_a_free_port(tmp_path: Path) -> None:
    settings = dispatcher_settings(sqlite_url(tmp_path))
    async with (
        run_dispatcher(settings) as first,
        run_simulator(dispatcher_settings(sqlite_url(tmp_path, "other.db"))) as second,
    ):
        assert first.port != second.port
        for running in (first, second):
            async with httpx.AsyncClient(base_url=running.url, trust_env=False) as client:
                assert (await client.get("/healthz")).status_code == 200
                headers = {"Authorization": f"Bearer {TOKEN_A}"}
                assert (await client.get("/portal/api/ext/webhook", headers=headers)).json() == []
        async with httpx.AsyncClient(trust_env=False) as client:
            # The Portal API simulator is mounted beside the subscription API by the simulator
            # only: the dispatcher alone is what production forwards through.
            assert (await client.post(f"{second.url}/portal/api/autenticar")).status_code == 401
            assert (await client.post(f"{first.url}/portal/api/autenticar")).status_code == 404
    async with httpx.AsyncClient(trust_env=False) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(first.url + "/healthz")


async def test_answers_are_not_held_back_by_nagle() -> None:
    # A response written as headers then body stalls ~40 ms per request when TCP_NODELAY is off.
    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"hello": "world"})

    app = Starlette(routes=[Route("/", hello)])
    async with serve_app(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        await client.get("/")
        started = time.perf_counter()
        for _ in range(20):
            assert (await client.get("/")).status_code == 200
        elapsed = time.perf_counter() - started
    assert elapsed < 0.4, f"20 requests took {elapsed:.2f} s"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
