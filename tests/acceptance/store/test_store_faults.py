"""Store faults under a steady stream: PostgreSQL stopped, SQLite locked, disk full.

Whatever happens to the store, the receiver answers 503 with Retry-After (never a 200 for a
notification it did not keep), stays up, and recovers by itself when the store comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.acceptance.conftest import TOKEN, Deployment, free_port

pytestmark = pytest.mark.acceptance

HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Stream:
    """Answers to a steady stream of unique notifications, with when each came back."""

    answers: list[tuple[float, int, str | None, str | None]] = field(default_factory=list)
    acked: dict[str, bytes] = field(default_factory=dict)
    errors: int = 0

    def statuses_between(self, start: float, end: float) -> set[int]:
        return {status for at, status, _, _ in self.answers if start <= at <= end}

    def first_200_after(self, moment: float) -> float | None:
        times = [at for at, status, _, _ in self.answers if status == 200 and at > moment]
        return min(times) - moment if times else None


async def stream(url: str, seconds: float, events: dict[float, Callable[[], None]]) -> Stream:
    """Post for ``seconds`` at 10 concurrent; run each event callback at its offset (in a thread)."""
    result = Stream()
    start = time.monotonic()
    counter = iter(range(10**9))

    async def sender() -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            while time.monotonic() - start < seconds:
                n = next(counter)
                body = f'{{"evento":"duimp.registro","dados":{{"numero":"{n}","pad":"{"x" * 900}"}}}}'.encode()
                try:
                    answer = await client.post(url, content=body, headers=HEADERS)
                except httpx.TransportError:
                    result.errors += 1
                    continue
                now = time.monotonic() - start
                note_id = answer.json().get("id") if answer.status_code == 200 else None
                result.answers.append(
                    (now, answer.status_code, answer.headers.get("retry-after"), note_id)
                )
                if note_id:
                    result.acked[note_id] = body

    async def scheduler() -> None:
        for offset, action in sorted(events.items()):
            await asyncio.sleep(max(0.0, offset - (time.monotonic() - start)))
            await asyncio.to_thread(action)

    await asyncio.gather(scheduler(), *(sender() for _ in range(10)))
    return result


def check_nothing_lost(deployment: Deployment, result: Stream) -> None:
    rows = {row["id"]: row for row in deployment.inbox()}
    assert [note_id for note_id in result.acked if note_id not in rows] == []
    for note_id, body in result.acked.items():
        assert rows[note_id]["body"].encode() == body
    for _, status, retry_after, _ in result.answers:
        assert status in (200, 503), f"unexpected status {status}"
        if status == 503:
            assert retry_after is not None


# --- PostgreSQL stopped mid-burst ----------------------------------------------------------------


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


class PrivatePostgres:
    """A throwaway PostgreSQL cluster of our own, so stopping it disturbs nobody else."""

    def __init__(self, folder: Path, bin_dir: Path) -> None:
        self.folder = folder
        self.bin = bin_dir
        self.port = free_port()
        self.data = folder / "pgdata"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=120
        )

    def init(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.folder, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        )

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder}"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.folder / "pg.log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        # immediate: like a crash of the server, with connections cut mid-transaction
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")


@pytest.fixture
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    bin_dir = _pg_bin()
    if bin_dir is None or os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip(
            "needs PostgreSQL server binaries and root (to run a private cluster as postgres)"
        )
    folder = Path("/tmp") / f"receiver-pg-{os.getpid()}-{free_port()}"
    cluster = PrivatePostgres(folder, bin_dir)
    cluster.init()
    cluster.start()
    yield cluster
    with contextlib.suppress(subprocess.CalledProcessError):
        cluster.stop()
    shutil.rmtree(folder, ignore_errors=True)


def test_postgres_down_mid_burst(tmp_path: Path, private_postgres: PrivatePostgres) -> None:
    deployment = Deployment(tmp_path, private_postgres.url, ack_timeout_seconds=1.0)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        deployment.serve(port, "--no-worker")
        moments: dict[str, float] = {}
        readiness: dict[str, int] = {}

        def stop() -> None:
            private_postgres.stop()
            moments["stopped"] = time.monotonic()
            readiness["down"] = httpx.get(f"{deployment.admin}/readyz", timeout=5).status_code

        def start() -> None:
            moments["starting"] = time.monotonic()
            private_postgres.start()

        began = time.monotonic()
        result = asyncio.run(stream(f"{base}/webhooks/pucomex", 7.0, {1.5: stop, 3.5: start}))
        readiness["up"] = httpx.get(f"{deployment.admin}/readyz", timeout=5).status_code
    finally:
        deployment.stop_all()
    stopped, starting = moments["stopped"] - began, moments["starting"] - began
    assert result.errors == 0, "the receiver must stay up and answer"
    assert 200 not in result.statuses_between(stopped + 0.05, starting - 0.05)
    assert 503 in result.statuses_between(stopped, starting)
    recovery = result.first_200_after(starting)
    assert recovery is not None and recovery < 3.0, f"time to first 200 after restart: {recovery}"
    assert readiness == {"down": 503, "up": 200}
    deployment.stop_all()
    check_nothing_lost(deployment, result)


# --- SQLite locked by another process ------------------------------------------------------------


def test_sqlite_locked_by_another_process(tmp_path: Path) -> None:
    database = tmp_path / "receiver.db"
    deployment = Deployment(tmp_path, f"sqlite:///{database}", ack_timeout_seconds=0.5)
    port = free_port()
    holder: dict[str, sqlite3.Connection] = {}
    moments: dict[str, float] = {}
    readiness: dict[str, int] = {}
    try:
        deployment.serve(port, "--no-worker")

        def lock() -> None:
            connection = sqlite3.connect(database, isolation_level=None, timeout=10)
            connection.execute("BEGIN EXCLUSIVE")
            holder["connection"] = connection
            moments["locked"] = time.monotonic()

        def unlock() -> None:
            readiness["locked"] = httpx.get(f"{deployment.admin}/readyz", timeout=5).status_code
            moments["unlocked"] = time.monotonic()
            holder["connection"].execute("ROLLBACK")
            holder["connection"].close()

        began = time.monotonic()
        result = asyncio.run(
            stream(f"http://127.0.0.1:{port}/webhooks/pucomex", 5.0, {1.0: lock, 3.0: unlock})
        )
        readiness["after"] = httpx.get(f"{deployment.admin}/readyz", timeout=5).status_code
    finally:
        deployment.stop_all()
    locked, unlocked = moments["locked"] - began, moments["unlocked"] - began
    assert result.errors == 0
    assert 200 not in result.statuses_between(locked + 0.1, unlocked - 0.05)
    assert 503 in result.statuses_between(locked, unlocked + 0.6)
    recovery = result.first_200_after(unlocked)
    assert recovery is not None and recovery < 2.0
    assert readiness == {"locked": 503, "after": 200}
    check_nothing_lost(deployment, result)


# --- disk full -------------------------------------------------------------------------------


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full(tmp_path: Path, small_filesystem: Path) -> None:
    database = small_filesystem / "receiver.db"
    filler = small_filesystem / "filler"
    filler.write_bytes(b"\0" * 600_000)  # freed later, to show recovery without a restart
    deployment = Deployment(tmp_path, f"sqlite:///{database}", ack_timeout_seconds=1.0)
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/pucomex"
    moments: dict[str, float] = {}
    readiness: dict[str, int] = {}
    try:
        deployment.serve(port, "--no-worker")

        def free_space() -> None:
            readiness["full"] = httpx.get(f"{deployment.admin}/readyz", timeout=5).status_code
            moments["freed"] = time.monotonic()
            filler.unlink()

        began = time.monotonic()
        result = asyncio.run(stream(url, 8.0, {5.0: free_space}))
    finally:
        deployment.stop_all()
    freed = moments["freed"] - began
    statuses = [status for _, status, _, _ in result.answers]
    assert result.errors == 0
    assert 503 in result.statuses_between(0, freed), (
        "the disk should have filled before the filler was freed"
    )
    assert result.first_200_after(freed) is not None, "no recovery after space was freed"
    assert statuses.count(200) == len(result.acked)
    # (Readiness after recovery is shown by the lock test: here the stream soon fills the freed
    # space again.)
    assert readiness == {"full": 503}
    check_nothing_lost(deployment, result)
