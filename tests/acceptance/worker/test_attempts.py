"""Every attempt recorded with its traceback, through a real `receiver serve` and its worker:
`receiver inbox show` names the file and line where the handler raised, for each attempt."""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import TOKEN, Deployment, duimp_body, free_port
from tests.fixtures import acceptance_handlers

pytestmark = pytest.mark.acceptance

HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def wait_for(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.1)


def raising_line() -> int:
    """The line of ``always_fails`` that raises."""
    lines, first = inspect.getsourcelines(acceptance_handlers.always_fails)
    (offset,) = [n for n, line in enumerate(lines) if "raise RuntimeError" in line]
    return first + offset


def test_inbox_show_gives_each_attempt_with_the_file_and_line_that_raised(
    deployment: Deployment,
) -> None:
    port = free_port()
    deployment.serve(port)
    answer = httpx.post(
        f"http://127.0.0.1:{port}/webhooks/pucomex",
        content=duimp_body(7, "duimp.cancelamento"),
        headers=HEADERS,
    )
    assert answer.status_code == 200
    note_id = answer.json()["id"]

    def shown() -> dict[str, Any]:
        result = deployment.cli("inbox", "show", note_id)
        assert result.returncode == 0, result.stderr
        value: dict[str, Any] = json.loads(result.stdout)
        return value

    wait_for(lambda: shown()["status"] == "dead")
    deployment.stop_all(graceful=True)
    [job] = shown()["jobs"]
    log = job["attempt_log"]
    assert [entry["attempt"] for entry in log] == [1, 2, 3]  # retry.max_attempts is 3
    assert [entry["outcome"] for entry in log] == ["failed", "failed", "dead"]
    where = f'acceptance_handlers.py", line {raising_line()}, in always_fails'
    for entry in log:
        assert entry["error_type"] == "RuntimeError"
        assert entry["message"] == "cancellation service is down"
        assert where in entry["traceback"]
        assert entry["traceback"].rstrip().endswith("RuntimeError: cancellation service is down")
        assert entry["started_at"] <= entry["finished_at"]
    # The log says it too: each failure with the job's fields and the same traceback.
    output = deployment.output()
    assert where in output
    assert f"notification_id={note_id}" in output or f'"notification_id": "{note_id}"' in output
