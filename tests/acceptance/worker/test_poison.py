"""A poison request in a burst, against a real `receiver serve`: it fails alone, everyone else 200."""

from __future__ import annotations

import asyncio
import os
import signal
from urllib.parse import quote

import httpx
import pytest

from receiver.store import Store
from tests.acceptance.conftest import TOKEN, Deployment, duimp_body, free_port
from tests.acceptance.store.test_writer_process import writer_of
from tests.integration.store.test_batch_isolation import POISON, refusing_poison

pytestmark = pytest.mark.acceptance

INNOCENT = 190


async def burst(
    port: int, writer: int, admin: str
) -> tuple[list[httpx.Response], httpx.Response, int]:
    """190 innocent requests and 2 poison ones, all waiting on a stopped writer, then let go."""
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=INNOCENT + 8)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as c:
        os.kill(writer, signal.SIGSTOP)
        try:
            innocent = [
                asyncio.ensure_future(c.post("/webhooks/pucomex", content=duimp_body(n)))
                for n in range(INNOCENT)
            ]
            refused = asyncio.ensure_future(
                c.post("/webhooks/pucomex", content=b'{"x":"%s"}' % POISON)
            )
            # The request: 121 characters of event once "$" let the newline through.
            newline = await c.post(f"/webhooks/pucomex/{quote('a' * 120 + chr(10))}", content=b"{}")
            await asyncio.sleep(0.7)  # all handed to the writer, within the 2 s ack deadline
        finally:
            os.kill(writer, signal.SIGCONT)
        answers = await asyncio.gather(*innocent)
        ready = await c.get(f"{admin}/readyz")
        assert newline.status_code == 404
        return answers, await refused, ready.status_code


def test_one_refused_request_in_a_burst_fails_alone(
    deployment: Deployment, deployment_url: str
) -> None:
    port = free_port()
    server = deployment.serve(port, "--no-worker")
    store = Store(deployment_url)
    try:
        with refusing_poison(store):
            answers, refused, ready = asyncio.run(
                burst(port, writer_of(server.pid), deployment.admin)
            )
        innocent_ok = sum(answer.status_code == 200 for answer in answers)
        print(f"innocent requests answered 200: {innocent_ok} of {INNOCENT}")
        assert innocent_ok == INNOCENT
        assert refused.status_code == 503 and "retry-after" in refused.headers
        assert ready == 200  # one refused row says nothing about the store
        assert store.count_notes() == INNOCENT
    finally:
        store.close()
    assert "the store refused notification" in deployment.output()
