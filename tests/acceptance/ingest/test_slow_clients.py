"""Slow and idle connections beside real traffic, against a real `receiver serve`.

A client that sends its headers a byte at a time, or connects and says nothing, must be dropped
after the header deadline, while real notifications keep being acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx
import pytest

from tests.acceptance.conftest import TOKEN, Deployment, free_port

pytestmark = pytest.mark.acceptance

HEADER_DEADLINE = 1.0
IDLE = 2500  # thousands of idle connections, under the default limit_concurrency (4,096)


async def slow_client(port: int, held: list[tuple[float, float]]) -> None:
    """Sends a request's headers one byte every 200 ms; records when the server hung up.

    Two spans are recorded: from before connecting, a moment that certainly precedes the server's
    clock for this connection (so the deadline bounds it from below exactly), and from when the
    client saw its connection, which with thousands opening at once can be well after the server
    accepted it (what a client experiences, so it bounds the wait from above).
    """
    began = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    connected = time.monotonic()
    request = (
        b"POST /webhooks/pucomex HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
    )
    try:
        for byte in request:
            writer.write(bytes([byte]))
            await writer.drain()
            # The server closing shows as EOF on read (or a reset on write).
            try:
                if await asyncio.wait_for(reader.read(1), timeout=0.2) == b"":
                    break
            except TimeoutError:
                continue
    except (ConnectionError, OSError):
        pass
    closed = time.monotonic()
    held.append((closed - began, closed - connected))
    writer.close()


async def idle_client(port: int, closed_after: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    with contextlib.suppress(TimeoutError, ConnectionError):
        await asyncio.wait_for(reader.read(1), timeout=10)
    closed_after.append(time.monotonic() - started)
    writer.close()


async def real_traffic(port: int, count: int) -> tuple[int, list[float]]:
    ok, latencies = 0, []
    async with httpx.AsyncClient(timeout=5) as client:
        for n in range(count):
            started = time.monotonic()
            answer = await client.post(
                f"http://127.0.0.1:{port}/webhooks/pucomex",
                content=f'{{"evento":"duimp.registro","dados":{{"numero":"{n}"}}}}'.encode(),
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            latencies.append(time.monotonic() - started)
            ok += answer.status_code == 200
            await asyncio.sleep(0.005)
    return ok, latencies


def test_slow_and_idle_clients_are_dropped_without_blocking_others(tmp_path: Path) -> None:
    deployment = Deployment(
        tmp_path,
        f"sqlite:///{tmp_path / 'r.db'}",
        server={"header_timeout_seconds": HEADER_DEADLINE},
    )
    port = free_port()
    try:
        deployment.serve(port, "--no-worker")

        async def scenario() -> tuple[list[tuple[float, float]], list[float], int, list[float]]:
            slow: list[tuple[float, float]] = []
            idle: list[float] = []
            tasks = [asyncio.create_task(slow_client(port, slow)) for _ in range(200)]
            tasks += [asyncio.create_task(idle_client(port, idle)) for _ in range(IDLE)]
            await asyncio.sleep(0.2)
            ok, latencies = await real_traffic(port, 200)
            await asyncio.gather(*tasks)
            return slow, idle, ok, latencies

        slow, idle, ok, latencies = asyncio.run(scenario())
    finally:
        deployment.stop_all()
    assert ok == 200, "real traffic must keep being acknowledged"
    latencies.sort()
    assert latencies[int(len(latencies) * 0.99) - 1] < 1.0
    assert len(slow) == 200 and len(idle) == IDLE
    since_connect = [span for _, span in slow]
    since_dial = [span for span, _ in slow]
    # Dropped at the deadline (plus scheduling slack), long before they could finish.
    assert max(since_connect) < HEADER_DEADLINE + 2.0, (
        f"slowest slow client held on for {max(since_connect):.1f} s"
    )
    # Not before it: the server's clock starts after the client dialled (uvloop reads its clock
    # afresh and its timers never fire early; the margin is its millisecond rounding).
    assert min(since_dial) >= HEADER_DEADLINE - 0.01, f"dropped after {min(since_dial):.3f} s"
    assert max(idle) < HEADER_DEADLINE + 2.0
