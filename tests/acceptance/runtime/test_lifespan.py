"""Handler resources in real processes: a `receiver worker` opens its handler modules' lifespan
once, every handler gets it through ctx.resources, and SIGTERM closes it (shutdown hooks, then
the lifespan); a lifespan that fails at start-up stops the worker with one line and exit 1.
`receiver serve`'s in-process worker does the same."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from receiver.sources import dedup_key
from receiver.store import Incoming, Store
from tests.acceptance.conftest import Deployment, duimp_body, free_port

pytestmark = pytest.mark.acceptance

HANDLERS = ["tests.fixtures.lifespan_handlers"]


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def wait_for_lines(log: Path, count: int, process: subprocess.Popen[bytes]) -> list[str]:
    deadline = time.monotonic() + 30
    while len(lines(log)) < count:
        assert process.poll() is None, f"exited with {process.returncode}"
        assert time.monotonic() < deadline, lines(log)
        time.sleep(0.05)
    return lines(log)


def store_notes(database_url: str, count: int) -> None:
    store = Store(database_url)
    try:
        store.upgrade_schema()
        bodies = [duimp_body(n) for n in range(count)]
        store.append_now(
            [Incoming("pucomex", None, "127.0.0.1", {}, b, dedup_key("pucomex", b)) for b in bodies]
        )
    finally:
        store.close()


def test_a_worker_opens_the_lifespan_once_and_closes_it_on_sigterm(
    tmp_path: Path, deployment_url: str
) -> None:
    deployment = Deployment(tmp_path, deployment_url, handlers=HANDLERS)
    log = tmp_path / "lifespan.log"
    try:
        store_notes(deployment_url, 3)
        worker = deployment.start("worker", LIFESPAN_LOG=str(log))
        seen = wait_for_lines(log, 5, worker)  # opened, startup, three handled
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, deployment.output()
    finally:
        deployment.stop_all()
    seen = lines(log)
    pid = str(worker.pid)
    assert seen[:2] == [f"opened {pid}", f"startup {pid}"]
    handled = [line for line in seen if line.startswith("handled")]
    assert sorted(line.split(" with ")[1] for line in handled) == [
        f"{n} rows {pid}" for n in (1, 2, 3)
    ]  # one shared resource, three handlers
    assert seen[-2:] == [f"shutdown after 3 notifications {pid}", f"closed {pid}"]
    assert sum(line.startswith("opened") for line in seen) == 1


def test_a_lifespan_that_fails_stops_the_worker_with_one_line(
    tmp_path: Path, deployment_url: str
) -> None:
    deployment = Deployment(tmp_path, deployment_url, handlers=HANDLERS)
    result = deployment.cli("worker", LIFESPAN_LOG=str(tmp_path / "x.log"), LIFESPAN_FAIL="1")
    assert result.returncode == 1
    # The start-up line (log_level INFO), then the reason in one line, without a traceback.
    assert result.stderr.strip().splitlines()[-1] == (
        "receiver: handler lifespan tests.fixtures.lifespan_handlers.lifespan failed at start-up: "
        "ConnectionRefusedError: the team database refused the connection (planted)"
    )
    assert "Traceback" not in result.stderr


def test_serve_opens_the_lifespan_in_its_worker_and_closes_it_on_sigterm(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", handlers=HANDLERS)
    log = tmp_path / "lifespan.log"
    try:
        store_notes(f"sqlite:///{tmp_path / 'r.db'}", 2)
        serve = deployment.serve(free_port(), LIFESPAN_LOG=str(log))
        wait_for_lines(log, 4, serve)
        serve.send_signal(signal.SIGTERM)
        # uvicorn stops cleanly, then raises the signal again, as it does for every serve.
        assert serve.wait(timeout=30) in (0, -signal.SIGTERM), deployment.output()
    finally:
        deployment.stop_all()
    seen = lines(log)
    assert seen[0].startswith("opened") and seen[-1].startswith("closed")
    assert seen[-2].startswith("shutdown after 2 notifications")


def test_serve_with_a_failing_lifespan_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", handlers=HANDLERS)
    process = deployment.start(
        "serve", "--port", str(free_port()), LIFESPAN_LOG=str(tmp_path / "x.log"), LIFESPAN_FAIL="1"
    )
    try:
        assert process.wait(timeout=60) != 0
    finally:
        deployment.stop_all()
    assert "handler lifespan tests.fixtures.lifespan_handlers.lifespan failed at start-up" in (
        deployment.output()
    )
