"""Signals to a real `receiver serve`, one process and `--workers 2`: SIGHUP reloads credentials
and the allowlist while traffic flows, every request answered; a broken file on SIGHUP changes
nothing and the receiver keeps serving; SIGTERM finishes the request in flight, then stops."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.acceptance.conftest import TOKEN, Deployment, duimp_body, free_port
from tests.acceptance.ingest.test_http_wire import Responses, request

pytestmark = pytest.mark.acceptance

NEW_TOKEN = "tok-after-sighup-7d1c2b3a"


class Traffic:
    """Deliveries to /webhooks/invoicy (admitted before and after every change below) on one
    keep-alive connection, as fast as they are answered, until stopped; keeps every outcome."""

    def __init__(self, port: int) -> None:
        self._url = f"http://127.0.0.1:{port}/webhooks/invoicy"
        self._stop = threading.Event()
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            n = 0
            while not self._stop.is_set():
                n += 1
                try:
                    answer = client.post(self._url, content=b'{"Modulo":1,"n":%d}' % n)
                    self.statuses.append(answer.status_code)
                except httpx.HTTPError as error:
                    self.errors.append(f"{type(error).__name__}: {error}")
                time.sleep(0.002)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def post(port: int, source: str, token: str | None = None, n: int = 0) -> int:
    """One delivery on a fresh connection (so with --workers 2 either process may answer)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers["Connection"] = "close"
    body = duimp_body(n) if source == "pucomex" else b'{"n":%d}' % n
    return httpx.post(
        f"http://127.0.0.1:{port}/webhooks/{source}", content=body, headers=headers, timeout=10
    ).status_code


def all_answer(port: int, source: str, token: str | None, status: int, times: int = 16) -> bool:
    return all(post(port, source, token, n) == status for n in range(times))


def wait_for(condition: Any, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not seen in {seconds} s: {what}"
        time.sleep(0.1)


@pytest.fixture(params=[1, 2], ids=["one-process", "two-workers"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Deployment, Any, int]]:
    deployment = Deployment(tmp_path, f"sqlite:///{tmp_path / 'r.db'}")
    port = free_port()
    workers = ("--workers", "2") if request.param == 2 else ()
    try:
        process = deployment.serve(port, "--no-worker", *workers)
        yield deployment, process, port
    finally:
        deployment.stop_all(graceful=True)  # a killed supervisor would leave its workers running


def rewrite(deployment: Deployment, **changes: Any) -> None:
    config = yaml.safe_load(deployment.config.read_text())
    config.update(changes)
    deployment.config.write_text(yaml.safe_dump(config))


def test_sighup_reloads_credentials_and_allowlist_without_dropping_a_request(
    served: tuple[Deployment, Any, int],
) -> None:
    deployment, process, port = served
    assert post(port, "pucomex", TOKEN) == 200 and post(port, "sintegre") == 200
    with Traffic(port) as traffic:
        time.sleep(0.3)
        (deployment.folder / "allowlist-2.yaml").write_text(
            yaml.safe_dump({"pucomex": ["127.0.0.1"], "invoicy": ["127.0.0.1"], "sintegre": []})
        )
        config = yaml.safe_load(deployment.config.read_text())
        config["sources"]["pucomex"]["credentials"] = [{"type": "bearer", "token": NEW_TOKEN}]
        rewrite(
            deployment,
            sources=config["sources"],
            allowlist="allowlist-2.yaml",
            max_body_bytes=2048,  # restart only: named in a warning, not applied
        )
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: all_answer(port, "pucomex", NEW_TOKEN, 200), "the new token admitted")
        assert all_answer(port, "pucomex", TOKEN, 401), "the old token still admitted"
        assert all_answer(port, "sintegre", None, 403), "the old allowlist still admits"
        time.sleep(0.3)
    assert process.poll() is None, "SIGHUP stopped the receiver"
    assert traffic.errors == [] and len(traffic.statuses) > 20
    assert set(traffic.statuses) == {200}, "a request during the reload was not answered 200"
    output = deployment.output()
    assert "SIGHUP: reloaded" in output
    assert "max_body_bytes changed too; it takes effect at the next restart" in output
    assert NEW_TOKEN not in output  # the new secret is redacted like the old one


def test_a_broken_file_on_sighup_changes_nothing(served: tuple[Deployment, Any, int]) -> None:
    deployment, process, port = served
    with Traffic(port) as traffic:
        time.sleep(0.3)
        deployment.config.write_text("sources: [this is not\n  valid: yaml")
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: "not reloaded" in deployment.output(), "the refusal logged")
        assert all_answer(port, "pucomex", TOKEN, 200)
        time.sleep(0.3)
    assert process.poll() is None
    assert traffic.errors == [] and set(traffic.statuses) == {200}
    assert "not valid YAML" in deployment.output()


def test_sigterm_answers_the_request_in_flight_then_stops(
    served: tuple[Deployment, Any, int],
) -> None:
    deployment, process, port = served
    body = duimp_body(777)
    whole = request(body)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(whole[: len(whole) - len(body) // 2])  # headers and half the body
        time.sleep(0.3)  # the request is in its handler, waiting for the rest
        process.send_signal(signal.SIGTERM)
        # Long enough for the supervisor of --workers 2 (it looks every 0.5 s) to pass it on.
        time.sleep(1.5)
        assert process.poll() is None, "stopped with a request in flight"
        sock.sendall(whole[len(whole) - len(body) // 2 :])
        status, headers, _ = Responses(sock).next()
    # Answered whole, and told that the connection ends with it: the server is stopping.
    assert status == 200 and headers.get("connection") == "close"
    assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert [row["body"] for row in deployment.inbox()] == [body.decode()]
