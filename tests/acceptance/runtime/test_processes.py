"""The real `receiver` command over real sockets: crash safety, worker crashes, dead letters."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from receiver.sources import dedup_key
from receiver.store import Incoming, NoteFilter, Store
from tests.acceptance.conftest import TOKEN, Deployment, duimp_body, free_port
from tests.conftest import PG_SKIP_REASON, migrated, postgres_url, reset_postgres

pytestmark = pytest.mark.acceptance

HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


async def send_all(
    url: str,
    bodies: list[bytes],
    acked: dict[str, bytes],
    on_ack: Callable[[], None] = lambda: None,
) -> None:
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        gate = asyncio.Semaphore(50)

        async def one(body: bytes) -> None:
            async with gate:
                try:
                    answer = await client.post(url, content=body, headers=HEADERS)
                except httpx.TransportError:
                    return  # the server died under us: not acknowledged, the sender would retry
                if answer.status_code == 200:
                    acked[answer.json()["id"]] = body
                    on_ack()

        await asyncio.gather(*(one(body) for body in bodies))


def test_every_acknowledged_notification_survives_sigkill(deployment: Deployment) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/pucomex"
    server = deployment.serve(port, "--no-worker")
    bodies = [duimp_body(n) for n in range(3000)]
    acked: dict[str, bytes] = {}

    def kill_midway() -> None:
        if len(acked) == 1000:
            server.send_signal(signal.SIGKILL)

    asyncio.run(send_all(url, bodies, acked, kill_midway))
    server.wait(timeout=10)
    first_run = dict(acked)
    assert 1000 <= len(first_run) < len(bodies), "the kill must land in the middle of the burst"

    # The sender retries what was not acknowledged, as the Portal would (a 503 under a busy
    # machine's load is a refusal to retry, like a connection the kill cut).
    deployment.serve(port, "--no-worker")
    for _ in range(5):
        acked_bodies = set(acked.values())
        waiting = [b for b in bodies if b not in acked_bodies]
        if not waiting:
            break
        asyncio.run(send_all(url, waiting, acked))

    rows = {row["id"]: row for row in deployment.inbox()}
    lost = [note_id for note_id in acked if note_id not in rows]
    assert lost == []
    for note_id, body in acked.items():
        assert rows[note_id]["body"].encode() == body, "stored bytes differ from what was sent"
    originals = Counter(row["body"] for row in rows.values() if row["duplicate_of"] is None)
    assert set(originals) == {body.decode() for body in bodies}  # total queue: everything is in
    assert max(originals.values()) == 1  # one original per body; repeats are receipts


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", max_body_bytes="big")
    result = deployment.cli("inbox", "list")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"receiver: configuration error: {deployment.config}: max_body_bytes: "
        "Input should be a valid integer, unable to parse string as an integer"
    ]
    assert "Traceback" not in result.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "receiver", "serve", "--config", str(tmp_path / "absent.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        env=deployment.env(),
    )
    assert missing.returncode == 2
    assert "absent.yaml: file not found" in missing.stderr


def test_handler_import_error_is_a_clear_startup_error(tmp_path: Path) -> None:
    deployment = Deployment(
        tmp_path, f"sqlite:///{tmp_path / 'r.db'}", handlers=["tests.no_such_handlers"]
    )
    result = deployment.cli("worker")
    assert result.returncode == 2  # a configuration error: the units do not restart on it
    assert "receiver.yaml: handlers: 'tests.no_such_handlers': cannot import" in result.stderr
    assert "Traceback" not in result.stderr


def wait_for(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


def status_of(url: str, note_id: str) -> str | None:
    store = Store(url)
    try:
        row = store.note(note_id)
        return row["status"] if row else None
    finally:
        store.engine.dispose()


def test_worker_killed_mid_handler_completes_after_restart(
    deployment: Deployment, deployment_url: str
) -> None:
    port = free_port()
    deployment.serve(port, "--no-worker")
    answer = httpx.post(
        f"http://127.0.0.1:{port}/webhooks/pucomex", content=duimp_body(1), headers=HEADERS
    )
    note_id = answer.json()["id"]

    doomed = deployment.start("worker", ACCEPT_HANDLER_SECONDS="60")
    wait_for(lambda: deployment.log.exists() and f"start {note_id} 1" in deployment.log.read_text())
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)

    deployment.start("worker", ACCEPT_HANDLER_SECONDS="0")
    wait_for(lambda: status_of(deployment_url, note_id) == "done")
    lines = deployment.log.read_text().splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["start", note_id, "1"],
        ["start", note_id, "2"],
        ["done", note_id, "2"],
    ]
    store = Store(deployment_url)
    try:
        from receiver.worker.results import load_result

        effect = load_result(store, "effect", dedup_key("pucomex", duimp_body(1)))
        assert effect is not None and effect["note"] == note_id
    finally:
        store.engine.dispose()


def test_dead_letters_are_replayed_from_the_command_line(
    deployment: Deployment, deployment_url: str
) -> None:
    port = free_port()
    server = deployment.serve(port)
    answer = httpx.post(
        f"http://127.0.0.1:{port}/webhooks/pucomex",
        content=duimp_body(5, "duimp.cancelamento"),
        headers=HEADERS,
    )
    note_id = answer.json()["id"]
    wait_for(lambda: status_of(deployment_url, note_id) == "dead")
    server.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert server.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in deployment.output()

    shown = json.loads(deployment.cli("inbox", "show", note_id).stdout)
    assert shown["jobs"][0]["attempts"] == 3
    assert "cancellation service is down" in shown["jobs"][0]["last_error"]
    assert [row["id"] for row in deployment.inbox("--status", "dead")] == [note_id]

    replayed = deployment.cli("replay", "--dead")
    assert replayed.returncode == 0, replayed.stderr
    deployment.serve(port, ACCEPT_FIXED="1")
    wait_for(lambda: status_of(deployment_url, note_id) == "done")
    assert f"fixed {note_id}" in deployment.log.read_text()


@pytest.mark.postgres
def test_two_workers_share_thousands_of_jobs_exactly_once(tmp_path: Path) -> None:
    url = postgres_url()
    if url is None:
        pytest.skip(PG_SKIP_REASON)
    reset_postgres(url)
    deployment = Deployment(
        tmp_path, url, worker={"poll_interval_seconds": 0.05, "concurrency": 16}
    )
    store = Store(url)
    migrated(store)
    total = 3000
    try:
        bodies = [duimp_body(n) for n in range(total)]
        store.append_now(
            [
                Incoming("pucomex", None, "127.0.0.1", {}, body, dedup_key("pucomex", body))
                for body in bodies
            ]
        )
        workers = [deployment.start("worker"), deployment.start("worker")]

        def all_done() -> bool:
            return sum(1 for _ in store.notes(NoteFilter(status="done"))) == total

        wait_for(all_done, seconds=240)
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            assert worker.wait(timeout=30) == 0
    finally:
        deployment.stop_all()
        store.engine.dispose()
    starts = [
        line.split() for line in deployment.log.read_text().splitlines() if line.startswith("start")
    ]
    per_note = Counter(parts[1] for parts in starts)
    assert len(per_note) == total
    assert set(per_note.values()) == {1}, "a job ran twice"
    assert len({parts[3] for parts in starts}) == 2, "both workers took a share"
