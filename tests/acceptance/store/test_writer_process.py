"""`receiver serve` and its writer process, killed one way and the other, over real sockets."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.acceptance.conftest import Deployment, duimp_body, free_port
from tests.acceptance.runtime.test_processes import send_all

pytestmark = pytest.mark.acceptance


def writer_of(serve_pid: int) -> int:
    """The `receiver.store.process.client` child of a serving process."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        children = Path(f"/proc/{serve_pid}/task/{serve_pid}/children").read_text().split()
        for child in children:
            command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if b"receiver.store.process" in command:
                return int(child)
        time.sleep(0.05)
    raise AssertionError("no writer process found")


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def ready(deployment: Deployment) -> bool:
    try:
        return httpx.get(f"{deployment.admin}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_the_writer_stops_when_its_serving_process_is_killed(deployment: Deployment) -> None:
    port = free_port()
    server = deployment.serve(port, "--no-worker")
    writer = writer_of(server.pid)
    assert running(writer)
    server.send_signal(signal.SIGKILL)
    server.wait(timeout=10)
    deadline = time.monotonic() + 10
    while running(writer) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(writer), "an orphaned writer would hold the database for nobody"


def test_serve_survives_its_writer_being_killed_mid_burst(deployment: Deployment) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/pucomex"
    server = deployment.serve(port, "--no-worker")
    first_writer = writer_of(server.pid)
    bodies = [duimp_body(n) for n in range(2000)]
    acked: dict[str, bytes] = {}

    def kill_writer() -> None:
        if len(acked) == 500:
            os.kill(first_writer, signal.SIGKILL)

    asyncio.run(send_all(url, bodies, acked, kill_writer))
    assert server.poll() is None, "the serving process must outlive its writer"
    assert 500 <= len(acked) <= len(bodies)
    # A new writer takes over; until it is up the answers are 503 (with Retry-After) and
    # /readyz says not ready. The sender retries what was not acknowledged, as the Portal would.
    deadline = time.monotonic() + 20
    while not ready(deployment) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready(deployment)
    second_writer = writer_of(server.pid)
    assert second_writer != first_writer
    for _ in range(3):
        done = set(acked.values())
        missing = [body for body in bodies if body not in done]
        if not missing:
            break
        asyncio.run(send_all(url, missing, acked))
    assert set(acked.values()) == set(bodies), "every notification is acknowledged in the end"

    rows = {row["id"]: row for row in deployment.inbox()}
    assert [note_id for note_id in acked if note_id not in rows] == []  # every 200 is stored
    originals = Counter(row["body"] for row in rows.values() if row["duplicate_of"] is None)
    assert set(originals) == {body.decode() for body in bodies}
    assert max(originals.values()) == 1
