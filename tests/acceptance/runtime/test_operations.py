"""What an operator watches, from a real `receiver serve`: the metrics on its admin listener after
a small workload, each with the value the workload must give it, and its JSON log lines read
back with their fields."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.conftest import Deployment, free_port

pytestmark = pytest.mark.acceptance

ATTEMPTS = 3


class _Down(http.server.BaseHTTPRequestHandler):
    """A Portal whose every answer is 503."""

    def do_POST(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def portal_down() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Down)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: dict[Any, float], name: str, **labels: str) -> float | None:
    return scraped.get((name, tuple(sorted(labels.items()))))


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, portal_down: str
) -> Iterator[tuple[Deployment, dict[str, str]]]:
    folder: Path = tmp_path_factory.mktemp("operations")
    deployment = Deployment(
        folder,
        f"sqlite:///{folder / 'r.db'}",
        sources={"pucomex": {"credentials": []}, "sintegre": {"credentials": []}},
        handlers=["tests.fixtures.operations_handlers"],
        retry={"max_attempts": ATTEMPTS, "backoff_seconds": 0.05, "jitter": 0},
        portal={
            "base_url": portal_down,
            "client_id": "ops",
            "client_secret": "ops-secret-5d1c",
            "max_retries": 0,
            "watch_every_seconds": 0,
        },
        log_format="json",
    )
    port = free_port()
    ids: dict[str, str] = {}
    try:
        deployment.serve(port)
        for event in ("ops.ok", "ops.fail", "ops.later", "ops.portal", "ops.nobody"):
            answer = httpx.post(
                f"http://127.0.0.1:{port}/webhooks/pucomex",
                content=b'{"n": "%s"}' % event.encode(),
                headers={"event-type": event},
            )
            assert answer.status_code == 200, answer.text
            ids[event] = answer.json()["id"]
        repeat = httpx.post(
            f"http://127.0.0.1:{port}/webhooks/pucomex",
            content=b'{"n": "ops.ok"}',
            headers={"event-type": "ops.ok"},
        )
        assert repeat.json()["duplicate"] is True
        deadline = time.monotonic() + 60
        while True:
            scraped = samples(deployment.metrics())
            dead = sum(
                v for (name, _), v in scraped.items() if name == "receiver_dead_letters_total"
            )
            if dead >= 2 and value(scraped, "receiver_oldest_pending_job_age_seconds"):
                break
            assert time.monotonic() < deadline, "the workload did not settle"
            time.sleep(0.2)
        yield deployment, ids
    finally:
        deployment.stop_all(graceful=True)


HANDLERS = "tests.fixtures.operations_handlers"


def test_the_admin_listener_shows_each_metric_an_operator_needs_with_its_value(
    served: tuple[Deployment, dict[str, str]],
) -> None:
    deployment, _ = served
    scraped = samples(deployment.metrics())
    # Ingest latency, per request, in buckets that show the Portal's 3.5 s budget.
    assert value(scraped, "receiver_ingest_seconds_count", source="pucomex") == 6
    assert value(scraped, "receiver_ingest_seconds_bucket", source="pucomex", le="3.5") == 6
    assert value(scraped, "receiver_ingest_seconds_count", source="sintegre") == 0
    # The writer process's commits: 6 notifications (5 originals and a receipt) in them.
    commits = value(scraped, "receiver_store_commit_seconds_count")
    assert commits is not None and 1 <= commits <= 6
    assert value(scraped, "receiver_store_batch_size_sum") == 6
    assert value(scraped, "receiver_store_batch_size_count") == commits
    # The planner's quarantine (no handler for ops.nobody), counted.
    assert value(scraped, "receiver_quarantined_total", source="pucomex") == 1
    # Dead letters: the failing handler and the Portal one, once each.
    assert value(scraped, "receiver_dead_letters_total", handler=f"{HANDLERS}.always_fails") == 1
    assert value(scraped, "receiver_dead_letters_total", handler=f"{HANDLERS}.asks_the_portal") == 1
    # The job that waits 10 minutes for its retry is the oldest pending one.
    age = value(scraped, "receiver_oldest_pending_job_age_seconds")
    assert age is not None and 0 < age < 120
    # Handler latency per handler: one attempt of the one that succeeded.
    assert value(scraped, "receiver_handler_seconds_count", handler=f"{HANDLERS}.succeeds") == 1
    attempts = value(scraped, "receiver_handler_seconds_count", handler=f"{HANDLERS}.always_fails")
    assert attempts == ATTEMPTS
    # Portal API errors by endpoint and status: one authentication per attempt, each a 503.
    endpoint = "/portal/api/autenticar/chave-acesso"
    assert value(scraped, "receiver_portal_errors_total", endpoint=endpoint, status="503") == (
        ATTEMPTS
    )


def test_json_log_lines_carry_the_job_fields_and_the_traceback(
    served: tuple[Deployment, dict[str, str]],
) -> None:
    deployment, ids = served
    lines = [json.loads(line) for line in deployment.output().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    handled = [line for line in lines if line["message"] == f"handled {ids['ops.ok']}"]
    assert len(handled) == 1
    assert handled[0]["logger"] == f"receiver.handler.{HANDLERS}.succeeds"
    assert {key: handled[0][key] for key in ("notification_id", "source", "event", "attempt")} == {
        "notification_id": ids["ops.ok"],
        "source": "pucomex",
        "event": "ops.ok",
        "attempt": 1,
    }
    assert handled[0]["handler"] == f"{HANDLERS}.succeeds"
    failures = [
        line
        for line in lines
        if line.get("notification_id") == ids["ops.fail"] and line["logger"] == "receiver.worker"
    ]
    assert [line["attempt"] for line in failures] == list(range(1, ATTEMPTS + 1))
    assert all("RuntimeError: the backend is down (planted)" in f["exc_info"] for f in failures)
    assert "Traceback (most recent call last)" in failures[0]["exc_info"]
    assert failures[-1]["level"] == "ERROR" and "dead letter" in failures[-1]["message"]
    # A Retry is asked for: no traceback.
    later = [line for line in lines if line.get("notification_id") == ids["ops.later"]]
    assert later and all("exc_info" not in line for line in later)
    # The start-up line says what is in effect.
    (started,) = [line for line in lines if line["message"].startswith("receiver serve: ")]
    assert "admin on http://127.0.0.1:" in started["message"]
    assert "allowlist " in started["message"] and "pucomex 2" in started["message"]
    # The configured secret never reaches a line.
    assert "ops-secret-5d1c" not in deployment.output()
