"""A real `receiver serve` whose writer is stopped keeps its memory bounded and recovers.

Not a timing test: the stall lasts as long as the requests take to be answered, and the figures
checked are memory (the serving process's peak and resident set, from /proc) and answers.
``loadtests/memory.py`` prints the same figures for the issue's cases (700 x 1 MB, locked table).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.acceptance.conftest import TOKEN, Deployment, free_port
from tests.acceptance.store.test_writer_process import ready, writer_of

pytestmark = pytest.mark.acceptance

MIB = 1024 * 1024
REQUESTS = 150
BODY = 512 * 1024  # 75 MiB in all, against a bound of 4 MiB in flight


def memory_of(pid: int) -> dict[str, int]:
    """VmHWM (peak) and VmRSS of ``pid``, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(value.split()[0]) * 1024
    return found


async def stalled_burst(port: int) -> Counter[str]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=REQUESTS)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:

        async def one(n: int) -> str:
            body = b"%08d" % n + bytes(BODY - 8)
            try:
                answer = await client.post(
                    f"http://127.0.0.1:{port}/webhooks/pucomex", content=body
                )
            except httpx.TransportError:  # answered (and closed) before the body was sent whole
                return "closed"
            retry = "+retry-after" if "retry-after" in answer.headers else ""
            return f"{answer.status_code}{retry}"

        return Counter(await asyncio.gather(*(one(n) for n in range(REQUESTS))))


def test_a_stopped_writer_gets_503s_bounded_memory_and_recovers(tmp_path: Path) -> None:
    from tests.conftest import fresh_database

    deployment = Deployment(
        tmp_path, fresh_database("sqlite", tmp_path), max_inflight_bytes=4 * MIB
    )
    try:
        port = free_port()
        server = deployment.serve(port, "--no-worker")
        writer = writer_of(server.pid)
        idle = memory_of(server.pid)["VmRSS"]
        os.kill(writer, signal.SIGSTOP)
        try:
            answers = asyncio.run(stalled_burst(port))
            during = memory_of(server.pid)
        finally:
            os.kill(writer, signal.SIGCONT)
        deadline = time.monotonic() + 30
        while not ready(deployment) and time.monotonic() < deadline:
            time.sleep(0.05)
        after = [
            httpx.post(
                f"http://127.0.0.1:{port}/webhooks/pucomex",
                content=b'{"n":%d}' % n,
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=10,
            ).status_code
            for n in range(5)
        ]
        settled = memory_of(server.pid)
    finally:
        deployment.stop_all()
    print(
        f"answers while stopped: {dict(answers)}; serving process: idle {idle / MIB:.0f} MiB, "
        f"peak {during['VmHWM'] / MIB:.0f} MiB, after {settled['VmRSS'] / MIB:.0f} MiB"
    )
    assert set(answers) <= {"503+retry-after", "closed"} and answers["503+retry-after"] > 0
    assert after == [200] * 5
    # 75 MiB of bodies came in; at most 4 MiB of them are held for the store at once, and
    # uvloop reads up to 256 KB of each new connection before the app can answer it.
    assert during["VmHWM"] - idle < 48 * MIB
    assert settled["VmRSS"] - idle < 24 * MIB  # given back, not kept for a writer stopped
